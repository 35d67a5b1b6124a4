//! The JSON log line: tracing-subscriber's JSON format, with the current span's fields copied
//! into the line as they are stored instead of parsed again for every line.
//!
//! tracing-subscriber's `Json` format turns the span's stored JSON object into a map of JSON
//! values and serialises that again on each line (its own code calls this "an uglier fix"); on
//! the receiver's "webhook enqueued" line that was about 11,000 instructions per webhook
//! (BENCHMARKS.md). The span's object is written by [`SplicedJsonFields`], which keeps it a
//! valid object with each field once, so it can be copied whole. Everything else is written as
//! tracing-subscriber writes it: timestamp, level, the event's fields flattened, target, then
//! `span` with the span's fields and its `name`.

use std::fmt;

use serde::ser::{SerializeMap, Serializer as _};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_serde::SerdeMapVisitor;
use tracing_subscriber::{
    fmt::{format::Writer, FmtContext, FormatEvent, FormattedFields},
    registry::LookupSpan,
};

use super::{json_fields::SplicedJsonFields, timestamp};

/// The event formatter of the JSON log format (see the module's documentation).
#[derive(Debug, Default)]
pub struct JsonLines;

impl<S> FormatEvent<S, SplicedJsonFields> for JsonLines
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, SplicedJsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::with_capacity(32);
        timestamp::write_now(&mut timestamp);
        // Events of the `log` crate carry their real target and level in fields of their own.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());

        // Room for the receiver's per-webhook line (about 310 bytes) without growing it.
        let mut line = Vec::with_capacity(512);
        let mut serializer = serde_json::Serializer::new(&mut line);
        let written = (|| {
            let mut map = serializer.serialize_map(None)?;
            map.serialize_entry("timestamp", &timestamp)?;
            map.serialize_entry("level", meta.level().as_str())?;
            let mut fields = SerdeMapVisitor::new(map);
            event.record(&mut fields);
            let mut map = fields.take_serializer()?;
            map.serialize_entry("target", meta.target())?;
            map.end()
        })();
        written.map_err(|_| fmt::Error)?;

        let span = event.parent().and_then(|id| ctx.span(id)).or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            let extensions = span.extensions();
            if let Some(stored) = extensions.get::<FormattedFields<SplicedJsonFields>>() {
                // `{…,"target":"x"}` and the span's `{"a":1}` make `{…,"target":"x","span":{"a":1,"name":"n"}}`.
                let inner =
                    stored.fields.strip_prefix('{').and_then(|rest| rest.strip_suffix('}')).ok_or(fmt::Error)?;
                line.pop();
                line.extend_from_slice(b",\"span\":{");
                line.extend_from_slice(inner.as_bytes());
                if !inner.is_empty() {
                    line.push(b',');
                }
                line.extend_from_slice(b"\"name\":");
                serde_json::to_writer(&mut line, span.metadata().name()).map_err(|_| fmt::Error)?;
                line.extend_from_slice(b"}}");
            }
        }
        line.push(b'\n');
        writer.write_str(std::str::from_utf8(&line).map_err(|_| fmt::Error)?)
    }
}
