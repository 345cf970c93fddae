//! Envoy's access log format strings (`%RESPONSE_CODE%`, `%REQ(:PATH)%`, …), as text lines or
//! as JSON objects whose values are format strings.
//!
//! Why: the people reading access logs already have Envoy's format in their tools and their
//! habits (Istio's `accessLogFormat` mesh setting is one), so the mesh takes the same strings
//! and prints the same fields the same way; the oracle test runs one format through Envoy and
//! through the mesh and compares the lines. A format is parsed once; a line is rendered when
//! its request ends, and only the request and response headers the format names are kept.

use std::fmt::Write as _;

/// A parsed access log format.
///
/// ```
/// use mesh_tower::telemetry::LogFormat;
/// let f = LogFormat::text("%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS%\n").unwrap();
/// # let _ = f;
/// assert!(LogFormat::text("%NO_SUCH_THING%").unwrap_err().contains("NO_SUCH_THING"));
/// let j = LogFormat::json(r#"{"code": "%RESPONSE_CODE%", "path": "%REQ(:PATH)%"}"#).unwrap();
/// # let _ = j;
/// ```
#[derive(Clone, Debug)]
pub struct LogFormat {
    kind: Kind,
    /// Request headers the format names (lowercase; `:method`, `:path`, `:authority` and
    /// `:scheme` too), in the order lines keep their values.
    pub(crate) request_headers: Vec<String>,
    /// Response headers likewise.
    pub(crate) response_headers: Vec<String>,
}

#[derive(Clone, Debug)]
enum Kind {
    Text(Vec<Piece>),
    Json(Vec<(String, Vec<Piece>)>),
}

#[derive(Clone, Debug)]
enum Piece {
    Literal(String),
    Command(Command, Option<usize>),
}

/// What a command prints.
#[derive(Clone, Debug)]
enum Command {
    StartTime,
    Duration,
    /// Request header (index into the line's values), with a fallback header.
    Req(usize, Option<usize>),
    Resp(usize, Option<usize>),
    Protocol,
    ResponseCode,
    ResponseFlags,
    GrpcStatus(GrpcStyle),
    BytesSent,
    UpstreamHost,
    UpstreamCluster,
    UpstreamPeerUriSan,
    DownstreamPeerUriSan,
    DownstreamRemote {
        port: bool,
    },
    DownstreamLocal {
        port: bool,
    },
    /// Known to Envoy, with nothing to say in-process: always `-`.
    Unknown,
}

#[derive(Clone, Copy, Debug)]
enum GrpcStyle {
    Camel,
    Snake,
    Number,
}

/// What a line is rendered from.
pub(crate) struct Values<'a> {
    pub(crate) start_time: &'a str,
    pub(crate) duration_ms: u64,
    pub(crate) request_headers: &'a [Option<String>],
    pub(crate) response_headers: &'a [Option<String>],
    pub(crate) protocol: &'a str,
    pub(crate) code: u16,
    pub(crate) flags: &'a str,
    pub(crate) grpc: Option<u16>,
    pub(crate) bytes_sent: u64,
    pub(crate) upstream_host: Option<std::net::SocketAddr>,
    pub(crate) upstream_cluster: Option<&'a str>,
    /// The other end's verified identity, and whether this is the client side.
    pub(crate) peer: Option<&'a str>,
    pub(crate) client_side: bool,
    pub(crate) remote: Option<std::net::SocketAddr>,
    pub(crate) local: Option<std::net::SocketAddr>,
}

impl LogFormat {
    /// A text format (Envoy's `text_format`): a line as the string says, commands replaced.
    /// Add the `\n` yourself, as in Envoy.
    pub fn text(format: &str) -> Result<Self, String> {
        let (mut req, mut resp) = (Vec::new(), Vec::new());
        let pieces = parse(format, &mut req, &mut resp)?;
        Ok(Self {
            kind: Kind::Text(pieces),
            request_headers: req,
            response_headers: resp,
        })
    }

