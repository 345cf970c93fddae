//! Access log filters, compiled: which requests a log writes.
//!
//! Why two moments: some filters ask about the request (a header, the sampling draw keyed
//! by `x-request-id`), the rest about how it ended (code, duration, flags, a CEL expression
//! over both). The request is gone when the stream ends, so the request-time leaves are
//! decided when the request starts and kept as bits, and a CEL expression's headers are
//! copied then; everything else is decided at the end from the record. Dynamic metadata (the
//! JWT filter's payloads) is known only inside the server's checks, so its leaves are decided
//! again when the answer brings it out.

use super::Outcome;
use crate::matcher::headers::{HeaderRule, compile_header};
use crate::matcher::metadata::{DynamicMetadata, LogMetadata};
use mesh_core::cel::{Attribute, Attributes, Program, Value};
use mesh_core::config::listener::{AccessLogFilter, Comparison, RuntimeFraction, http_to_grpc};
use mesh_core::policy::FractionalPercent;
use std::borrow::Cow;

/// Request-time leaves one log's filter may have (their results ride in a `u64`).
const MAX_EARLY: usize = 64;

/// A compiled filter.
#[derive(Debug)]
pub(crate) struct LogFilter {
    root: Node,
    /// The request-time leaves, in the order of their bits.
    early: Vec<Early>,
    /// Request and response headers CEL expressions read, in the order of their values.
    pub(crate) request_headers: Vec<String>,
    pub(crate) response_headers: Vec<String>,
}

#[derive(Debug)]
enum Node {
    Status(Comparison),
    Duration(Comparison),
    Flags(Vec<String>),
    Grpc(Vec<u16>, bool),
    Const(bool),
    Traceable,
    /// The request-time leaf with this bit.
    Early(u32),
    Cel(Box<Program>),
    And(Vec<Node>),
    Or(Vec<Node>),
}

#[derive(Debug)]
enum Early {
    Header(HeaderRule),
    Sample(RuntimeFraction),
    /// Decided as "not there" at the start, again when an answer carries dynamic metadata.
    Metadata(LogMetadata),
}

/// How a request ended, and what was kept of it, for the end-time leaves.
pub(crate) struct Ended<'a> {
    pub(crate) outcome: Outcome,
    pub(crate) millis: f64,
    pub(crate) bytes: u64,
    pub(crate) traced: bool,
    /// The request-time leaves' results.
    pub(crate) early: u64,
    /// Everything else CEL may read.
    pub(crate) attrs: &'a dyn Attributes,
}

impl LogFilter {
    /// `f` compiled, or why it cannot be evaluated.
    pub(crate) fn new(f: &AccessLogFilter) -> Result<Self, String> {
        let mut out = Self {
            root: Node::Const(true),
            early: Vec::new(),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
        };
        out.root = out.node(f)?;
        Ok(out)
    }

    fn node(&mut self, f: &AccessLogFilter) -> Result<Node, String> {
        Ok(match f {
            AccessLogFilter::StatusCode(c) => Node::Status(*c),
            AccessLogFilter::Duration(c) => Node::Duration(*c),
            AccessLogFilter::ResponseFlag(f) => Node::Flags(f.clone()),
            AccessLogFilter::GrpcStatus { statuses, exclude } => {
                Node::Grpc(statuses.clone(), *exclude)
            }
            AccessLogFilter::NotHealthCheck => Node::Const(true),
            AccessLogFilter::Traceable => Node::Traceable,
            AccessLogFilter::LogType { types, exclude } => {
                Node::Const(types.iter().any(|t| t == "DownstreamEnd") != *exclude)
            }
            AccessLogFilter::Header(h) => self.early(Early::Header(compile_header(h)?))?,
            AccessLogFilter::Runtime(r) => self.early(Early::Sample(r.clone()))?,
            AccessLogFilter::Metadata(m) => {
                self.early(Early::Metadata(LogMetadata::compile(m)?))?
            }
            AccessLogFilter::Cel(src) => {
                let program = Program::parse(src)?;
                for a in program.attributes() {
                    let (list, name) = match a {
                        Attribute::RequestHeader(h) => (&mut self.request_headers, h.as_str()),
                        Attribute::RequestId => (&mut self.request_headers, "x-request-id"),
                        Attribute::RequestReferer => (&mut self.request_headers, "referer"),
                        Attribute::RequestUserAgent => (&mut self.request_headers, "user-agent"),
                        Attribute::ResponseHeader(h) => (&mut self.response_headers, h.as_str()),
                        _ => continue,
                    };
                    if !list.iter().any(|n| n == name) {
                        list.push(name.to_owned());
                    }
                }
                Node::Cel(Box::new(program))
            }
            AccessLogFilter::And(fs) => {
                Node::And(fs.iter().map(|f| self.node(f)).collect::<Result<_, _>>()?)
            }
            AccessLogFilter::Or(fs) => {
                Node::Or(fs.iter().map(|f| self.node(f)).collect::<Result<_, _>>()?)
            }
        })
    }

