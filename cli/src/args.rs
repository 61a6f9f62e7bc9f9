//! Parsing of argument values shared by several commands: `--meta K=V`, sizes, times, ids.
//!
//! These are parsed here rather than by clap value parsers so that a bad value is "invalid
//! input" (exit 5, code `invalid_input`) like the library's own validation, while clap keeps
//! exit 2 for structural usage errors (unknown flags, missing arguments).

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{Map, Value};

use cairn::{ArtifactId, ArtifactKind, CheckpointId, Role, SessionId, SessionStatus, Store};

use super::context::{CliResult, Failure};
use super::remote::{Params, Remote};

/// Parses `KEY=VALUE` pairs into a JSON object. The value is JSON when it parses as JSON
/// (`n=3`, `ok=true`, `x={"a":1}`), else the text itself (`model=gpt-4o`). Later keys win.
pub fn parse_meta(pairs: &[String], flag: &str) -> CliResult<Map<String, Value>> {
    let mut m = Map::new();
    for p in pairs {
        let (k, v) = parse_pair(p, flag)?;
        m.insert(k, v);
    }
    Ok(m)
}

/// One `KEY=VALUE` pair.
pub fn parse_pair(p: &str, flag: &str) -> CliResult<(String, Value)> {
    let Some((k, v)) = p.split_once('=') else {
        return Err(Failure::invalid(
            flag,
            format!("{p:?}: expected KEY=VALUE, e.g. {flag} model=gpt-4o or {flag} tokens=1200"),
        ));
    };
    if k.trim().is_empty() {
        return Err(Failure::invalid(
            flag,
            format!("{p:?}: the key before '=' is empty"),
        ));
    }
    let value = serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.to_string()));
    Ok((k.to_string(), value))
}

/// Parses a size: a number of bytes with an optional unit. `KB`, `MB`, `GB`, `TB` are powers of
/// 1000; `KiB`, `MiB`, `GiB`, `TiB` (and the short `K`, `M`, `G`, `T`) powers of 1024.
/// Units are case-insensitive; a fraction is allowed (`1.5MiB`) and rounded down.
pub fn parse_size(s: &str, flag: &str) -> CliResult<u64> {
    let bad = |why: &str| {
        Failure::invalid(
            flag,
            format!("{s:?}: {why}; use a byte count or a size such as 512, 10KiB, 1.5MB, 2GiB"),
        )
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(bad("no number"));
    }
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        _ => return Err(bad("unknown unit")),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(|| bad("too large"));
    }
    let f: f64 = num.parse().map_err(|_| bad("not a number"))?;
    let v = f * mult as f64;
    if !v.is_finite() || v < 0.0 || v >= u64::MAX as f64 {
        return Err(bad("too large"));
    }
    Ok(v as u64)
}

/// Parses a time: RFC 3339 (`2025-09-24T08:12:15Z`), a date (`2025-09-24`, midnight UTC), `now`,
/// or a relative age meaning that long before now, as [`parse_duration`] reads it: `90s`, `15m`,
/// `1h30m`, `7d`, `2w`.
pub fn parse_time(s: &str, flag: &str) -> CliResult<DateTime<Utc>> {
    parse_time_at(s, flag, Utc::now())
}

fn parse_time_at(s: &str, flag: &str, now: DateTime<Utc>) -> CliResult<DateTime<Utc>> {
    let t = s.trim();
    let bad = || {
        Failure::invalid(
            flag,
            format!(
                "{s:?}: use RFC 3339 (2025-09-24T08:12:15Z), a date (2025-09-24), or an age such as 30m, 1h30m, 7d"
            ),
        )
    };
    if t.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|n| n.and_utc()).ok_or_else(bad);
    }
    let age = parse_duration(t, flag).map_err(|_| bad())?;
    let d = Duration::from_std(age).map_err(|_| bad())?;
    now.checked_sub_signed(d).ok_or_else(bad)
}

/// Resolves a session reference: a session id (UUID), or `key:KEY` for the session with that key.
pub fn session_ref(store: &Store, s: &str) -> CliResult<SessionId> {
    if let Some(key) = s.strip_prefix("key:") {
        return match store.session_by_key(key)? {
            Some(sess) => Ok(sess.id),
            None => Err(cairn::Error::SessionNotFound { id: s.to_string() }.into()),
        };
    }
    session_id(s)
}

