//! One request's access log line: what is gathered when the request starts (time, method,
//! authority, path, the headers the formats name) and when its answer's head comes (cluster,
//! endpoint, peer), then written to each log of the chain when its stream ends. Allocation
//! happens only for requests that are logged.

use super::Outcome;
use super::filter::{Ended, LogFilter, kept};
use super::format::Values;
use super::log::AccessLog;
use mesh_core::cel::{Attribute, Attributes, Value};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// A request's authority, kept by reference count (the URI's, else the `Host` header's,
/// which is checked to be text when kept).
#[derive(Debug)]
pub(crate) enum Authority {
    Uri(http::uri::Authority),
    Host(http::HeaderValue),
}

impl Authority {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Authority::Uri(a) => a.as_str(),
            Authority::Host(h) => h.to_str().unwrap_or_default(),
        }
    }
}

/// A request's access log line, but for its outcome.
#[derive(Debug)]
pub(crate) struct LogLine {
    pub(crate) sink: AccessLog,
    pub(crate) start_time: SystemTime,
    /// `source` (a client's call) or `destination` (a server's request).
    pub(crate) reporter: &'static str,
    pub(crate) method: http::Method,
    pub(crate) authority: Option<Authority>,
    pub(crate) path: Option<http::uri::PathAndQuery>,
    pub(crate) protocol: http::Version,
    pub(crate) upstream_cluster: Option<Arc<str>>,
    pub(crate) upstream_host: Option<SocketAddr>,
    /// The other end's verified SPIFFE ID (the server's on a client, the caller's on a server).
    pub(crate) peer: Option<String>,
    /// The caller's and our address (servers).
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) local: Option<SocketAddr>,
    /// `http`/`https`, when the request's URI says.
    pub(crate) scheme: Option<&'static str>,
    /// What the first log keeps of the request for its format and filter.
    first: Kept,
    /// The same for each further log of the sink's chain (empty: one log, no allocation).
    more: Vec<Kept>,
}

/// The values of the headers a format or filter names, in its order.
type Headers = Vec<Option<String>>;

/// What one log keeps of a request: the values of the headers its format names (request ones
/// now, response ones at the answer), those its filter's CEL reads, and its filter's
/// request-time results.
#[derive(Debug, Default)]
struct Kept {
    request: Headers,
    response: Headers,
    filter_request: Headers,
    filter_response: Headers,
    early: u64,
}

impl LogLine {
    /// A line for `req`, starting now.
    pub(crate) fn start<B>(
        sink: &AccessLog,
        reporter: &'static str,
        req: &http::Request<B>,
    ) -> Box<Self> {
        let authority = match req.uri().authority() {
            Some(a) => Some(Authority::Uri(a.clone())),
            None => req
                .headers()
                .get(http::header::HOST)
                .filter(|h| h.to_str().is_ok())
                .map(|h| Authority::Host(h.clone())),
        };
        let keep = |log: &AccessLog| {
            let value = |h: &str| match h {
                ":method" => Some(req.method().as_str().to_owned()),
                ":path" => req.uri().path_and_query().map(|p| p.as_str().to_owned()),
                ":authority" => authority.as_ref().map(|a| a.as_str().to_owned()),
                ":scheme" => req.uri().scheme_str().map(str::to_owned),
                h => header(req.headers(), h),
            };
            let mut kept = Kept::default();
            if let Some(f) = &log.format {
                kept.request = f.request_headers.iter().map(|h| value(h)).collect();
            }
            if let Some(f) = &log.filter {
                kept.filter_request = f.request_headers.iter().map(|h| value(h)).collect();
                kept.early = f.at_start(req.headers());
            }
            kept
        };
        let first = keep(sink);
        let more = sink.chain().skip(1).map(keep).collect();
        let scheme = match req.uri().scheme() {
            Some(s) if *s == http::uri::Scheme::HTTPS => Some("https"),
            Some(s) if *s == http::uri::Scheme::HTTP => Some("http"),
            _ => None,
        };
        Box::new(LogLine {
            first,
            more,
            scheme,
            remote: None,
            local: None,
            sink: sink.clone(),
            start_time: SystemTime::now(),
            reporter,
            method: req.method().clone(),
            authority,
            path: req.uri().path_and_query().cloned(),
            protocol: req.version(),
            upstream_cluster: None,
            upstream_host: None,
            peer: None,
        })
    }

