//! The access log's JSON line written by hand: strings escaped by runs, numbers, addresses,
//! durations and times without `core::fmt` (each line is on a request's path; building it
//! through `serde_json` or `format!` cost more than the rest of the log).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// The wall-clock time of `at`, from a pair of readings (monotonic and wall clock) taken at
/// most a second before `at`, per thread: a line's start time costs no clock read of its own.
/// The monotonic clock is Tokio's, as the calls' own, so tests with paused time see the
/// durations they advanced. Within that second the wall clock is taken to advance as the
/// monotonic one does: a step of the system clock shows in lines from the next second on.
pub(crate) fn wall_clock(at: Instant) -> SystemTime {
    use std::cell::Cell;
    thread_local!(static ANCHOR: Cell<Option<(Instant, SystemTime)>> = const { Cell::new(None) });
    ANCHOR.with(|anchor| {
        let (mono, wall) = match anchor.get() {
            Some((mono, wall)) if at >= mono && at - mono < Duration::from_secs(1) => (mono, wall),
            _ => {
                let now = (Instant::now(), SystemTime::now());
                anchor.set(Some(now));
                now
            }
        };
        match at.checked_duration_since(mono) {
            Some(after) => wall + after,
            None => wall - mono.duration_since(at),
        }
    })
}

/// `millis` rounded to the microsecond, as the shortest decimal (`12.0`, `0.25`, `3.125`):
/// what formatting the rounded float printed, without the float formatter.
pub(super) fn millis_into(line: &mut String, millis: f64) {
    use std::fmt::Write as _;
    let micros = (millis * 1000.0).round().max(0.0) as u64;
    push_u64(line, micros / 1000);
    line.push('.');
    let frac = micros % 1000;
    match (frac.is_multiple_of(10), frac.is_multiple_of(100)) {
        (_, true) => line.push(char::from(b'0' + (frac / 100) as u8)),
        (true, false) => {
            let _ = write!(line, "{:02}", frac / 10);
        }
        (false, _) => {
            let _ = write!(line, "{frac:03}");
        }
    }
}

/// The bytes a JSON string escapes: `"`, `\` and control characters.
static ESCAPED: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// `"key":value` with `value` a JSON string (escaped) or `null`.
pub(super) fn field(line: &mut String, key: &str, value: Option<&str>) {
    line.push('"');
    line.push_str(key);
    line.push_str("\":");
    let Some(v) = value else {
        line.push_str("null");
        return;
    };
    line.push('"');
    // Runs that need no escaping are copied whole; what needs it is ASCII, so bytes are
    // searched (a multi-byte character's bytes are all >= 0x80).
    let mut rest = v;
    while let Some(at) = (rest.bytes()).position(|b| ESCAPED[usize::from(b)]) {
        line.push_str(&rest[..at]);
        match rest.as_bytes()[at] {
            b'"' => line.push_str("\\\""),
            b'\\' => line.push_str("\\\\"),
            b'\n' => line.push_str("\\n"),
            b'\r' => line.push_str("\\r"),
            b'\t' => line.push_str("\\t"),
            c => {
                line.push_str("\\u00");
                for nibble in [c >> 4, c & 0xf] {
                    line.push(char::from(b"0123456789abcdef"[usize::from(nibble)]));
                }
            }
        }
        rest = &rest[at + 1..];
    }
    line.push_str(rest);
    line.push('"');
}

/// `2026-12-02T03:04:05.678Z` (UTC, milliseconds), without a date crate: days since the
/// epoch to a civil date (Howard Hinnant's algorithm).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let mut out = String::with_capacity(24);
    rfc3339_into(&mut out, t);
    out
}

/// [`rfc3339`] appended to `out`. The civil date and time of day are worked out once per
/// second (per thread) and reused: a busy log asks for the same second thousands of times.
pub(crate) fn rfc3339_into(out: &mut String, t: SystemTime) {
    use std::cell::RefCell;
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            text.clear();
            civil(text, secs);
            *cached = secs;
        }
        out.push_str(text);
    });
    let ms = since.subsec_millis();
    out.push('.');
    for d in [ms / 100, ms / 10 % 10, ms % 10] {
        out.push(char::from(b'0' + d as u8));
    }
    out.push('Z');
}

/// `n` in decimal, without `core::fmt` (the line is on every request's path).
pub(crate) fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

/// `addr` as `Display` writes it; IPv4 without `core::fmt`.
pub(super) fn push_addr(out: &mut String, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_u64(out, u64::from(octet));
            }
            out.push(':');
            push_u64(out, u64::from(v4.port()));
        }
        v6 => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` since the epoch (UTC), without a date crate: days since
/// the epoch to a civil date (Howard Hinnant's algorithm).
fn civil(out: &mut String, secs: u64) {
    use std::fmt::Write as _;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn wall_clock_of_a_reading_is_the_system_time_then() {
        use std::time::{Duration, SystemTime};
        use tokio::time::Instant;
        let close = |a: SystemTime, b: SystemTime| {
            let d = a.duration_since(b).unwrap_or_else(|e| e.duration());
            d < Duration::from_millis(50)
        };
        let (mono, wall) = (Instant::now(), SystemTime::now());
        assert!(close(super::wall_clock(mono), wall));
        // A reading before the anchor, and one past its second (a fresh anchor).
        let earlier = mono.checked_sub(Duration::from_secs(5)).unwrap();
        assert!(close(
            super::wall_clock(earlier),
            wall - Duration::from_secs(5)
        ));
        let later = mono + Duration::from_secs(3);
        assert!(close(
            super::wall_clock(later),
            wall + Duration::from_secs(3)
        ));
        assert!(close(super::wall_clock(mono), wall));
    }

    #[test]
    fn json_fields_are_escaped_as_json_requires() {
        let mut line = String::from("{");
        super::field(&mut line, "a", Some("say \"hi\"\\\n\u{1}é"));
        line.push(',');
        super::field(&mut line, "b", None);
        line.push('}');
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["a"], "say \"hi\"\\\n\u{1}é");
        assert!(v["b"].is_null());
    }

    #[test]
    fn durations_print_as_the_rounded_float_did() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut values = vec![
            0.0, 0.0004, 0.0005, 0.001, 0.01, 0.1, 1.0, 12.0, 0.25, 3.125, 99.999_5,
        ];
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            values.push((seed % 100_000_000) as f64 / 1e5);
        }
        for ms in values {
            let mut ours = String::new();
            super::millis_into(&mut ours, ms);
            assert_eq!(
                ours,
                format!("{:?}", (ms * 1000.0).round() / 1000.0),
                "{ms}"
            );
        }
    }

    #[test]
    fn numbers_and_addresses_print_as_display_does() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..10_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = seed >> (seed % 64);
            let mut out = String::new();
            super::push_u64(&mut out, n);
            assert_eq!(out, n.to_string());
            let addr =
                std::net::SocketAddr::from(((seed as u32).to_be_bytes(), (seed >> 32) as u16));
            let mut out = String::new();
            super::push_addr(&mut out, addr);
            assert_eq!(out, addr.to_string());
        }
        let mut out = String::new();
        super::push_u64(&mut out, 0);
        assert_eq!(out, "0");
        let v6: std::net::SocketAddr = "[::1]:80".parse().unwrap();
        super::push_addr(&mut out, v6);
        assert_eq!(out, "0[::1]:80");
    }
}
