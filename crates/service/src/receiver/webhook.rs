//! `POST {RELAY_PATH}`: verify, parse, filter, publish with confirm, answer.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tracing::{field::Empty, Instrument};

use super::{
    body::{self, ReadingBody},
    endpoint::{Endpoint, Route},
    enqueue::{enqueue, Stored},
    meters::ACCEPTED,
    recent::{DeliveryKey, Seen},
    rejection::Rejection,
    Receiver,
};
use crate::{
    config::Ignored,
    event::Event,
    listener::ConnectionGuard,
    queue::{headers, Message},
    signature::UnverifiedEvent,
    telemetry::{
        names, trace_context,
        traces::{self, trace_span},
    },
};

// Names made once: a lookup by `&str` parses and checks the name on every request.
const SIGNATURE: HeaderName = HeaderName::from_static("x-polyai-signature");
const TIMESTAMP: HeaderName = HeaderName::from_static("x-polyai-timestamp");
const EVENT_ID: HeaderName = HeaderName::from_static("x-polyai-event-id");

/// What happened to a verified event that was not refused.
enum Accepted {
    Enqueued,
    /// Committed to the local spool while the broker is away; forwarded once it is back.
    Spooled,
    Ignored(Ignored),
    /// The same delivery was enqueued within the tolerance window: not enqueued again.
    Duplicate,
}

pub async fn receive(State(route): State<Route>, request: Request) -> Response {
    // The request taken apart rather than through axum's `HeaderMap` extractor, which clones
    // the map and every value in it.
    let (parts, body) = request.into_parts();
    let (headers, connection) = (parts.headers, parts.extensions.get::<ConnectionGuard>().cloned());
    let (receiver, endpoint) = (&route.receiver, route.endpoint());
    let project = endpoint.name.as_str();
    let span = tracing::info_span!("webhook", project, event_id = Empty, event_type = Empty, outcome = Empty);
    let started = Instant::now();
    let result =
        handle(receiver, endpoint, connection.as_ref(), &headers, body, started).instrument(span.clone()).await;
    let _entered = span.enter();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let meter = &receiver.metrics;
    let finish = |outcome| {
        span.record("outcome", outcome);
        endpoint.meters.request(meter, outcome);
    };
    match result {
        Ok(Accepted::Enqueued) => {
            endpoint.meters.acked_after(meter, started.elapsed().as_secs_f64());
            finish(ACCEPTED);
            tracing::info!(elapsed_ms, "webhook enqueued");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Accepted::Spooled) => {
            endpoint.meters.acked_after(meter, started.elapsed().as_secs_f64());
            finish("spooled");
            tracing::info!(elapsed_ms, "webhook spooled");
            let mut response = StatusCode::NO_CONTENT.into_response();
            response.headers_mut().insert("x-relay-outcome", HeaderValue::from_static("spooled"));
            response
        }
        Ok(Accepted::Ignored(reason)) => {
            let (reason, project) = (reason.label(), endpoint.name.label());
            meter.record(|| metrics::counter!(names::IGNORED, "reason" => reason, "project" => project).increment(1));
            finish("ignored");
            tracing::info!(reason, "webhook ignored");
            let mut response = StatusCode::NO_CONTENT.into_response();
            response.headers_mut().insert("x-relay-outcome", HeaderValue::from_static("ignored"));
            response
        }
        Ok(Accepted::Duplicate) => {
            finish("duplicate");
            tracing::info!("webhook is a copy of one enqueued moments ago; not enqueued again");
            let mut response = StatusCode::NO_CONTENT.into_response();
            response.headers_mut().insert("x-relay-outcome", HeaderValue::from_static("duplicate"));
            response
        }
        Err(rejection) => {
            finish(rejection.outcome());
            if let Rejection::Unauthorized(reason) = &rejection {
                let project = endpoint.name.label();
                meter.record(|| {
                    metrics::counter!(names::VERIFY_FAILURES, "reason" => reason.reason(), "project" => project)
                        .increment(1)
                });
            }
            if let Some(unsaid) = endpoint.refusals.admit(rejection.log_kind()) {
                // `unsaid`: refusals of this kind since the last such line, not logged one by one.
                tracing::warn!(error = %rejection, elapsed_ms, unsaid, "webhook refused");
            }
            rejection.into_response()
        }
    }
}

