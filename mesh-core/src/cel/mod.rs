//! Common Expression Language, the subset Envoy's access log filters use.
//!
//! Why here: Istio's Telemetry API turns `accessLogging.filter.expression` into Envoy's CEL
//! access log filter (`envoy.access_loggers.extension_filters.cel`), and users write the same
//! expressions in the mesh's YAML. An expression is parsed and its attribute names resolved
//! once, when config is validated (a bad one is refused with its position); evaluating it per
//! request walks a small tree without looking names up or allocating for the usual
//! comparisons.
//!
//! What is covered: literals (int, uint, double, string, bool, null, lists), `! - * / % + -`,
//! comparisons (numbers compare across int/uint/double by value, as CEL's heterogeneous
//! equality has it), `&& ||` with CEL's error absorption (`false && error` is `false`),
//! `?:`, `in` (lists, and header maps by a literal key), `has()`, and the functions `size`,
//! `startsWith`, `endsWith`, `contains`, `matches` (RE2 syntax, literal pattern), `int`,
//! `uint`, `double`, `string`, `duration`. The attributes are Envoy's names for what a request
//! log knows ([`Attribute`]). Not covered, refused when parsed: maps literals, macros other
//! than `has` (`all`, `exists`, `map`, `filter`), timestamps, and attributes the mesh does
//! not have. An evaluation error (a header that is absent, an overflow) makes the whole
//! expression false, as Envoy treats it. Expressions come from control planes, so their size
//! is bounded (1,024 tokens, nesting 48 deep, chains of 128 operators or member accesses):
//! parsing and evaluating recurse no deeper than that.
//!
//! ```
//! use mesh_core::cel::{Attribute, Program, Value};
//! let p = Program::parse("response.code >= 500 || request.headers['x-debug'] == 'on'").unwrap();
//! let ok = |a: &Attribute| match a {
//!     Attribute::ResponseCode => Some(Value::Int(200)),
//!     _ => None, // no x-debug header
//! };
//! assert!(!p.matches(&ok));
//! let failed = |a: &Attribute| match a {
//!     Attribute::ResponseCode => Some(Value::Int(503)),
//!     _ => None,
//! };
//! assert!(p.matches(&failed));
//! ```

mod eval;
mod lex;
mod parse;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

/// A CEL value. Strings borrow from the request where they can.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    /// `null`.
    Null,
    /// `true`/`false`.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// An unsigned 64-bit integer (`12u`).
    Uint(u64),
    /// A double.
    Double(f64),
    /// A string.
    Str(Cow<'a, str>),
    /// A duration, in nanoseconds (`duration('1.5s')`, `request.duration`).
    Duration(i64),
    /// A list.
    List(Vec<Value<'a>>),
}

/// What an expression can ask about a request: Envoy's attribute names (`request.path`, …).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Attribute {
    /// `request.path`: path and query.
    RequestPath,
    /// `request.url_path`: the path without the query.
    RequestUrlPath,
    /// `request.host`: the authority.
    RequestHost,
    /// `request.scheme`.
    RequestScheme,
    /// `request.method`.
    RequestMethod,
    /// `request.id`: `x-request-id`.
    RequestId,
    /// `request.referer`.
    RequestReferer,
    /// `request.useragent`.
    RequestUserAgent,
    /// `request.protocol`: `HTTP/1.1`, `HTTP/2`.
    RequestProtocol,
    /// `request.query`: the query without `?`.
    RequestQuery,
    /// `request.duration`: from the request's start to the end of its response.
    RequestDuration,
    /// `request.headers['name']` (name in lower case).
    RequestHeader(String),
    /// `response.code`.
    ResponseCode,
    /// `response.grpc_status`.
    ResponseGrpcStatus,
    /// `response.size`: the response body's bytes.
    ResponseSize,
    /// `response.headers['name']`.
    ResponseHeader(String),
    /// `source.address` (`ip:port` of the caller; servers).
    SourceAddress,
    /// `source.port`.
    SourcePort,
    /// `destination.address` (the address the caller reached; servers).
    DestinationAddress,
    /// `destination.port`.
    DestinationPort,
    /// `connection.mtls`: the other end presented a certificate that was verified.
    ConnectionMtls,
    /// `connection.uri_san_peer_certificate`: the other end's SPIFFE ID.
    ConnectionUriSanPeer,
    /// `upstream.address` (`ip:port` of the endpoint; clients).
    UpstreamAddress,
    /// `upstream.port`.
    UpstreamPort,
    /// `xds.cluster_name`: the upstream cluster.
    XdsClusterName,
}

