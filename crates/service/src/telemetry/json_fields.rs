//! Span fields for the JSON log format, cheap to write and to add to.
//!
//! tracing-subscriber's `JsonFields` collects a span's fields into a map of JSON values before
//! writing them, and on every `Span::record` parses the span's JSON string and serialises it
//! again. The receiver creates a span for each webhook and records three fields on it once it
//! knows them (event id, type, outcome): that cost about a tenth of its instructions per webhook
//! (BENCHMARKS.md). Here each field is written straight into the object, and recorded fields are
//! spliced into it. The log lines are the same: the event formatter parses the span's object
//! for each line, which orders the fields and keeps the last value of a field recorded twice.

use std::fmt;

use serde::Serialize;
use tracing::{
    field::{Field, Visit},
    span::Record,
};
use tracing_subscriber::{
    field::RecordFields,
    fmt::{format::Writer, FormatFields, FormattedFields},
};

/// The span-field formatter of the JSON log format (see the module's documentation).
#[derive(Debug, Default)]
pub struct SplicedJsonFields;

impl<'writer> FormatFields<'writer> for SplicedJsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut object = b"{".to_vec();
        fields.record(&mut Entries { out: &mut object, empty: true });
        object.push(b'}');
        writer.write_str(std::str::from_utf8(&object).map_err(|_| fmt::Error)?)
    }

    fn add_fields(&self, current: &'writer mut FormattedFields<Self>, fields: &Record<'_>) -> fmt::Result {
        if current.fields.is_empty() {
            return self.format_fields(current.as_writer(), fields);
        }
        let mut added = Vec::new();
        fields.record(&mut Entries { out: &mut added, empty: true });
        if added.is_empty() {
            return Ok(());
        }
        // `{"a":1}` and `"b":2` make `{"a":1,"b":2}`.
        let object = &mut current.fields;
        if object.pop() != Some('}') {
            return Err(fmt::Error);
        }
        if object.len() > 1 {
            object.push(',');
        }
        object.push_str(std::str::from_utf8(&added).map_err(|_| fmt::Error)?);
        object.push('}');
        Ok(())
    }
}

/// Writes each field it visits as `"name":value`, comma-separated, with the values `JsonFields`
/// gives them: numbers, booleans and strings as such, bytes as an array of numbers, anything else
/// as its `Debug` text.
struct Entries<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl Entries<'_> {
    fn entry<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) {
        if !std::mem::take(&mut self.empty) {
            self.out.push(b',');
        }
        // Writing into a `Vec` cannot fail, and a `str` or a number always serialises.
        let _ = serde_json::to_writer(&mut *self.out, name);
        self.out.push(b':');
        let _ = serde_json::to_writer(&mut *self.out, value);
    }
}

impl Visit for Entries<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field.name(), &value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field.name(), &value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field.name(), &value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field.name(), &value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field.name(), value);
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.entry(field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        // As `JsonFields`: `log.` fields are the log crate's metadata, shown elsewhere.
        if name.starts_with("log.") {
            return;
        }
        self.entry(name.strip_prefix("r#").unwrap_or(name), &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tracing::field::Empty;
    use tracing_subscriber::fmt::MakeWriter;

    use tracing_subscriber::fmt::format::JsonFields;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// The span objects of the lines logged by `log`, with the relay's JSON format and `fields`.
    fn spans_logged<N>(fields: N, log: impl FnOnce()) -> Vec<Value>
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(lines.clone())
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(fields)
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|line| serde_json::from_str::<Value>(line).unwrap()["span"].clone()).collect()
    }

    fn webhook_lines() {
        let error = std::io::Error::other("no \"route\"");
        let span = tracing::info_span!(
            "webhook",
            project = "default",
            attempts = 3u64,
            delta = -2i64,
            ratio = 0.5,
            nan = f64::NAN,
            ok = true,
            r#type = ?"raw name",
            error = &error as &dyn std::error::Error,
            event_id = Empty,
            outcome = Empty
        );
        span.in_scope(|| tracing::info!("created"));
        span.record("event_id", "evt \"quoted\" \u{1}");
        span.in_scope(|| tracing::info!("one recorded"));
        span.record("outcome", "accepted");
        span.record("outcome", "refused");
        span.in_scope(|| tracing::info!("recorded again"));
        let bare = tracing::info_span!("bare", later = Empty);
        bare.record("later", 7);
        bare.in_scope(|| tracing::info!("recorded into a span created without values"));
    }

    #[test]
    fn recorded_fields_log_as_json_fields_logs_them() {
        let spliced = spans_logged(SplicedJsonFields, webhook_lines);
        assert_eq!(spliced, spans_logged(JsonFields::new(), webhook_lines));
        assert_eq!(spliced.len(), 4);
        assert_eq!(spliced[0]["attempts"], 3);
        assert_eq!(spliced[0]["type"], "\"raw name\"");
        assert_eq!(spliced[1]["event_id"], "evt \"quoted\" \u{1}");
        assert_eq!(spliced[2]["outcome"], "refused", "the later value wins");
        assert_eq!(spliced[3]["later"], 7);
    }
}
