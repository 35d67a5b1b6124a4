//! Span fields for the JSON log format, cheap to write and to add to.
//!
//! tracing-subscriber's `JsonFields` collects a span's fields into a map of JSON values before
//! writing them, and on every `Span::record` parses the span's JSON string and serialises it
//! again. The receiver creates a span for each webhook and records three fields on it once it
//! knows them (event id, type, outcome): that cost about a tenth of its instructions per webhook
//! (BENCHMARKS.md). Here each field is written straight into the object, and recorded fields are
//! spliced into it. The object stays valid JSON with each field once (a field recorded again
//! replaces its value, as in `JsonFields`), so the event formatter (`json_lines`) copies it whole
//! into each line.

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
        // Room for a span's usual fields at once: growing a `Vec` from empty reallocates it
        // several times, a tenth of the cost of a field on the receiver's path.
        let mut object = Vec::with_capacity(128);
        object.push(b'{');
        fields.record(&mut Entries { out: &mut object, empty: true });
        object.push(b'}');
        writer.write_str(std::str::from_utf8(&object).map_err(|_| fmt::Error)?)
    }

    fn add_fields(&self, current: &'writer mut FormattedFields<Self>, fields: &Record<'_>) -> fmt::Result {
        if current.fields.is_empty() {
            return self.format_fields(current.as_writer(), fields);
        }
        // Anything but an object is left as it is: the event formatter copies the object into
        // every line of the span.
        if !current.fields.ends_with('}') {
            return Err(fmt::Error);
        }
        let mut known = Known { object: &current.fields, any: false };
        fields.record(&mut known);
        if known.any {
            return replace_values(&mut current.fields, fields);
        }
        // `{"a":1}` and `"b":2` make `{"a":1,"b":2}`, written in place: the receiver records
        // twice per webhook, and a buffer of its own for the new fields cost allocations each time.
        let mut object = std::mem::take(&mut current.fields).into_bytes();
        object.pop();
        let empty = object.len() == 1;
        // Room for the rest of a span's usual fields, so that a later record does not grow it.
        object.reserve(96);
        fields.record(&mut Entries { out: &mut object, empty });
        object.push(b'}');
        current.fields = String::from_utf8(object).map_err(|_| fmt::Error)?;
        Ok(())
    }
}

/// Notes whether any field it visits is already in `object`.
struct Known<'a> {
    object: &'a str,
    any: bool,
}

impl Known<'_> {
    fn check(&mut self, name: &str) {
        self.any = self.any || holds_key(self.object, name);
    }
}

impl Visit for Known<'_> {
    fn record_f64(&mut self, field: &Field, _: f64) {
        self.check(field.name());
    }

    fn record_i64(&mut self, field: &Field, _: i64) {
        self.check(field.name());
    }

    fn record_u64(&mut self, field: &Field, _: u64) {
        self.check(field.name());
    }

    fn record_bool(&mut self, field: &Field, _: bool) {
        self.check(field.name());
    }

    fn record_str(&mut self, field: &Field, _: &str) {
        self.check(field.name());
    }

    fn record_bytes(&mut self, field: &Field, _: &[u8]) {
        self.check(field.name());
    }

    fn record_debug(&mut self, field: &Field, _: &dyn fmt::Debug) {
        if let Some(name) = debug_name(field.name()) {
            self.check(name);
        }
    }
}

/// Whether the span's object has a field `name`. Values are scalars or escaped strings, so
/// `"name":` can only be a key; a false match would only take the slower, equally correct path.
fn holds_key(object: &str, name: &str) -> bool {
    // `"name":` built on the stack: this runs for every field recorded on every webhook's span.
    let mut key = [0u8; 64];
    let plain = name.len() + 3 <= key.len() && !name.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20);
    if !plain {
        let Ok(mut key) = serde_json::to_string(name) else { return true };
        key.push(':');
        return object.contains(&key);
    }
    let end = name.len() + 1;
    key[0] = b'"';
    key[1..end].copy_from_slice(name.as_bytes());
    key[end..end + 2].copy_from_slice(b"\":");
    // Only ASCII punctuation was added to a `str`.
    std::str::from_utf8(&key[..end + 2]).map_or(true, |key| object.contains(key))
}

/// A field recorded again (the worker records `outcome` more than once on some paths): the
/// object is read, the new values replace the old, and it is written again. Rare, so simple.
fn replace_values(object: &mut String, fields: &Record<'_>) -> fmt::Result {
    type Object = serde_json::Map<String, serde_json::Value>;
    let mut current: Object = serde_json::from_str(object).map_err(|_| fmt::Error)?;
    let mut recorded = vec![b'{'];
    fields.record(&mut Entries { out: &mut recorded, empty: true });
    recorded.push(b'}');
    let recorded: Object = serde_json::from_slice(&recorded).map_err(|_| fmt::Error)?;
    current.extend(recorded);
    *object = serde_json::to_string(&current).map_err(|_| fmt::Error)?;
    Ok(())
}

