//! Log fields carry text from requests and from the API (event types, ids, error details). In
//! the terminal format a newline or an escape code in such text would forge log lines or rewrite
//! the screen, so every control character of a field is written escaped (`\n`, `\u{1b}`). The
//! JSON format needs nothing more: JSON escapes control characters itself.

use std::fmt::{self, Write};

use tracing_subscriber::{
    field::RecordFields,
    fmt::{format::Writer, FormatFields},
};

/// tracing-subscriber's default field formatting, with control characters escaped.
#[derive(Debug, Default)]
pub struct EscapedFields {
    inner: tracing_subscriber::fmt::format::DefaultFields,
}

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut escaping = Escaping { inner: &mut writer };
        // Without ANSI styling: the escaper would otherwise escape the formatter's own codes.
        self.inner.format_fields(Writer::new(&mut escaping), fields)
    }
}

/// Passes text through, escaping control characters (C0, DEL, C1) and the Unicode line and
/// paragraph separators some viewers break lines at.
struct Escaping<'a, W: Write> {
    inner: &'a mut W,
}

impl<W: Write> Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for part in text.split_inclusive(needs_escape) {
            let mut chars = part.chars();
            match chars.next_back() {
                Some(last) if needs_escape(last) => {
                    self.inner.write_str(chars.as_str())?;
                    write!(self.inner, "{}", last.escape_default())?;
                }
                _ => self.inner.write_str(part)?,
            }
        }
        Ok(())
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        Escaping { inner: &mut out }.write_str(text).unwrap();
        out
    }

    #[test]
    fn control_characters_are_written_escaped_and_the_rest_untouched() {
        assert_eq!(escaped("conversation.completed"), "conversation.completed");
        assert_eq!(escaped("a\nb\r\x1b[31mc\u{85}\u{2028}é"), "a\\nb\\r\\u{1b}[31mc\\u{85}\\u{2028}é");
        assert_eq!(escaped("\n"), "\\n");
        assert!(!escaped("x\ny").contains('\n'));
    }
}
