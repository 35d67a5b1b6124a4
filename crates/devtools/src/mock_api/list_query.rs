//! The list endpoint's query string (polyai-api.md §3.2), parsed and checked before any data is read.
//!
//! Parsed by hand rather than with axum's `Query`: `channel` repeats, and every refusal must be
//! PolyAI's JSON envelope, not axum's plain-text rejection.

use time::{
    format_description::well_known::{Iso8601, Rfc3339},
    OffsetDateTime,
};

use super::{cursor::Cursor, error::Failure, generate::Conversation, prng::fnv1a};

/// The v3 spec's bounds; its default is the maximum.
pub const MAX_LIMIT: usize = 1000;

/// What a page is cut from; everything but the paging itself. The cursor pins these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filters {
    /// Inclusive.
    pub start: Option<OffsetDateTime>,
    /// Exclusive, so consecutive windows tile without overlap.
    pub end: Option<OffsetDateTime>,
    pub client_env: String,
    /// Any of these; empty for all. Exact channel names, or `voice`/`chat` for a family.
    pub channels: Vec<String>,
    pub in_progress: Option<bool>,
    pub variant_id: Option<String>,
    pub variant_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    First,
    After(Cursor),
    Offset(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub filters: Filters,
    pub limit: usize,
    pub page: Page,
}

/// Decoded `key=value` pairs, in order, repeats kept.
pub fn pairs(raw: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).into_owned().collect()
}

pub fn parse_bool(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{name} must be true or false")),
    }
}

impl ListQuery {
    pub fn parse(raw: Option<&str>) -> Result<Self, Failure> {
        let mut filters = Filters {
            start: None,
            end: None,
            client_env: "live".to_owned(),
            channels: Vec::new(),
            in_progress: None,
            variant_id: None,
            variant_name: None,
        };
        let (mut limit, mut offset, mut cursor) = (MAX_LIMIT, None, None);
        for (key, value) in pairs(raw) {
            match key.as_str() {
                "start_time" => filters.start = Some(parse_time("start_time", &value)?),
                "end_time" => filters.end = Some(parse_time("end_time", &value)?),
                "client_env" => match value.as_str() {
                    "sandbox" | "pre-release" | "live" => filters.client_env = value,
                    _ => return Err(Failure::FilterParse("client_env must be sandbox, pre-release or live".into())),
                },
                "channel" => {
                    filters.channels.extend(value.split(',').map(str::trim).filter(|c| !c.is_empty()).map(String::from))
                }
                "in_progress" => {
                    filters.in_progress = Some(parse_bool("in_progress", &value).map_err(Failure::FilterParse)?)
                }
                "include_latency" => {
                    // Turns always carry their latency here; the flag is checked, then has nothing to add.
                    parse_bool("include_latency", &value).map_err(Failure::FilterParse)?;
                }
                "variant_id" => filters.variant_id = Some(value),
                "variant_name" => filters.variant_name = Some(value),
                "limit" => {
                    limit = value.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                        Failure::Validation(format!("limit must be an integer from 1 to {MAX_LIMIT}"))
                    })?;
                }
                "offset" => {
                    offset = Some(
                        value
                            .parse()
                            .map_err(|_| Failure::Validation("offset must be an integer of 0 or more".into()))?,
                    );
                }
                // An empty cursor is read as none: clients often send `cursor=` on the first page.
                "cursor" if !value.is_empty() => cursor = Some(value),
                "query_type" | "sample" | "query" | "turn_type" => {
                    return Err(Failure::NotImplemented(format!("the mock API does not implement `{key}`")));
                }
                // Unknown parameters are ignored, as most HTTP APIs do.
                _ => {}
            }
        }
        if filters.variant_id.is_some() && filters.variant_name.is_some() {
            return Err(Failure::Validation("send variant_id or variant_name, not both".into()));
        }
        if let (Some(start), Some(end)) = (filters.start, filters.end) {
            if start > end {
                return Err(Failure::Validation("start_time is after end_time".into()));
            }
        }
        // The docs: "if both cursor and offset are sent, cursor wins".
        let page = match (cursor, offset) {
            (Some(text), _) => Page::After(Cursor::decode(&text).map_err(|e| Failure::Validation(e.to_string()))?),
            (None, Some(offset)) => Page::Offset(offset),
            (None, None) => Page::First,
        };
        Ok(Self { filters, limit, page })
    }
}

/// RFC 3339 (`2026-11-20T09:14:03Z`), or the wider ISO 8601 forms with an offset.
fn parse_time(name: &str, value: &str) -> Result<OffsetDateTime, Failure> {
    OffsetDateTime::parse(value, &Rfc3339).or_else(|_| OffsetDateTime::parse(value, &Iso8601::DEFAULT)).map_err(|_| {
        Failure::FilterParse(format!("{name} must be an ISO 8601 date-time with an offset, e.g. 2026-11-20T09:14:03Z"))
    })
}

