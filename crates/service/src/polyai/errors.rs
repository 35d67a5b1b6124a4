//! Reading PolyAI's error answers: `Retry-After`, and the three error-body shapes the docs show.

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use url::{Origin, Url};

/// The longest `Retry-After` the relay obeys (the worker and backfill alike): a server asking for
/// more is treated as asking for this. The longest retry delay queue holds it.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// The longest a listing (backfill, reconciliation) waits between 429s in a row when their
/// `Retry-After` asks for less.
const LISTING_429_FLOOR_MAX: Duration = Duration::from_secs(60);

/// How long a listing waits after the `in_a_row`th 429 in a row (1 for the first): its
/// `Retry-After` (up to [`RETRY_AFTER_CAP`]), but at least a second doubled for each 429 before
/// it, up to a minute. A `Retry-After` of 0, or none, would otherwise have the same page asked
/// for again at once, or every second, for as long as the API refuses it.
pub fn listing_wait_after_429(retry_after: Option<Duration>, in_a_row: u32) -> Duration {
    let doublings = in_a_row.saturating_sub(1).min(6);
    let floor = Duration::from_secs(1 << doublings).min(LISTING_429_FLOOR_MAX);
    retry_after.unwrap_or_default().min(RETRY_AFTER_CAP).max(floor)
}

/// `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3); the docs do not say which.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The three error shapes the docs show (polyai-api.md §5), read for a log line.
#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorBody {
    Current {
        error_code: String,
        error_message: Option<String>,
    },
    Nested {
        error: NestedError,
    },
    Alerts {
        message: String,
        #[serde(default)]
        errors: Vec<FieldError>,
    },
}

#[derive(Deserialize)]
struct NestedError {
    code: serde_json::Value,
    message: Option<String>,
}

#[derive(Deserialize)]
struct FieldError {
    field: Option<String>,
    message: Option<String>,
}

/// A short description of an error body; unknown shapes are quoted raw, cut short.
pub fn error_detail(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody::Current { error_code, error_message }) => {
            format!("{error_code}: {}", error_message.unwrap_or_default())
        }
        Ok(ErrorBody::Nested { error }) => {
            let code = error.code.as_str().map(str::to_owned).unwrap_or_else(|| error.code.to_string());
            format!("{code}: {}", error.message.unwrap_or_default())
        }
        Ok(ErrorBody::Alerts { message, errors }) => {
            let fields: Vec<String> = errors
                .into_iter()
                .map(|e| format!("{}: {}", e.field.unwrap_or_default(), e.message.unwrap_or_default()))
                .collect();
            if fields.is_empty() {
                message
            } else {
                format!("{message} ({})", fields.join("; "))
            }
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let cut: String = text.chars().take(200).collect();
            if cut.is_empty() {
                "no error body".into()
            } else {
                cut
            }
        }
    }
}

/// What a 3xx answer to `from` said, for an error: where it pointed, as scheme, host and port
/// only. The rest of a `Location` (a signed storage URL's query, say) can be a credential.
pub fn redirect_detail(location: Option<&str>, from: &Url) -> String {
    const WHY: &str = "not followed: the API key goes to the configured host only";
    match location.and_then(|location| from.join(location).ok()).map(|to| to.origin()) {
        Some(origin @ Origin::Tuple(..)) => format!("redirected to {} ({WHY})", origin.ascii_serialization()),
        _ => format!("a redirect with no usable Location ({WHY})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(30)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn a_listing_waits_out_retry_after_but_backs_off_429s_in_a_row_asking_for_less() {
        let secs = |retry_after: Option<u64>, in_a_row| {
            listing_wait_after_429(retry_after.map(Duration::from_secs), in_a_row).as_secs()
        };
        let zeros: Vec<u64> = (1..=8).map(|n| secs(Some(0), n)).collect();
        assert_eq!(zeros, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(secs(None, 3), 4, "no Retry-After: the same floor");
        assert_eq!(secs(Some(30), 1), 30, "a longer Retry-After is obeyed");
        assert_eq!(secs(Some(30), 7), 60, "unless the row asks for more");
        assert_eq!(secs(Some(7200), 1), RETRY_AFTER_CAP.as_secs());
    }

    #[test]
    fn all_three_error_shapes_are_read() {
        let current = br#"{"success":false,"error":"x","error_id":"e1","error_code":"CONVERSATIONS_NOT_FOUND","error_message":"Conversation not found","data":null}"#;
        assert_eq!(error_detail(current), "CONVERSATIONS_NOT_FOUND: Conversation not found");
        let nested =
            br#"{"error":{"code":"PROJECT_NOT_FOUND","id":15001,"message":"Project not found","correlation_id":"c"}}"#;
        assert_eq!(error_detail(nested), "PROJECT_NOT_FOUND: Project not found");
        let alerts = br#"{"message":"Validation failed","errors":[{"field":"limit","message":"too big"}]}"#;
        assert_eq!(error_detail(alerts), "Validation failed (limit: too big)");
        let raw = "x".repeat(500);
        assert_eq!(error_detail(raw.as_bytes()).len(), 200);
        assert_eq!(error_detail(b""), "no error body");
    }

    #[test]
    fn a_redirect_is_described_by_where_it_points_without_path_query_or_credentials() {
        let from = Url::parse("https://api.us-1.platform.polyai.app/v3/ws/p/conversations/CA1").unwrap();
        let signed = redirect_detail(Some("http://user:pw@storage.example.com:8080/a.wav?sig=s3cr3t"), &from);
        assert!(signed.starts_with("redirected to http://storage.example.com:8080 (not followed"), "{signed}");
        assert!(!signed.contains("s3cr3t") && !signed.contains("pw") && !signed.contains("a.wav"), "{signed}");
        let relative = redirect_detail(Some("/elsewhere"), &from);
        assert!(relative.starts_with("redirected to https://api.us-1.platform.polyai.app ("), "{relative}");
        assert!(redirect_detail(None, &from).starts_with("a redirect with no usable Location"));
        assert!(redirect_detail(Some("data:text/plain,x"), &from).starts_with("a redirect with no usable Location"));
    }
}