/// [`session_ref`] against a server: `key:KEY` is looked up with `GET /v1/sessions?key=KEY`.
pub fn remote_session_ref(r: &Remote, s: &str) -> CliResult<SessionId> {
    if let Some(key) = s.strip_prefix("key:") {
        let page: cairn::Page<cairn::Session> = r.get(
            "/v1/sessions",
            &Params::new().add("key", key).add("limit", 1),
        )?;
        return match page.items.into_iter().next() {
            Some(sess) => Ok(sess.id),
            None => Err(cairn::Error::SessionNotFound { id: s.to_string() }.into()),
        };
    }
    session_id(s)
}

fn session_id(s: &str) -> CliResult<SessionId> {
    s.parse::<SessionId>().map_err(|_| {
        Failure::invalid(
            "session id",
            format!(
                "{s:?} is not a session id; give its UUID (from `cairn session list`) or key:KEY"
            ),
        )
    })
}

/// Parses an artifact id.
pub fn artifact_id(s: &str) -> CliResult<ArtifactId> {
    s.parse::<ArtifactId>().map_err(|_| {
        Failure::invalid(
            "artifact id",
            format!("{s:?} is not an artifact id; give its UUID (from `cairn artifact list` or `query`)"),
        )
    })
}

/// Parses an artifact kind.
pub fn kind(s: &str) -> CliResult<ArtifactKind> {
    Ok(s.parse::<ArtifactKind>()?)
}

/// Parses a session status.
pub fn status(s: &str) -> CliResult<SessionStatus> {
    Ok(s.parse::<SessionStatus>()?)
}

/// Units of no fixed length, which humantime reads as averages (a month as 30.44 days, a year
/// as 365.25 days): refused, so an age means exactly what it says.
const INEXACT_UNITS: [&str; 8] = ["M", "month", "months", "y", "yr", "yrs", "year", "years"];

/// Examples of durations, for error messages.
const DURATION_EXAMPLES: &str = "90s, 15m, 2h, 1h30m, 30d, 2w";

/// Parses a duration with `humantime`: numbers with units, `90s`, `15m` (or `15min`), `2h`,
/// `1h30m`, `1.5d`, `30d`, `2w`, also `500ms`. Months and years are refused (they have no fixed
/// length: say `365d`). Zero (`0d`) is allowed and means "any age". The one duration parser of
/// the command line: ages in time filters (`--since 7d`) come through it too.
pub fn parse_duration(s: &str, flag: &str) -> CliResult<std::time::Duration> {
    let bad = |why: &str| {
        Failure::invalid(
            flag,
            format!("{s:?} is not a duration ({why}); use numbers with units such as {DURATION_EXAMPLES}"),
        )
    };
    let t = s.trim();
    let d = humantime::parse_duration(t).map_err(|e| bad(&e.to_string()))?;
    if let Some(unit) = t
        .split(|c: char| !c.is_ascii_alphabetic())
        .find(|u| INEXACT_UNITS.contains(u))
    {
        return Err(bad(&format!(
            "{unit:?} has no fixed length; give days or weeks, e.g. 365d"
        )));
    }
    // Bounded so that it converts to a calendar duration (a few thousand years is plenty).
    const MAX_SECS: u64 = 10_000 * 365 * 86_400;
    if d.as_secs() > MAX_SECS {
        return Err(bad("too long; at most 10000 years"));
    }
    Ok(d)
}

/// Parses a checkpoint id.
pub fn checkpoint_id(s: &str) -> CliResult<CheckpointId> {
    s.trim().parse::<CheckpointId>().map_err(|_| {
        Failure::invalid(
            "checkpoint id",
            format!(
                "{s:?} is not a checkpoint id; give its UUID (from `cairn checkpoint list SESSION`)"
            ),
        )
    })
}

/// Parses a message role: user, assistant, system or tool.
pub fn role(s: &str) -> CliResult<Role> {
    Ok(s.parse::<Role>()?)
}

