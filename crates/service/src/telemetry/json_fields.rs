//! Span fields for the JSON log format, cheap to add to after a span is created.
//!
//! tracing-subscriber's `JsonFields` keeps a span's fields as one JSON object in a string and,
//! on every `Span::record`, parses that string and serialises it again. The receiver records
//! three fields on each webhook's span once it knows them (event id, type, outcome), and that
//! parsing cost about a tenth of its instructions per webhook (BENCHMARKS.md). Here the new
//! fields are formatted on their own, as `JsonFields` would, and spliced into the object: the
//! log lines are the same.

use std::fmt;

use tracing::span::Record;
use tracing_subscriber::{
    field::RecordFields,
    fmt::{
        format::{JsonFields, Writer},
        FormatFields, FormattedFields,
    },
};

/// `JsonFields`, except that recording into a span appends to its object instead of rewriting it.
/// A field recorded twice appears twice in the span's string; the formatter that writes each
/// log line parses that object, and the later value wins, as with `JsonFields`.
#[derive(Debug, Default)]
pub struct SplicedJsonFields(JsonFields);

impl<'writer> FormatFields<'writer> for SplicedJsonFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        self.0.format_fields(writer, fields)
    }

    fn add_fields(&self, current: &'writer mut FormattedFields<Self>, fields: &Record<'_>) -> fmt::Result {
        if current.fields.is_empty() {
            return self.format_fields(current.as_writer(), fields);
        }
        let mut added = String::new();
        self.format_fields(Writer::new(&mut added), fields)?;
        // Both are objects: `{"a":1}` and `{"b":2}` make `{"a":1,"b":2}`.
        let added = added.strip_prefix('{').and_then(|a| a.strip_suffix('}')).ok_or(fmt::Error)?;
        if added.is_empty() {
            return Ok(());
        }
        let object = &mut current.fields;
        if object.pop() != Some('}') {
            return Err(fmt::Error);
        }
        if object.len() > 1 {
            object.push(',');
        }
        object.push_str(added);
        object.push('}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tracing::field::Empty;
    use tracing_subscriber::fmt::MakeWriter;

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
        let span = tracing::info_span!("webhook", project = "default", event_id = Empty, outcome = Empty);
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
        let spliced = spans_logged(SplicedJsonFields::default(), webhook_lines);
        assert_eq!(spliced, spans_logged(JsonFields::new(), webhook_lines));
        assert_eq!(spliced.len(), 4);
        assert_eq!(spliced[1]["event_id"], "evt \"quoted\" \u{1}");
        assert_eq!(spliced[2]["outcome"], "refused", "the later value wins");
        assert_eq!(spliced[3]["later"], 7);
    }
}