/// The name a field with a `Debug` value is written under, as `JsonFields` writes it: none for
/// the `log.` fields (the log crate's metadata, shown elsewhere), and raw identifiers without `r#`.
fn debug_name(name: &str) -> Option<&str> {
    if name.starts_with("log.") {
        return None;
    }
    Some(name.strip_prefix("r#").unwrap_or(name))
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
        if let Some(name) = debug_name(field.name()) {
            self.entry(name, &format!("{value:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use tracing::field::Empty;
    use tracing_subscriber::fmt::format::JsonFields;

    use crate::telemetry::{captured::Lines, json_lines::JsonLines};

    use super::*;

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
        let text = lines.text();
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
        span.in_scope(|| tracing::warn!(status = 503u64, retry = true, reason = %"no \"route\"", "with fields"));
        tracing::info!(outside = 1, "outside any span");
    }

    /// The whole lines logged by `log`: the relay's own formatters, or tracing-subscriber's JSON
    /// format with its `JsonFields`, configured as the relay's format once was.
    fn lines_logged(relays: bool, log: impl FnOnce()) -> Vec<String> {
        let lines = Lines::default();
        let builder = tracing_subscriber::fmt().with_writer(lines.clone());
        if relays {
            let subscriber = builder.fmt_fields(SplicedJsonFields).event_format(JsonLines).finish();
            tracing::subscriber::with_default(subscriber, log);
        } else {
            let subscriber = builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .fmt_fields(JsonFields::new())
                .finish();
            tracing::subscriber::with_default(subscriber, log);
        }
        let text = lines.text();
        text.lines().map(str::to_owned).collect()
    }

    fn without_timestamp(line: &str) -> Value {
        let mut value: Value = serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}"));
        assert!(value.as_object_mut().unwrap().remove("timestamp").is_some(), "{line}");
        value
    }

    #[test]
    fn lines_say_what_tracing_subscribers_json_format_says() {
        let relays = lines_logged(true, webhook_lines);
        let reference = lines_logged(false, webhook_lines);
        assert_eq!(relays.len(), 6);
        let parsed = |lines: &[String]| lines.iter().map(|line| without_timestamp(line)).collect::<Vec<_>>();
        assert_eq!(parsed(&relays), parsed(&reference));
        assert_eq!(without_timestamp(&relays[4])["span"]["name"], "webhook");
        assert_eq!(without_timestamp(&relays[4])["status"], 503);
        assert!(without_timestamp(&relays[5]).get("span").is_none());
    }

    #[test]
    fn an_object_that_is_not_one_is_left_as_it_is() {
        // Enabled, so that the span keeps its metadata.
        let span = tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            tracing::info_span!("bare", later = Empty)
        });
        let meta = span.metadata().unwrap();
        let later = meta.fields().field("later").unwrap();
        let values = [(&later, Some(&7 as &dyn tracing::Value))];
        let values = meta.fields().value_set(&values);
        let mut stored = FormattedFields::<SplicedJsonFields>::new("not an object".to_owned());
        assert!(SplicedJsonFields.add_fields(&mut stored, &Record::new(&values)).is_err());
        assert_eq!(stored.fields, "not an object");
    }

    #[test]
    fn a_field_recorded_again_is_in_the_line_once_with_its_last_value() {
        let relays = lines_logged(true, webhook_lines);
        for line in &relays[2..] {
            assert!(line.matches(r#""outcome":"#).count() <= 1, "{line}");
        }
        assert!(relays[2].contains(r#""outcome":"refused""#), "{}", relays[2]);
    }

    #[test]
    fn recorded_fields_log_as_json_fields_logs_them() {
        let spliced = spans_logged(SplicedJsonFields, webhook_lines);
        assert_eq!(spliced, spans_logged(JsonFields::new(), webhook_lines));
        assert_eq!(spliced.len(), 6);
        assert_eq!(spliced[0]["attempts"], 3);
        assert_eq!(spliced[0]["type"], "\"raw name\"");
        assert_eq!(spliced[1]["event_id"], "evt \"quoted\" \u{1}");
        assert_eq!(spliced[2]["outcome"], "refused", "the later value wins");
        assert_eq!(spliced[3]["later"], 7);
    }

    #[test]
    fn a_name_that_json_escapes_is_found_again_when_recorded_again() {
        // Not in `webhook_lines`: `JsonFields` reads the stored keys as borrowed strings, so it
        // drops every record after such a name is stored.
        let lines = lines_logged(true, || {
            let span = tracing::info_span!("odd", "odd \"key\"" = Empty, other = Empty);
            span.record("odd \"key\"", 1);
            span.record("other", 1);
            span.record("odd \"key\"", 2);
            span.in_scope(|| tracing::info!("recorded again"));
        });
        assert_eq!(lines[0].matches(r#""odd \"key\"":"#).count(), 1, "{}", lines[0]);
        let span = &without_timestamp(&lines[0])["span"];
        assert_eq!((&span["odd \"key\""], &span["other"]), (&2.into(), &1.into()));
    }
}