    /// A JSON format (Envoy's `json_format`): an object whose string values are format
    /// strings; each line is that object, values replaced, on one line.
    pub fn json(format: &str) -> Result<Self, String> {
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(format).map_err(|e| format!("not a JSON object: {e}"))?;
        let (mut req, mut resp) = (Vec::new(), Vec::new());
        let mut fields = Vec::with_capacity(map.len());
        for (k, v) in map {
            let serde_json::Value::String(s) = v else {
                return Err(format!("{k:?}: only string values are supported"));
            };
            fields.push((k, parse(&s, &mut req, &mut resp)?));
        }
        Ok(Self {
            kind: Kind::Json(fields),
            request_headers: req,
            response_headers: resp,
        })
    }

    /// The line for `v`.
    pub(crate) fn render(&self, v: &Values<'_>) -> String {
        match &self.kind {
            Kind::Text(pieces) => {
                let mut out = String::with_capacity(128);
                for p in pieces {
                    piece(p, v, &mut out);
                }
                out
            }
            Kind::Json(fields) => {
                let mut map = serde_json::Map::with_capacity(fields.len());
                for (k, pieces) in fields {
                    let mut s = String::new();
                    let mut present = true;
                    for p in pieces {
                        present &= piece(p, v, &mut s);
                    }
                    // A lone command keeps its type where it has one (Envoy prints numbers as
                    // numbers); a value that is not there is null.
                    let value = match pieces.as_slice() {
                        [Piece::Command(..)] if !present => serde_json::Value::Null,
                        [Piece::Command(c, _)] if numeric(c) => s
                            .parse::<u64>()
                            .map_or(serde_json::Value::String(s), Into::into),
                        _ => serde_json::Value::String(s),
                    };
                    map.insert(k.clone(), value);
                }
                let mut line = serde_json::Value::Object(map).to_string();
                line.push('\n');
                line
            }
        }
    }
}

fn numeric(c: &Command) -> bool {
    matches!(
        c,
        Command::Duration
            | Command::ResponseCode
            | Command::BytesSent
            | Command::GrpcStatus(GrpcStyle::Number)
    )
}

/// Appends `p`; false when it is a command without a value (printed as `-`).
fn piece(p: &Piece, v: &Values<'_>, out: &mut String) -> bool {
    match p {
        Piece::Literal(s) => {
            out.push_str(s);
            true
        }
        Piece::Command(c, max) => {
            let start = out.len();
            let present = command(c, v, out);
            if let Some(max) = max
                && out.len() - start > *max
            {
                // Truncate on a character boundary at most `max` bytes in.
                let mut end = start + max;
                while !out.is_char_boundary(end) {
                    end -= 1;
                }
                out.truncate(end);
            }
            present
        }
    }
}

/// Appends `c`'s value, or `-` (returning false) when it has none.
fn command(c: &Command, v: &Values<'_>, out: &mut String) -> bool {
    fn show(out: &mut String, value: Option<impl std::fmt::Display>) -> bool {
        match value {
            Some(x) => {
                let _ = write!(out, "{x}");
                true
            }
            None => {
                out.push('-');
                false
            }
        }
    }
    let addr = |a: Option<std::net::SocketAddr>, port: bool| {
        a.map(|a| {
            if port {
                a.to_string()
            } else {
                a.ip().to_string()
            }
        })
    };
    match c {
        Command::StartTime => show(out, Some(v.start_time)),
        Command::Duration => show(out, Some(v.duration_ms)),
        Command::Req(i, alt) => show(out, header(v.request_headers, *i, *alt)),
        Command::Resp(i, alt) => show(out, header(v.response_headers, *i, *alt)),
        Command::Protocol => show(out, Some(v.protocol)),
        Command::ResponseCode => show(out, Some(v.code)),
        Command::ResponseFlags => show(out, Some(v.flags)),
        Command::GrpcStatus(style) => match (v.grpc, style) {
            (Some(n), GrpcStyle::Number) => show(out, Some(n)),
            (Some(n), GrpcStyle::Camel) => show(out, Some(grpc_name(n).0)),
            (Some(n), GrpcStyle::Snake) => show(out, Some(grpc_name(n).1)),
            (None, _) => show(out, None::<u16>),
        },
        Command::BytesSent => show(out, Some(v.bytes_sent)),
        Command::UpstreamHost => show(out, v.upstream_host),
        Command::UpstreamCluster => show(out, v.upstream_cluster),
        Command::UpstreamPeerUriSan => show(out, v.peer.filter(|_| v.client_side)),
        Command::DownstreamPeerUriSan => show(out, v.peer.filter(|_| !v.client_side)),
        Command::DownstreamRemote { port } => show(out, addr(v.remote, *port)),
        Command::DownstreamLocal { port } => show(out, addr(v.local, *port)),
        Command::Unknown => show(out, None::<&str>),
    }
}