    /// Keeps the response headers the formats and filters name.
    pub(crate) fn response(&mut self, headers: &http::HeaderMap) {
        let keep = |log: &AccessLog, kept: &mut Kept| {
            if let Some(f) = &log.format {
                kept.response = f
                    .response_headers
                    .iter()
                    .map(|h| header(headers, h))
                    .collect();
            }
            if let Some(f) = &log.filter {
                kept.filter_response = (f.response_headers.iter())
                    .map(|h| header(headers, h))
                    .collect();
            }
        };
        keep(&self.sink, &mut self.first);
        for (log, kept) in self.sink.chain().skip(1).zip(&mut self.more) {
            keep(log, kept);
        }
    }

    /// Writes the request's line to each log of the chain, with its outcome (`traced`: its
    /// span was sampled).
    pub(crate) fn write(&self, outcome: Outcome, millis: f64, bytes: u64, traced: bool) {
        let end = (outcome, millis, bytes, traced);
        self.write_to(&self.sink, &self.first, end);
        for (log, kept) in self.sink.chain().skip(1).zip(&self.more) {
            self.write_to(log, kept, end);
        }
    }

    /// Writes the line to `sink`, with what it kept.
    fn write_to(
        &self,
        sink: &AccessLog,
        kept: &Kept,
        (outcome, millis, bytes, traced): (Outcome, f64, u64, bool),
    ) {
        if let Some(filter) = &sink.filter {
            let facts = LineFacts {
                line: self,
                kept,
                filter,
            };
            let end = Ended {
                outcome,
                millis,
                bytes,
                traced,
                early: kept.early,
                attrs: &facts,
            };
            if !filter.passes(&end) {
                return;
            }
        }
        let (request_headers, response_headers) = (&kept.request[..], &kept.response[..]);
        if let Some(format) = &sink.format {
            let protocol = match self.protocol {
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_11 => "HTTP/1.1",
                http::Version::HTTP_2 => "HTTP/2",
                http::Version::HTTP_3 => "HTTP/3",
                _ => "-",
            };
            let line = format.render(&Values {
                start_time: &rfc3339(self.start_time),
                duration_ms: millis as u64,
                request_headers,
                response_headers,
                protocol,
                code: outcome.code,
                flags: &outcome.flags.as_str(),
                grpc: outcome.grpc,
                bytes_sent: bytes,
                upstream_host: self.upstream_host,
                upstream_cluster: self.upstream_cluster.as_deref(),
                peer: self.peer.as_deref(),
                client_side: self.reporter == "source",
                remote: self.remote,
                local: self.local,
            });
            sink.write(&line);
            return;
        }
        // Written out by hand, keys sorted as before: building a `serde_json` map per line
        // cost more than the rest of the log.
        // One buffer per thread, reused: a line costs no allocation.
        thread_local!(static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(512)));
        LINE.with_borrow_mut(|line| {
            line.clear();
            line.push('{');
            field(
                line,
                "authority",
                self.authority.as_ref().map(Authority::as_str),
            );
            line.push_str(",\"duration_ms\":");
            millis_into(line, millis);
            match outcome.grpc {
                Some(g) => {
                    line.push_str(",\"grpc_status\":");
                    push_u64(line, u64::from(g));
                }
                None => line.push_str(",\"grpc_status\":null"),
            }
            line.push(',');
            field(line, "method", Some(self.method.as_str()));
            line.push(',');
            field(line, "path", self.path.as_ref().map(|p| p.as_str()));
            line.push(',');
            field(line, "peer_identity", self.peer.as_deref());
            line.push(',');
            field(line, "protocol", Some(protocol_name(self.protocol)));
            line.push(',');
            field(line, "reporter", Some(self.reporter));
            line.push_str(",\"response_bytes\":");
            push_u64(line, bytes);
            line.push_str(",\"response_code\":");
            push_u64(line, u64::from(outcome.code));
            line.push(',');
            field(line, "response_flags", Some(&outcome.flags.as_str()));
            line.push_str(",\"start_time\":\"");
            rfc3339_into(line, self.start_time);
            line.push_str("\",");
            field(line, "upstream_cluster", self.upstream_cluster.as_deref());
            match self.upstream_host {
                Some(h) => {
                    line.push_str(",\"upstream_host\":\"");
                    push_addr(line, h);
                    line.push('"');
                }
                None => line.push_str(",\"upstream_host\":null"),
            }
            line.push_str("}\n");
            sink.write(line);
        });
    }
}

