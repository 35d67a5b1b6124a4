//! `GET /v3/{account}/{project}/conversations`: one page of the list, by cursor or offset.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::value::RawValue;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::{ApiError, PolyaiClient};

/// Filters and position of one list request. Keep the filters identical between pages.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub start_time: Option<OffsetDateTime>,
    pub end_time: Option<OffsetDateTime>,
    /// `live`, `sandbox` or `pre-release` (the API's default is `live`).
    pub client_env: Option<String>,
    pub limit: Option<u32>,
    /// Opaque cursor from the previous page; wins over `offset` when both are sent.
    pub cursor: Option<String>,
    pub offset: Option<u64>,
}

/// One conversation of a page: the fields the relay reads, and the JSON as sent.
#[derive(Debug)]
pub struct Summary {
    pub id: String,
    pub in_progress: bool,
    pub raw: Box<RawValue>,
}

#[derive(Debug)]
pub struct ListPage {
    pub conversations: Vec<Summary>,
    /// The next page's cursor; `None` on the last page (or when paging by offset).
    pub cursor: Option<String>,
    /// The next page's offset, when the API pages by offset.
    pub next_offset: Option<u64>,
}

/// Where the list goes on after a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextPage {
    Cursor(String),
    Offset(u64),
    End,
}

impl NextPage {
    /// The next request's `cursor` and `offset`: one at most, since a cursor left beside an
    /// offset would win over it; neither after the last page.
    pub fn position(self) -> (Option<String>, Option<u64>) {
        match self {
            Self::Cursor(cursor) => (Some(cursor), None),
            Self::Offset(offset) => (None, Some(offset)),
            Self::End => (None, None),
        }
    }
}

/// The cursors one walk through the list has been at. A cursor named a second time would page
/// the same pages again, for ever (A→B→A), so the list ends there instead.
#[derive(Debug, Default)]
pub struct Visited {
    cursors: HashSet<String>,
}

impl ListPage {
    /// Where the page after this one starts, this one having been asked for by `request`, on a
    /// walk that has been at `visited`.
    ///
    /// A cursor goes on past an empty page: only a `null` cursor marks the last page (the API
    /// reference), and a page the API left empty is no proof that none follows. By offset, an
    /// empty page is past the end. A position the walk has been at already would page forever:
    /// the list ends there, with a warning: a cursor named before, or an offset that does not
    /// move forward.
    pub fn next(&self, request: &ListRequest, visited: &mut Visited) -> NextPage {
        if let Some(cursor) = &self.cursor {
            visited.cursors.extend(request.cursor.clone());
            if !visited.cursors.insert(cursor.clone()) {
                tracing::warn!(
                    "the conversations list named a cursor it had named before: taking this page as its last"
                );
                return NextPage::End;
            }
            return NextPage::Cursor(cursor.clone());
        }
        match self.next_offset {
            _ if self.conversations.is_empty() => NextPage::End,
            Some(next) if next <= request.offset.unwrap_or(0) => {
                tracing::warn!(
                    next,
                    "the conversations list named an offset no further than the one it was sent: taking this page as its last"
                );
                NextPage::End
            }
            Some(next) => NextPage::Offset(next),
            None => NextPage::End,
        }
    }
}

#[derive(Deserialize)]
struct Page {
    conversations: Vec<Box<RawValue>>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    next_offset: Option<u64>,
}

#[derive(Deserialize)]
struct Fields {
    id: String,
    /// Read loosely: anything but `false` (or no field) counts as in progress, so a call whose
    /// state is unclear is looked at again later rather than taken as finished, or making the
    /// whole page unreadable.
    #[serde(default = "finished")]
    in_progress: serde_json::Value,
}

fn finished() -> serde_json::Value {
    serde_json::Value::Bool(false)
}

/// RFC 3339 in whole seconds: the API documents only "ISO8601 date-time", and parsers that take
/// ISO 8601 often refuse more than six digits of a fraction, which a time read from the clock has.
fn time_text(time: OffsetDateTime) -> String {
    time.replace_nanosecond(0).unwrap_or(time).format(&Rfc3339).unwrap_or_default()
}

