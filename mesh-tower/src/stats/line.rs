//! One request's access log line: what is gathered when the request starts (time, method,
//! authority, path, the headers the formats name) and when its answer's head comes (cluster,
//! endpoint, peer), then written to each log of the chain when its stream ends. Allocation
//! happens only for requests that are logged.

use super::Outcome;
use super::filter::{Ended, LogFilter, kept};
use super::format::Values;
use super::log::AccessLog;
use super::write::{field, millis_into, push_addr, push_u64, rfc3339, rfc3339_into, wall_clock};
use mesh_core::cel::{Attribute, Attributes, Value};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;

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
    /// When the request started (the call's own clock reading; the wall-clock time is worked
    /// out when the line is written, see [`wall_clock`]).
    pub(crate) started: Instant,
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
    /// What each log of the sink's chain keeps of the request for its format and filter, in
    /// chain order; empty (no allocation, a smaller line) when no log has either.
    kept: Vec<Kept>,
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

/// What a log without format or filter keeps.
static NOTHING_KEPT: Kept = Kept {
    request: Vec::new(),
    response: Vec::new(),
    filter_request: Vec::new(),
    filter_response: Vec::new(),
    early: 0,
};

impl LogLine {
    /// A line for `req`, which started at `started`.
    pub(crate) fn start<B>(
        sink: &AccessLog,
        reporter: &'static str,
        req: &http::Request<B>,
        started: Instant,
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
        let kept = match sink
            .chain()
            .any(|l| l.format.is_some() || l.filter.is_some())
        {
            true => sink.chain().map(keep).collect(),
            false => Vec::new(),
        };
        let scheme = match req.uri().scheme() {
            Some(s) if *s == http::uri::Scheme::HTTPS => Some("https"),
            Some(s) if *s == http::uri::Scheme::HTTP => Some("http"),
            _ => None,
        };
        Box::new(LogLine {
            kept,
            scheme,
            remote: None,
            local: None,
            sink: sink.clone(),
            started,
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

    /// Keeps the response headers the formats and filters name, and decides the filters'
    /// metadata leaves on what the answer carries.
    pub(crate) fn response(&mut self, headers: &http::HeaderMap, extensions: &http::Extensions) {
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
                kept.early = f.at_answer(extensions, kept.early);
            }
        };
        for (log, kept) in self.sink.chain().zip(&mut self.kept) {
            keep(log, kept);
        }
    }

    /// Writes the request's line to each log of the chain, with its outcome (`traced`: its
    /// span was sampled).
    pub(crate) fn write(&self, outcome: Outcome, millis: f64, bytes: u64, traced: bool) {
        let end = (outcome, millis, bytes, traced);
        if self.kept.is_empty() {
            for log in self.sink.chain() {
                self.write_to(log, &NOTHING_KEPT, end);
            }
            return;
        }
        for (log, kept) in self.sink.chain().zip(&self.kept) {
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
                start_time: &rfc3339(wall_clock(self.started)),
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
            rfc3339_into(line, wall_clock(self.started));
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

/// A header's value (lossy UTF-8), if present.
fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
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