/// `millis` rounded to the microsecond, as the shortest decimal (`12.0`, `0.25`, `3.125`):
/// what formatting the rounded float printed, without the float formatter.
fn millis_into(line: &mut String, millis: f64) {
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

/// What a CEL filter reads of a line (the end's numbers come from [`Ended`]).
struct LineFacts<'a> {
    line: &'a LogLine,
    kept: &'a Kept,
    filter: &'a LogFilter,
}

impl Attributes for LineFacts<'_> {
    fn get(&self, a: &Attribute) -> Option<Value<'_>> {
        let (l, k, f) = (self.line, self.kept, self.filter);
        fn text(s: &str) -> Option<Value<'_>> {
            Some(Value::Str(Cow::Borrowed(s)))
        }
        let request = |h: &str| kept(&f.request_headers, &k.filter_request, h);
        let addr = |a: Option<SocketAddr>| a.map(|a| Value::Str(Cow::Owned(a.to_string())));
        let port = |a: Option<SocketAddr>| a.map(|a| Value::Int(i64::from(a.port())));
        match a {
            Attribute::RequestPath => l.path.as_ref().and_then(|p| text(p.as_str())),
            Attribute::RequestUrlPath => l.path.as_ref().and_then(|p| text(p.path())),
            Attribute::RequestQuery => text(l.path.as_ref().and_then(|p| p.query()).unwrap_or("")),
            Attribute::RequestHost => l.authority.as_ref().and_then(|a| text(a.as_str())),
            Attribute::RequestScheme => l.scheme.and_then(text),
            Attribute::RequestMethod => text(l.method.as_str()),
            Attribute::RequestProtocol => text(protocol_name(l.protocol)),
            Attribute::RequestId => request("x-request-id"),
            Attribute::RequestReferer => request("referer"),
            Attribute::RequestUserAgent => request("user-agent"),
            Attribute::RequestHeader(h) => request(h),
            Attribute::ResponseHeader(h) => kept(&f.response_headers, &k.filter_response, h),
            Attribute::SourceAddress => addr(l.remote),
            Attribute::SourcePort => port(l.remote),
            Attribute::DestinationAddress => addr(l.local),
            Attribute::DestinationPort => port(l.local),
            Attribute::ConnectionMtls => Some(Value::Bool(l.peer.is_some())),
            Attribute::ConnectionUriSanPeer => l.peer.as_deref().and_then(text),
            Attribute::UpstreamAddress => addr(l.upstream_host),
            Attribute::UpstreamPort => port(l.upstream_host),
            Attribute::XdsClusterName => l.upstream_cluster.as_deref().and_then(text),
            _ => None,
        }
    }
}

/// `"key":value` with `value` a JSON string (escaped) or `null`.
fn field(line: &mut String, key: &str, value: Option<&str>) {
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
    while let Some(at) = (rest.bytes()).position(|b| b == b'"' || b == b'\\' || b < 0x20) {
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

/// A header's value (lossy UTF-8), if present.
fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
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
fn push_addr(out: &mut String, addr: SocketAddr) {
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

/// HTTP's version as the log names it (`HTTP/1.1`, `HTTP/2.0`).
fn protocol_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP",
    }
}

#[cfg(test)]
mod tests {
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
