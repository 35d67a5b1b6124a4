//! Parsers for the textual forms settings take in flags and the environment.

use std::time::Duration;

/// Parses a duration such as `300s`, `3s`, `250ms` or `24h`.
///
/// A bare number is refused: `RELAY_ACK_DEADLINE=3` could mean seconds or milliseconds,
/// and guessing wrong turns a 3 s deadline into a 3 ms one.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{text}` has no unit; write e.g. `{text}s` or `{text}ms`"));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. `3s`, `250ms` or `24h`"))
}

/// Parses a byte size such as `1MiB`, `512KiB`, `64kB` or `1048576`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let bad = || format!("`{text}` is not a size; write e.g. `1MiB`, `512KiB` or `65536`");
    let number: usize = digits.parse().map_err(|_| bad())?;
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    number.checked_mul(multiplier).filter(|n| *n > 0).ok_or_else(bad)
}

/// Parses a yes/no setting: `true/false`, `1/0`, `yes/no`, `on/off`, in any case. One parser for
/// every boolean, so `RELAY_FETCH_AUDIO=1` means what a shell user expects.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("`{}` is not a yes/no value; write true/false, 1/0, yes/no or on/off", text.trim())),
    }
}

/// A name that can be turned off: `None` for nothing, `off` or `none`, in any case, as for
/// [`parse_bool`]; `OFF` naming a queue called `OFF` would surprise whoever wrote it.
pub fn optional_name(text: &str) -> Option<String> {
    let name = text.trim();
    let off = name.is_empty() || name.eq_ignore_ascii_case("off") || name.eq_ignore_ascii_case("none");
    (!off).then(|| name.to_owned())
}

/// Splits a comma-separated list, dropping blanks so `a, b,` means `[a, b]`.
pub fn parse_list(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// Whether a webhook path can be a route as it is: absolute, of letters, digits and `/-_.~`
/// only. The router reads `{…}` and `*` as parameters (and refuses some forms at start-up with a
/// panic), and `?` or `#` would never match a request's path.
pub fn plain_route(path: &str) -> bool {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.' | '~');
    path.starts_with('/') && path.chars().all(plain) && !path.contains("//")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_is_a_plain_absolute_path() {
        for path in ["/polyai-events", "/", "/hooks/acme-uk.v2~x_y"] {
            assert!(plain_route(path), "{path}");
        }
        for path in ["polyai-events", "/:hook", "/{hook}", "/*rest", "/a{", "/a?b", "/a//b", "/a b", "/é"] {
            assert!(!plain_route(path), "{path}");
        }
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("300s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert!(parse_duration("3").unwrap_err().contains("no unit"));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes_accept_binary_and_decimal_units() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("512KiB").unwrap(), 512 * 1024);
        assert_eq!(parse_size("64kB").unwrap(), 64_000);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert!(parse_size("1 parsec").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn names_are_turned_off_by_off_or_none_in_any_case() {
        for off in ["", " ", "off", "OFF", "Off", "none", "NONE"] {
            assert_eq!(optional_name(off), None, "{off:?}");
        }
        assert_eq!(optional_name(" polyai.conversations.log ").as_deref(), Some("polyai.conversations.log"));
        assert_eq!(optional_name("offline").as_deref(), Some("offline"));
    }

    #[test]
    fn booleans_take_every_usual_spelling() {
        for yes in ["true", "TRUE", "1", "yes", "Yes", "on", " ON "] {
            assert_eq!(parse_bool(yes), Ok(true), "{yes}");
        }
        for no in ["false", "False", "0", "no", "NO", "off", "Off"] {
            assert_eq!(parse_bool(no), Ok(false), "{no}");
        }
        for bad in ["", "2", "y", "enabled"] {
            assert!(parse_bool(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lists_drop_blanks() {
        assert_eq!(parse_list(" a, b,,"), vec!["a", "b"]);
    }
}