async fn handle(
    receiver: &Receiver,
    endpoint: &Endpoint,
    connection: Option<&ConnectionGuard>,
    headers: &HeaderMap,
    body: Body,
    started: Instant,
) -> Result<Accepted, Rejection> {
    let settings = &receiver.settings;
    let reading = ReadingBody::start(&receiver.metrics, &endpoint.meters);
    let body = body::read(reading, &receiver.body_memory, body, settings.max_body, settings.request_timeout).await?;
    let unverified = UnverifiedEvent {
        body,
        signature: header_bytes(headers, &SIGNATURE),
        timestamp: header_bytes(headers, &TIMESTAMP),
    };
    let now = unix_now();
    let verify = trace_span!("verify");
    let verified =
        verify.in_scope(|| endpoint.verifier.verify(unverified, now as i64)).map_err(Rejection::Unauthorized)?;
    // A webhook's spans from here: an unsigned request's are not exported.
    traces::mark_verified(&[&verify, &tracing::Span::current()]);
    drop(verify);
    // PolyAI's from here: its connection is not evicted to make room for another (design §10).
    // Without a guard the request did not come through the listener (a router driven directly).
    if connection.is_some_and(|connection| !connection.protect()) {
        return Err(Rejection::Evicted);
    }
    endpoint.meters.verified(&receiver.metrics, verified.scheme(), verified.secret());
    // Publishing capacity goes only to requests whose body is in and signed: slow or unsigned
    // requests cannot take it (design §10). Shed instead of queueing: a burst past the limit
    // gets a fast 503 that PolyAI retries, rather than slow answers that blow its 5 s budget.
    let _permit = receiver.in_flight.try_acquire().map_err(|_| Rejection::Overloaded)?;

    let event_id_header = headers.get(&EVENT_ID).and_then(|v| v.to_str().ok());
    let event = Event::parse(verified, event_id_header).map_err(Rejection::BadRequest)?;
    let span = tracing::Span::current();
    // Both at once: each recording rewrites the span's stored fields (telemetry::json_fields).
    tracing::record_all!(span, event_id = event.id.as_str(), event_type = event.event_type.as_str());
    if let Some(conversation_id) = &event.conversation_id {
        traces::set_attribute(&span, "conversation_id", conversation_id);
    }
    tracing::debug!(
        scheme = event.verified.scheme().as_str(),
        secret = event.verified.secret().as_str(),
        "signature verified"
    );

    if let Some(reason) = endpoint.forwarding.ignores(&event.event_type, event.environment.as_deref()) {
        return Ok(Accepted::Ignored(reason));
    }

    // Looked up and reserved at once: of copies sent together under several event ids, one is
    // stored and the others wait for a retry, never all enqueued (design §10). A copy of one still
    // being stored is not told `duplicate` (204): that store may fail, and then nothing would hold
    // the copy. It gets 503 instead, and its retry finds the delivery stored, or forgotten.
    let delivery = DeliveryKey::of(endpoint.name.as_str(), &event.verified, headers, &SIGNATURE);
    let reservation = match receiver.recent.reserve(delivery) {
        Seen::New(reservation) => reservation,
        Seen::Stored => return Ok(Accepted::Duplicate),
        Seen::InFlight => return Err(Rejection::CopyInFlight),
    };
    let ahead = signed_ahead(event.verified.timestamp(), now);

    // The worker's span continues from this one: the raw event carries its `traceparent`.
    let publish_span = trace_span!("publish", otel.kind = "producer", destination = "events", result = Empty);
    let mut message = raw_event_message(event, endpoint);
    trace_context::inject(&publish_span, &mut message.headers);
    let stored = enqueue(receiver, message, started).instrument(publish_span.clone()).await;
    let result = match &stored {
        Ok(Stored::Broker) => "ack",
        Ok(Stored::Spooled) => "spooled",
        Err(rejection) => rejection.outcome(),
    };
    publish_span.record("result", result);
    // Refused, the reservation is dropped here: the sender's retry is stored.
    let stored = stored?;
    // Spooled or confirmed, it is answered 204 and will reach the queue: a replay is a duplicate.
    reservation.stored(ahead);
    match stored {
        Stored::Broker => Ok(Accepted::Enqueued),
        Stored::Spooled => Ok(Accepted::Spooled),
    }
}

fn header_bytes(headers: &HeaderMap, name: &HeaderName) -> Option<Bytes> {
    headers.get(name).map(|v| Bytes::copy_from_slice(v.as_bytes()))
}

/// How far a verified timestamp is ahead of this relay's clock (`now`); zero when it is not, or
/// when the scheme signed none.
fn signed_ahead(timestamp: Option<&str>, now: u64) -> Duration {
    let signed = timestamp.and_then(|ts| ts.parse::<u64>().ok()).unwrap_or_default();
    Duration::from_secs(signed.saturating_sub(now))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// The raw event message of design §4: the body exactly as received, with the relay's headers.
fn raw_event_message(event: Event, endpoint: &Endpoint) -> Message {
    let now = OffsetDateTime::now_utc();
    let mut headers = BTreeMap::new();
    headers.insert(headers::PROJECT.to_owned(), endpoint.name.as_str().to_owned());
    if let Some(ts) = event.verified.timestamp() {
        headers.insert(headers::POLYAI_TIMESTAMP.to_owned(), ts.to_owned());
    }
    headers.insert(headers::SIGNATURE_SCHEME.to_owned(), event.verified.scheme().as_str().to_owned());
    headers.insert(headers::RECEIVED_AT.to_owned(), now.format(&Rfc3339).unwrap_or_default());
    Message {
        body: event.verified.into_body(),
        message_id: event.id,
        event_type: event.event_type,
        timestamp: now.unix_timestamp().max(0) as u64,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_ahead_of_the_clock_extends_how_long_its_delivery_is_remembered() {
        assert_eq!(signed_ahead(Some("1000"), 990), Duration::from_secs(10));
        assert_eq!(signed_ahead(Some("1000"), 1000), Duration::ZERO);
        assert_eq!(signed_ahead(Some("990"), 1000), Duration::ZERO, "behind the clock: the window as usual");
        assert_eq!(signed_ahead(None, 1000), Duration::ZERO, "the body scheme signs no timestamp");
    }
}