/// Reads all of stdin, refusing more than `max` bytes (so a runaway pipe cannot exhaust memory).
pub fn read_stdin_bounded(max: u64, what: &str) -> CliResult<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .take(max.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| Failure {
            code: "io".into(),
            message: format!("cannot read {what} from stdin: {e}"),
            exit: 1,
        })?;
    if buf.len() as u64 > max {
        return Err(Failure {
            code: "limit_exceeded".into(),
            message: format!("{what} on stdin is longer than {max} bytes; the limit is {max}"),
            exit: 5,
        });
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512", "--x").unwrap(), 512);
        assert_eq!(parse_size("10KiB", "--x").unwrap(), 10 * 1024);
        assert_eq!(parse_size("10kib", "--x").unwrap(), 10 * 1024);
        assert_eq!(parse_size("1MB", "--x").unwrap(), 1_000_000);
        assert_eq!(parse_size("1.5MiB", "--x").unwrap(), 3 << 19);
        assert_eq!(parse_size("2G", "--x").unwrap(), 2 << 30);
        assert_eq!(parse_size("7 B", "--x").unwrap(), 7);
        for bad in ["", "KiB", "10XB", "-1", "1.2.3", "99999999999999999999TB"] {
            let e = parse_size(bad, "--min-size").unwrap_err();
            assert_eq!(e.exit, 5, "{bad}");
            assert!(e.message.contains("--min-size"), "{}", e.message);
        }
    }

    #[test]
    fn times() {
        let now = DateTime::parse_from_rfc3339("2025-09-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |s| parse_time_at(s, "--after", now).unwrap().to_rfc3339();
        assert_eq!(at("2h"), "2025-09-24T10:00:00+00:00");
        assert_eq!(at("7d"), "2025-09-17T12:00:00+00:00");
        assert_eq!(at("30m"), "2025-09-24T11:30:00+00:00");
        assert_eq!(at("2025-01-02"), "2025-01-02T00:00:00+00:00");
        assert_eq!(at("2025-01-02T03:04:05+01:00"), "2025-01-02T02:04:05+00:00");
        assert_eq!(at("now"), now.to_rfc3339());
        for bad in [
            "",
            "yesterday",
            "2x",
            "h",
            "2025-13-01",
            "99999999999999999d",
        ] {
            assert!(parse_time_at(bad, "--after", now).is_err(), "{bad}");
        }
    }

    #[test]
    fn meta_pairs() {
        let m = parse_meta(
            &[
                "n=3".into(),
                "ok=true".into(),
                "model=gpt-4o".into(),
                "o={\"a\":1}".into(),
                "empty=".into(),
                "eq=a=b".into(),
            ],
            "--meta",
        )
        .unwrap();
        assert_eq!(m["n"], serde_json::json!(3));
        assert_eq!(m["ok"], serde_json::json!(true));
        assert_eq!(m["model"], serde_json::json!("gpt-4o"));
        assert_eq!(m["o"], serde_json::json!({"a": 1}));
        assert_eq!(m["empty"], serde_json::json!(""));
        assert_eq!(m["eq"], serde_json::json!("a=b"));
        assert_eq!(
            parse_meta(&["novalue".into()], "--meta").unwrap_err().exit,
            5
        );
        assert_eq!(parse_meta(&["=v".into()], "--meta").unwrap_err().exit, 5);
    }

    #[test]
    fn durations() {
        let d = |s| parse_duration(s, "--older-than").unwrap().as_secs();
        assert_eq!(d("90s"), 90);
        assert_eq!(d("15m"), 900);
        assert_eq!(d("15min"), 900);
        assert_eq!(d("2h"), 7200);
        assert_eq!(d("30d"), 30 * 86_400);
        assert_eq!(d("2w"), 14 * 86_400);
        assert_eq!(d("0d"), 0);
        assert_eq!(d(" 7d "), 7 * 86_400);
        // Combined units, which the hand-made parser refused.
        assert_eq!(d("1h30m"), 5400);
        assert_eq!(d("1h 30m"), 5400);
        assert_eq!(d("2w3d"), 17 * 86_400);
        assert_eq!(d("1d12h"), 36 * 3600);
        assert_eq!(d("1.5d"), 36 * 3600);
        assert_eq!(
            parse_duration("500ms", "--ttl").unwrap(),
            std::time::Duration::from_millis(500)
        );
        for bad in [
            "",
            "30",
            "d",
            "-1d",
            "+1d",
            "1.d",
            "3y",
            "2months",
            "1M",
            "3x",
            "soon",
            "99999999999999999999d",
            "100000000w",
        ] {
            let e = parse_duration(bad, "--older-than").unwrap_err();
            assert_eq!(e.exit, 5, "{bad}");
            assert!(e.message.contains("--older-than"), "{}", e.message);
            assert!(
                e.message.contains(&format!("{bad:?}")),
                "names the value: {}",
                e.message
            );
            assert!(e.message.contains("1h30m"), "gives examples: {}", e.message);
        }
    }

    #[test]
    fn ages_in_time_filters_use_the_same_durations() {
        let now = Utc::now();
        let t = |s| parse_time_at(s, "--since", now).unwrap();
        assert_eq!(t("1h30m"), now - Duration::minutes(90));
        assert_eq!(t("7d"), now - Duration::days(7));
        assert_eq!(t("15min"), now - Duration::minutes(15));
        assert_eq!(t("now"), now);
        for bad in ["3y", "yesterday", "-2h", "30"] {
            let e = parse_time_at(bad, "--since", now).unwrap_err();
            assert!(
                e.message.contains("--since") && e.message.contains(bad),
                "{}",
                e.message
            );
        }
    }
}