impl Attribute {
    /// The attribute Envoy calls `name` (`request.url_path`), if the mesh provides it.
    pub fn named(name: &str) -> Option<Self> {
        use Attribute::*;
        Some(match name {
            "request.path" => RequestPath,
            "request.url_path" => RequestUrlPath,
            "request.host" => RequestHost,
            "request.scheme" => RequestScheme,
            "request.method" => RequestMethod,
            "request.id" => RequestId,
            "request.referer" => RequestReferer,
            "request.useragent" => RequestUserAgent,
            "request.protocol" => RequestProtocol,
            "request.query" => RequestQuery,
            "request.duration" => RequestDuration,
            "response.code" => ResponseCode,
            "response.grpc_status" => ResponseGrpcStatus,
            "response.size" => ResponseSize,
            "source.address" => SourceAddress,
            "source.port" => SourcePort,
            "destination.address" => DestinationAddress,
            "destination.port" => DestinationPort,
            "connection.mtls" => ConnectionMtls,
            "connection.uri_san_peer_certificate" => ConnectionUriSanPeer,
            "upstream.address" => UpstreamAddress,
            "upstream.port" => UpstreamPort,
            "xds.cluster_name" => XdsClusterName,
            _ => return None,
        })
    }
}

/// What an expression is evaluated against: the value of each attribute it names (`None`:
/// the request has none, an evaluation error where it is read). Closures implement it.
pub trait Attributes {
    /// The value of `a`.
    fn get(&self, a: &Attribute) -> Option<Value<'_>>;
}

impl<F: for<'a> Fn(&'a Attribute) -> Option<Value<'static>>> Attributes for F {
    fn get(&self, a: &Attribute) -> Option<Value<'_>> {
        self(a)
    }
}

/// A parsed expression, ready to evaluate.
#[derive(Clone, Debug)]
pub struct Program {
    expr: Expr,
    source: String,
}

impl PartialEq for Program {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Program {}

impl Program {
    /// Parses `src`, refusing what the mesh cannot evaluate (with the byte offset of a
    /// syntax error).
    pub fn parse(src: &str) -> Result<Self, String> {
        Ok(Self {
            expr: parse::parse(src)?,
            source: src.to_owned(),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The attributes the expression reads (headers among them), each once.
    pub fn attributes(&self) -> Vec<&Attribute> {
        let mut out = Vec::new();
        self.expr.visit(&mut |a| {
            if !out.contains(&a) {
                out.push(a);
            }
        });
        out
    }

    /// The expression's value against `attrs`, or why it has none.
    pub fn eval<'a>(&'a self, attrs: &'a dyn Attributes) -> Result<Value<'a>, String> {
        self.expr.eval(attrs)
    }

    /// Whether the expression is `true` against `attrs` (an error or any other value: not).
    pub fn matches(&self, attrs: &dyn Attributes) -> bool {
        matches!(self.eval(attrs), Ok(Value::Bool(true)))
    }
}

/// The resolved tree.
#[derive(Clone, Debug)]
enum Expr {
    Lit(Value<'static>),
    Attr(Attribute),
    /// `has(…)` / `'key' in request.headers`.
    Present(Attribute),
    List(Vec<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
    Matches(Box<Expr>, regex::Regex),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BinOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinOp {
    fn of(op: &str) -> Self {
        match op {
            "==" => Self::Eq,
            "!=" => Self::Ne,
            "<" => Self::Lt,
            "<=" => Self::Le,
            ">" => Self::Gt,
            ">=" => Self::Ge,
            "in" => Self::In,
            "+" => Self::Add,
            "-" => Self::Sub,
            "*" => Self::Mul,
            "/" => Self::Div,
            _ => Self::Rem,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Func {
    Size,
    StartsWith,
    EndsWith,
    Contains,
    Int,
    Uint,
    Double,
    String,
    Duration,
}

impl Expr {
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Attribute)) {
        match self {
            Expr::Lit(_) => {}
            Expr::Attr(a) | Expr::Present(a) => f(a),
            Expr::List(xs) | Expr::Call(_, xs) => xs.iter().for_each(|x| x.visit(f)),
            Expr::Not(x) | Expr::Neg(x) | Expr::Matches(x, _) => x.visit(f),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Bin(_, a, b) => {
                a.visit(f);
                b.visit(f);
            }
            Expr::Cond(a, b, c) => {
                a.visit(f);
                b.visit(f);
                c.visit(f);
            }
        }
    }
}