fn header(values: &[Option<String>], i: usize, alt: Option<usize>) -> Option<&str> {
    let get = |i: usize| values.get(i).and_then(|v| v.as_deref());
    get(i).or_else(|| alt.and_then(get))
}

/// gRPC status names: Envoy's `CAMEL_STRING` and `SNAKE_STRING`.
fn grpc_name(n: u16) -> (&'static str, &'static str) {
    const NAMES: [(&str, &str); 17] = [
        ("OK", "OK"),
        ("Canceled", "CANCELLED"),
        ("Unknown", "UNKNOWN"),
        ("InvalidArgument", "INVALID_ARGUMENT"),
        ("DeadlineExceeded", "DEADLINE_EXCEEDED"),
        ("NotFound", "NOT_FOUND"),
        ("AlreadyExists", "ALREADY_EXISTS"),
        ("PermissionDenied", "PERMISSION_DENIED"),
        ("ResourceExhausted", "RESOURCE_EXHAUSTED"),
        ("FailedPrecondition", "FAILED_PRECONDITION"),
        ("Aborted", "ABORTED"),
        ("OutOfRange", "OUT_OF_RANGE"),
        ("Unimplemented", "UNIMPLEMENTED"),
        ("Internal", "INTERNAL"),
        ("Unavailable", "UNAVAILABLE"),
        ("DataLoss", "DATA_LOSS"),
        ("Unauthenticated", "UNAUTHENTICATED"),
    ];
    NAMES
        .get(usize::from(n))
        .copied()
        .unwrap_or(("InvalidCode", "InvalidCode"))
}

/// Parses one format string; header names go to `req`/`resp` (deduplicated).
fn parse(
    format: &str,
    req: &mut Vec<String>,
    resp: &mut Vec<String>,
) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = format;
    while let Some(at) = rest.find('%') {
        literal.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(r) = rest.strip_prefix('%') {
            literal.push('%');
            rest = r;
            continue;
        }
        // NAME, then an optional (ARG) (which may hold '%'), then an optional :N, then '%'.
        let unterminated = || {
            format!(
                "unterminated command at {:?}",
                &format[format.len() - rest.len() - 1..]
            )
        };
        let name_len = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .ok_or_else(unterminated)?;
        let name = &rest[..name_len];
        let mut tail = &rest[name_len..];
        let arg = match tail.strip_prefix('(') {
            Some(t) => {
                let close = t
                    .find(')')
                    .ok_or_else(|| format!("%{name}(%: missing ')'"))?;
                tail = &t[close + 1..];
                Some(&t[..close])
            }
            None => None,
        };
        let end = tail.find('%').ok_or_else(unterminated)?;
        let max = match &tail[..end] {
            "" => None,
            n => Some(
                n.strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| {
                        format!("%{name}%: the length after ':' must be a number, not {n:?}")
                    })?,
            ),
        };
        rest = &tail[end + 1..];
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal)));
        }
        pieces.push(Piece::Command(command_of(name, arg, req, resp)?, max));
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