impl Filters {
    pub fn matches(&self, c: &Conversation) -> bool {
        self.start.is_none_or(|start| c.started_at >= start)
            && self.end.is_none_or(|end| c.started_at < end)
            && c.environment == self.client_env
            && (self.channels.is_empty() || self.channels.iter().any(|wanted| channel_matches(wanted, &c.channel)))
            && self.in_progress.is_none_or(|wanted| c.in_progress == wanted)
            && self.variant_id.as_ref().is_none_or(|v| *v == c.variant_id)
            && self.variant_name.as_ref().is_none_or(|v| *v == c.variant_name)
    }

    /// Same filters, same fingerprint: what a cursor carries to catch a client that changed them.
    pub fn fingerprint(&self) -> u64 {
        let mut channels: Vec<String> = self.channels.iter().map(|c| c.to_ascii_uppercase()).collect();
        channels.sort();
        channels.dedup();
        let canonical = format!(
            "{:?}|{:?}|{}|{}|{:?}|{:?}|{:?}",
            self.start.map(OffsetDateTime::unix_timestamp),
            self.end.map(OffsetDateTime::unix_timestamp),
            self.client_env,
            channels.join(","),
            self.in_progress,
            self.variant_id,
            self.variant_name
        );
        fnv1a(canonical.as_bytes())
    }
}

/// The spec's examples say `voice` and `chat` while the data says `VOICE-SIP`, `WEBCHAT`, `CHAT`: both work.
fn channel_matches(wanted: &str, channel: &str) -> bool {
    match wanted.to_ascii_lowercase().as_str() {
        "voice" => channel.starts_with("VOICE"),
        "chat" => channel.ends_with("CHAT"),
        _ => wanted.eq_ignore_ascii_case(channel),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_v3_spec() {
        let query = ListQuery::parse(None).unwrap();
        assert_eq!(query.limit, 1000);
        assert_eq!(query.filters.client_env, "live");
        assert_eq!(query.page, Page::First);
    }

    #[test]
    fn channels_repeat_or_come_comma_separated() {
        let query = ListQuery::parse(Some("channel=VOICE-SIP&channel=webchat,chat")).unwrap();
        assert_eq!(query.filters.channels, ["VOICE-SIP", "webchat", "chat"]);
        assert!(channel_matches("voice", "VOICE-SIP") && channel_matches("chat", "WEBCHAT"));
        assert!(!channel_matches("chat", "VOICE-SIP"));
    }

    #[test]
    fn a_cursor_wins_over_an_offset() {
        let cursor = Cursor { started_at: 1, id: "CA1".into(), filters: 2 };
        let query = ListQuery::parse(Some(&format!("offset=5&cursor={}", cursor.encode()))).unwrap();
        assert_eq!(query.page, Page::After(cursor));
        assert_eq!(ListQuery::parse(Some("offset=5")).unwrap().page, Page::Offset(5));
    }

    #[test]
    fn bad_values_are_refused_with_the_documented_codes() {
        let code = |q: &str| ListQuery::parse(Some(q)).unwrap_err().code();
        assert_eq!(code("limit=0"), "CONVERSATIONS_VALIDATION_FAILED");
        assert_eq!(code("limit=1001"), "CONVERSATIONS_VALIDATION_FAILED");
        assert_eq!(code("offset=-1"), "CONVERSATIONS_VALIDATION_FAILED");
        assert_eq!(code("cursor=zz"), "CONVERSATIONS_VALIDATION_FAILED");
        assert_eq!(code("start_time=yesterday"), "GET_CONVERSATIONS_FILTER_PARSE_ERROR");
        assert_eq!(code("client_env=prod"), "GET_CONVERSATIONS_FILTER_PARSE_ERROR");
        assert_eq!(code("variant_id=a&variant_name=b"), "CONVERSATIONS_VALIDATION_FAILED");
        assert_eq!(
            code("start_time=2026-01-02T00:00:00Z&end_time=2026-01-01T00:00:00Z"),
            "CONVERSATIONS_VALIDATION_FAILED"
        );
    }

    #[test]
    fn the_fingerprint_ignores_channel_order_and_case_but_not_values() {
        let a = ListQuery::parse(Some("channel=VOICE-SIP,webchat")).unwrap().filters;
        let b = ListQuery::parse(Some("channel=WEBCHAT&channel=voice-sip")).unwrap().filters;
        let c = ListQuery::parse(Some("channel=WEBCHAT&client_env=sandbox")).unwrap().filters;
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