impl PolyaiClient {
    pub async fn list(&self, request: &ListRequest) -> Result<ListPage, ApiError> {
        let mut url = self.conversations_url(&[]);
        {
            let mut query = url.query_pairs_mut();
            if let Some(start) = request.start_time {
                query.append_pair("start_time", &time_text(start));
            }
            if let Some(end) = request.end_time {
                query.append_pair("end_time", &time_text(end));
            }
            if let Some(env) = &request.client_env {
                query.append_pair("client_env", env);
            }
            if let Some(limit) = request.limit {
                query.append_pair("limit", &limit.to_string());
            }
            if let Some(cursor) = &request.cursor {
                query.append_pair("cursor", cursor);
            } else if let Some(offset) = request.offset {
                query.append_pair("offset", &offset.to_string());
            }
        }
        let response = self.get(&self.runtime, url, "application/json").await?;
        let bytes = super::capped::read_capped(response, self.max_response).await?;
        let unreadable = |what: &str| ApiError::Server { status: 200, detail: format!("unreadable list page: {what}") };
        // The documented object, or the bare list some of the docs' samples read. (Not an
        // untagged enum: serde cannot buffer the raw conversations that one would need.)
        let (raw, cursor, next_offset) = match serde_json::from_slice::<Page>(&bytes) {
            Ok(Page { conversations, cursor, next_offset }) => (conversations, cursor, next_offset),
            Err(error) => match serde_json::from_slice::<Vec<Box<RawValue>>>(&bytes) {
                Ok(conversations) => (conversations, None, None),
                Err(_) => return Err(unreadable(&error.to_string())),
            },
        };
        // Each entry on its own: one the relay cannot read (no id) is passed over with a warning,
        // and the page's others are still looked at. Failing the page would fail it on every
        // pass, and every call listed after it would leave the window unseen.
        let conversations = raw
            .into_iter()
            .enumerate()
            .filter_map(|(index, raw)| match serde_json::from_str::<Fields>(raw.get()) {
                Ok(Fields { id, in_progress }) if !id.is_empty() => {
                    let in_progress = in_progress != finished();
                    Some(Summary { id, in_progress, raw })
                }
                Ok(_) => {
                    tracing::warn!(entry = index + 1, "a listed conversation has an empty id; it is passed over");
                    None
                }
                Err(error) => {
                    tracing::warn!(entry = index + 1, %error, "a listed conversation cannot be read; it is passed over");
                    None
                }
            })
            .collect();
        Ok(ListPage { conversations, cursor: cursor.filter(|c| !c.is_empty()), next_offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_sent_in_whole_seconds() {
        let now = OffsetDateTime::parse("2026-11-30T21:50:12.123456789Z", &Rfc3339).unwrap();
        assert_eq!(time_text(now), "2026-11-30T21:50:12Z");
        let offset = OffsetDateTime::parse("2026-11-30T22:50:12+01:00", &Rfc3339).unwrap();
        assert_eq!(time_text(offset), "2026-11-30T22:50:12+01:00");
    }

    fn page(ids: &[&str], cursor: Option<&str>, next_offset: Option<u64>) -> ListPage {
        let summary = |id: &&str| Summary {
            id: id.to_string(),
            in_progress: false,
            raw: RawValue::from_string(format!(r#"{{"id":"{id}"}}"#)).unwrap(),
        };
        ListPage { conversations: ids.iter().map(summary).collect(), cursor: cursor.map(str::to_owned), next_offset }
    }

    fn at(cursor: Option<&str>, offset: Option<u64>) -> ListRequest {
        ListRequest { cursor: cursor.map(str::to_owned), offset, ..Default::default() }
    }

    #[test]
    fn only_a_null_cursor_ends_a_list_paged_by_cursor() {
        assert_eq!(
            page(&["CA1"], Some("c2"), None).next(&at(None, None), &mut Visited::default()),
            NextPage::Cursor("c2".into())
        );
        // Empty, but the API says more follows.
        assert_eq!(
            page(&[], Some("c3"), None).next(&at(Some("c2"), None), &mut Visited::default()),
            NextPage::Cursor("c3".into())
        );
        assert_eq!(page(&["CA1"], None, None).next(&at(Some("c2"), None), &mut Visited::default()), NextPage::End);
        // The cursor wins over an offset sent beside it.
        assert_eq!(
            page(&["CA1"], Some("c2"), Some(50)).next(&at(None, None), &mut Visited::default()),
            NextPage::Cursor("c2".into())
        );
    }

    #[test]
    fn a_list_paged_by_offset_ends_at_an_empty_page_or_without_a_next_offset() {
        assert_eq!(
            page(&["CA1"], None, Some(100)).next(&at(None, Some(0)), &mut Visited::default()),
            NextPage::Offset(100)
        );
        assert_eq!(page(&[], None, Some(200)).next(&at(None, Some(100)), &mut Visited::default()), NextPage::End);
        assert_eq!(page(&["CA1"], None, None).next(&at(None, Some(100)), &mut Visited::default()), NextPage::End);
    }

    #[test]
    fn a_position_that_does_not_move_ends_the_list_instead_of_paging_forever() {
        assert_eq!(
            page(&["CA1"], Some("c2"), None).next(&at(Some("c2"), None), &mut Visited::default()),
            NextPage::End
        );
        assert_eq!(page(&["CA1"], None, Some(100)).next(&at(None, Some(100)), &mut Visited::default()), NextPage::End);
        assert_eq!(page(&["CA1"], None, Some(50)).next(&at(None, Some(100)), &mut Visited::default()), NextPage::End);
        assert_eq!(page(&["CA1"], None, Some(0)).next(&at(None, None), &mut Visited::default()), NextPage::End);
    }

    #[test]
    fn a_cursor_the_list_named_before_ends_it_instead_of_going_round_for_ever() {
        let mut visited = Visited::default();
        // A walk resumed at c1 (a backfill's checkpoint), then c1 → c2 → c3 → c2.
        assert_eq!(
            page(&["CA1"], Some("c2"), None).next(&at(Some("c1"), None), &mut visited),
            NextPage::Cursor("c2".into())
        );
        assert_eq!(
            page(&["CA2"], Some("c3"), None).next(&at(Some("c2"), None), &mut visited),
            NextPage::Cursor("c3".into())
        );
        assert_eq!(page(&["CA3"], Some("c2"), None).next(&at(Some("c3"), None), &mut visited), NextPage::End);
        let mut visited = Visited::default();
        assert_eq!(
            page(&["CA1"], Some("c2"), None).next(&at(Some("c1"), None), &mut visited),
            NextPage::Cursor("c2".into())
        );
        assert_eq!(page(&["CA2"], Some("c1"), None).next(&at(Some("c2"), None), &mut visited), NextPage::End);
    }
}
