//! The JSON log line's timestamp, written as tracing-subscriber's `SystemTime` timer writes it
//! (`2026-11-30T03:24:57.123456Z`, UTC, microseconds) with its digits put in place: the timer's
//! padded `write!` arguments were a sixth of the instructions of the receiver's per-webhook
//! log line (BENCHMARKS.md).

use std::{
    fmt::Write as _,
    time::{SystemTime, UNIX_EPOCH},
};

use time::OffsetDateTime;
use tracing_subscriber::fmt::{format::Writer, time::FormatTime};

/// Appends the time now, in the log line's format, to `out`.
pub fn write_now(out: &mut String) {
    if write_at(SystemTime::now(), out).is_err() {
        // A clock past the year 9999: tracing-subscriber's own timer writes it.
        let _ = tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(out));
    }
}

/// Beyond the years `time` represents (±9999).
#[derive(Debug, PartialEq)]
struct OutOfRange;

fn write_at(at: SystemTime, out: &mut String) -> Result<(), OutOfRange> {
    let nanos = match at.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    };
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| OutOfRange)?;
    let year = at.year();
    if year < 0 {
        // tracing-subscriber's form for years before 0.
        let _ = write!(out, "{year:05}");
    } else {
        digits(out, year as u32, 4);
    }
    for (separator, value) in
        [('-', at.month() as u8), ('-', at.day()), ('T', at.hour()), (':', at.minute()), (':', at.second())]
    {
        out.push(separator);
        digits(out, u32::from(value), 2);
    }
    out.push('.');
    digits(out, at.microsecond(), 6);
    out.push('Z');
    Ok(())
}

/// `value`'s last `width` decimal digits, zero-padded.
fn digits(out: &mut String, mut value: u32, width: usize) {
    let mut text = [b'0'; 6];
    for place in text[..width].iter_mut().rev() {
        *place = b'0' + (value % 10) as u8;
        value /= 10;
    }
    text[..width].iter().for_each(|&digit| out.push(char::from(digit)));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn written(at: SystemTime) -> String {
        let mut out = String::new();
        write_at(at, &mut out).unwrap();
        out
    }

    fn at(seconds: i64, nanos: u32) -> SystemTime {
        if seconds >= 0 {
            UNIX_EPOCH + Duration::new(seconds as u64, nanos)
        } else {
            UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs()) + Duration::from_nanos(u64::from(nanos))
        }
    }

    #[test]
    fn instants_are_written_in_utc_to_the_microsecond() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 500_000_000, "2000-02-29T00:00:00.500000Z"),
            (1_796_009_097, 123_456_789, "2026-11-30T03:24:57.123456Z"),
            (4_107_542_399, 999_999_999, "2100-02-28T23:59:59.999999Z"),
            (253_402_300_799, 1_000, "9999-12-31T23:59:59.000001Z"),
            (-1, 0, "1969-12-31T23:59:59.000000Z"),
            (-62_167_219_201, 0, "-0001-12-31T23:59:59.000000Z"),
        ];
        for (seconds, nanos, expected) in cases {
            assert_eq!(written(at(seconds, nanos)), expected, "{seconds}.{nanos:09}");
        }
        assert_eq!(write_at(at(253_402_300_800, 0), &mut String::new()), Err(OutOfRange));
    }

    #[test]
    fn now_is_written_as_tracing_subscribers_timer_writes_it() {
        // The timer reads the clock itself: compare down to the second, retrying across a tick.
        let seconds = |text: &str| text[..19].to_owned();
        let matched = (0..10).any(|_| {
            let mut theirs = String::new();
            tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut theirs)).unwrap();
            let mut ours = String::new();
            write_now(&mut ours);
            ours.len() == theirs.len() && seconds(&ours) == seconds(&theirs)
        });
        assert!(matched);
    }
}