    fn early(&mut self, leaf: Early) -> Result<Node, String> {
        if self.early.len() == MAX_EARLY {
            return Err(format!(
                "more than {MAX_EARLY} header and runtime filters in one log"
            ));
        }
        self.early.push(leaf);
        Ok(Node::Early(self.early.len() as u32 - 1))
    }

    /// The request-time leaves decided for `req`'s headers.
    pub(crate) fn at_start(&self, headers: &http::HeaderMap) -> u64 {
        let mut bits = 0;
        for (i, leaf) in self.early.iter().enumerate() {
            let hit = match leaf {
                Early::Header(rule) => rule.matches(headers),
                Early::Sample(r) => sampled(r, headers),
                Early::Metadata(m) => m.matches(None::<&DynamicMetadata>),
            };
            bits |= u64::from(hit) << i;
        }
        bits
    }

    /// `bits` with the metadata leaves decided again for the dynamic metadata an answer
    /// carries (the JWT filter's payloads, on a server).
    pub(crate) fn at_answer(&self, extensions: &http::Extensions, mut bits: u64) -> u64 {
        let Some(stored) = extensions.get::<DynamicMetadata>() else {
            return bits;
        };
        for (i, leaf) in self.early.iter().enumerate() {
            if let Early::Metadata(m) = leaf {
                bits = (bits & !(1 << i)) | (u64::from(m.matches(Some(stored))) << i);
            }
        }
        bits
    }

    /// Whether the request is written.
    pub(crate) fn passes(&self, end: &Ended<'_>) -> bool {
        self.root.passes(end)
    }
}

/// Envoy's runtime filter: the draw is the request's `x-request-id` hashed (so every process
/// on its path samples it alike) unless independent randomness is asked or there is none.
fn sampled(r: &RuntimeFraction, headers: &http::HeaderMap) -> bool {
    let FractionalPercent { numerator, .. } = r.percent_sampled;
    if numerator == 0 {
        return false;
    }
    let draw = match headers.get("x-request-id") {
        Some(id) if !r.use_independent_randomness => xxhash_rust::xxh64::xxh64(id.as_bytes(), 0),
        _ => fastrand::u64(..),
    };
    r.percent_sampled.hits(draw)
}

impl Node {
    fn passes(&self, end: &Ended<'_>) -> bool {
        let o = &end.outcome;
        match self {
            Node::Status(c) => c.holds(u64::from(o.code)),
            Node::Duration(c) => c.holds(end.millis as u64),
            Node::Flags(want) => {
                let flags = o.flags.as_str();
                let mut has = flags.split(',').filter(|f| !f.is_empty() && *f != "-");
                match want.is_empty() {
                    true => has.next().is_some(),
                    false => has.any(|f| want.iter().any(|w| w == f)),
                }
            }
            Node::Grpc(statuses, exclude) => {
                let status = o.grpc.unwrap_or_else(|| http_to_grpc(o.code));
                statuses.contains(&status) != *exclude
            }
            Node::Const(b) => *b,
            Node::Traceable => end.traced,
            Node::Early(bit) => end.early & (1 << bit) != 0,
            Node::Cel(p) => p.matches(&Facts(end)),
            Node::And(all) => all.iter().all(|n| n.passes(end)),
            Node::Or(any) => any.iter().any(|n| n.passes(end)),
        }
    }
}

/// What CEL reads: the end's numbers here, the rest from the line.
struct Facts<'a, 'b>(&'a Ended<'b>);

impl Attributes for Facts<'_, '_> {
    fn get(&self, a: &Attribute) -> Option<Value<'_>> {
        let end = self.0;
        match a {
            Attribute::ResponseCode => Some(Value::Int(i64::from(end.outcome.code))),
            Attribute::ResponseGrpcStatus => end.outcome.grpc.map(|g| Value::Int(i64::from(g))),
            Attribute::ResponseSize => Some(Value::Uint(end.bytes)),
            Attribute::RequestDuration => Some(Value::Duration((end.millis * 1e6) as i64)),
            a => end.attrs.get(a),
        }
    }
}

/// The value of the header `name` among `names`/`values` (kept when the request started).
pub(crate) fn kept<'a>(
    names: &[String],
    values: &'a [Option<String>],
    name: &str,
) -> Option<Value<'a>> {
    let i = names.iter().position(|n| n == name)?;
    let v = values.get(i)?.as_deref()?;
    Some(Value::Str(Cow::Borrowed(v)))
}
