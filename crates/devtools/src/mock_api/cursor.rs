//! The list endpoint's opaque `cursor`: where the last page ended, and for which filters.
//!
//! Keyset, not offset: the cursor names the last conversation returned (start time and id, the
//! list's sort key), so pages stay exact however the data behind them is sliced. A checksum
//! makes an edited or truncated cursor a 400, as the docs promise, rather than a wrong page.

use super::prng::fnv1a;

const VERSION: &str = "v1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// `started_at` of the last conversation returned, Unix seconds.
    pub started_at: i64,
    /// Its id: ties on `started_at` are ordered by id.
    pub id: String,
    /// Fingerprint of the filters of the request that made the cursor; the next page must match.
    pub filters: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cursor is malformed; pass back the `cursor` of the previous page unchanged")]
pub struct MalformedCursor;

impl Cursor {
    /// Hex of `v1.{started_at}.{id}.{filters}` and a checksum: URL-safe, opaque to clients.
    pub fn encode(&self) -> String {
        let payload = format!("{VERSION}.{}.{}.{:016x}", self.started_at, self.id, self.filters);
        let mut bytes = payload.into_bytes();
        let checksum = fnv1a(&bytes);
        bytes.extend_from_slice(&checksum.to_be_bytes());
        hex::encode(bytes)
    }

    pub fn decode(text: &str) -> Result<Self, MalformedCursor> {
        let bytes = hex::decode(text).map_err(|_| MalformedCursor)?;
        let split = bytes.len().checked_sub(8).ok_or(MalformedCursor)?;
        let (payload, checksum) = bytes.split_at(split);
        if fnv1a(payload).to_be_bytes() != checksum {
            return Err(MalformedCursor);
        }
        let payload = std::str::from_utf8(payload).map_err(|_| MalformedCursor)?;
        let mut parts = payload.split('.');
        let (Some(VERSION), Some(started_at), Some(id), Some(filters), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(MalformedCursor);
        };
        Ok(Self {
            started_at: started_at.parse().map_err(|_| MalformedCursor)?,
            id: id.to_owned(),
            filters: u64::from_str_radix(filters, 16).map_err(|_| MalformedCursor)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor() -> Cursor {
        Cursor { started_at: 1_795_000_000, id: "CA7f3e9b2a41c84d0e9a1b2c3d4e5f6a7b".into(), filters: 0xdead_beef }
    }

    #[test]
    fn a_cursor_survives_a_round_trip_and_is_url_safe() {
        let text = cursor().encode();
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(Cursor::decode(&text), Ok(cursor()));
    }

    #[test]
    fn an_edited_truncated_or_foreign_cursor_is_malformed() {
        let text = cursor().encode();
        let mut edited = text.clone().into_bytes();
        edited[6] = if edited[6] == b'0' { b'1' } else { b'0' };
        assert_eq!(Cursor::decode(std::str::from_utf8(&edited).unwrap()), Err(MalformedCursor));
        assert_eq!(Cursor::decode(&text[..text.len() - 2]), Err(MalformedCursor));
        assert_eq!(Cursor::decode("not-a-cursor"), Err(MalformedCursor));
        assert_eq!(Cursor::decode(""), Err(MalformedCursor));
        assert_eq!(Cursor::decode(&hex::encode("v1.1.CA.0")), Err(MalformedCursor));
    }
}