fn command_of(
    name: &str,
    arg: Option<&str>,
    req: &mut Vec<String>,
    resp: &mut Vec<String>,
) -> Result<Command, String> {
    let no_arg = |c: Command| match arg {
        None => Ok(c),
        Some(a) => Err(format!("%{name}({a})%: {name} takes no argument")),
    };
    Ok(match name {
        "START_TIME" => match arg {
            None => Command::StartTime,
            Some(a) => {
                return Err(format!(
                    "%START_TIME({a})%: only the default format (RFC 3339, milliseconds) is supported"
                ));
            }
        },
        "DURATION" => no_arg(Command::Duration)?,
        "REQ" | "RESP" => {
            let list = if name == "REQ" { req } else { resp };
            let arg = arg.ok_or_else(|| format!("%{name}%: needs a header name, %{name}(X)%"))?;
            let (main, alt) = match arg.split_once('?') {
                Some((m, a)) => (m, Some(a)),
                None => (arg, None),
            };
            let pseudo = if name == "REQ" {
                &[":method", ":path", ":authority", ":scheme"][..]
            } else {
                &[][..]
            };
            let mut index = |h: &str| -> Result<usize, String> {
                let h = h.to_ascii_lowercase();
                if !pseudo.contains(&h.as_str())
                    && http::HeaderName::from_bytes(h.as_bytes()).is_err()
                {
                    return Err(format!("%{name}({arg})%: {h:?} is not a header name"));
                }
                Ok(match list.iter().position(|x| *x == h) {
                    Some(i) => i,
                    None => {
                        list.push(h);
                        list.len() - 1
                    }
                })
            };
            let main = index(main)?;
            let alt = alt.map(&mut index).transpose()?;
            if name == "REQ" {
                Command::Req(main, alt)
            } else {
                Command::Resp(main, alt)
            }
        }
        "PROTOCOL" => no_arg(Command::Protocol)?,
        "RESPONSE_CODE" => no_arg(Command::ResponseCode)?,
        "RESPONSE_FLAGS" => no_arg(Command::ResponseFlags)?,
        "GRPC_STATUS" => Command::GrpcStatus(match arg {
            None | Some("CAMEL_STRING") => GrpcStyle::Camel,
            Some("SNAKE_STRING") => GrpcStyle::Snake,
            Some("NUMBER") => GrpcStyle::Number,
            Some(a) => {
                return Err(format!(
                    "%GRPC_STATUS({a})%: one of CAMEL_STRING, SNAKE_STRING, NUMBER"
                ));
            }
        }),
        "GRPC_STATUS_NUMBER" => no_arg(Command::GrpcStatus(GrpcStyle::Number))?,
        "BYTES_SENT" => no_arg(Command::BytesSent)?,
        "UPSTREAM_HOST" => no_arg(Command::UpstreamHost)?,
        "UPSTREAM_CLUSTER" => no_arg(Command::UpstreamCluster)?,
        "UPSTREAM_PEER_URI_SAN" => no_arg(Command::UpstreamPeerUriSan)?,
        "DOWNSTREAM_PEER_URI_SAN" => no_arg(Command::DownstreamPeerUriSan)?,
        "DOWNSTREAM_REMOTE_ADDRESS" => no_arg(Command::DownstreamRemote { port: true })?,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => {
            no_arg(Command::DownstreamRemote { port: false })?
        }
        "DOWNSTREAM_LOCAL_ADDRESS" => no_arg(Command::DownstreamLocal { port: true })?,
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => {
            no_arg(Command::DownstreamLocal { port: false })?
        }
        // Envoy's, about things an in-process mesh does not have or does not track; Istio's
        // default format names them. They print "-".
        "BYTES_RECEIVED"
        | "RESPONSE_CODE_DETAILS"
        | "CONNECTION_TERMINATION_DETAILS"
        | "UPSTREAM_TRANSPORT_FAILURE_REASON"
        | "UPSTREAM_LOCAL_ADDRESS"
        | "REQUESTED_SERVER_NAME"
        | "ROUTE_NAME" => Command::Unknown,
        other => return Err(format!("%{other}%: unknown or unsupported command")),
    })
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
