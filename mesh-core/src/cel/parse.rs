//! CEL's grammar, by recursive descent, into a tree whose attribute paths are then resolved
//! (`request.headers['x']` becomes one [`Attribute`]), so evaluation never looks a name up.

use super::lex::{Tok, tokens};
use super::{Attribute, BinOp, Expr, Func, Value};
use crate::config::route::REGEX_SIZE_LIMIT;

/// Deepest nesting accepted: expressions come from the control plane, and recursion on
/// untrusted input must stay bounded.
const MAX_DEPTH: usize = 48;

/// Longest chain of one operator level (`a + b + …`) or of member accesses (`a.b[c]…`):
/// each link nests the tree one level deeper, which resolving and evaluating recurse into.
const MAX_CHAIN: usize = 128;

/// Most tokens in one expression (a filter is a line, not a program).
const MAX_TOKENS: usize = 1024;

/// The parse tree before names are resolved.
enum Node {
    Lit(Value<'static>),
    Ident(String),
    Select(Box<Node>, String),
    Index(Box<Node>, Box<Node>),
    Call(Option<Box<Node>>, String, Vec<Node>),
    List(Vec<Node>),
    Unary(&'static str, Box<Node>),
    Binary(&'static str, Box<Node>, Box<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    at: usize,
    depth: usize,
    len: usize,
}

pub(super) fn parse(src: &str) -> Result<Expr, String> {
    let toks = tokens(src)?;
    if toks.len() > MAX_TOKENS {
        return Err(format!("longer than {MAX_TOKENS} tokens"));
    }
    let mut p = Parser {
        toks,
        at: 0,
        depth: 0,
        len: src.len(),
    };
    let node = p.expr()?;
    if let Some((pos, t)) = p.toks.get(p.at) {
        return Err(format!("at {pos}: unexpected {}", show(t)));
    }
    resolve(node)
}

fn show(t: &Tok) -> String {
    match t {
        Tok::Lit(v) => format!("{v:?}"),
        Tok::Ident(i) => format!("{i:?}"),
        Tok::Punct(p) => format!("{p:?}"),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|(_, t)| t)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.at).map_or(self.len, |(p, _)| *p)
    }

    fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(q)) if *q == p) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, p: &str) -> Result<(), String> {
        match self.eat(p) {
            true => Ok(()),
            false => Err(match self.toks.get(self.at) {
                Some((pos, t)) => format!("at {pos}: expected {p:?}, found {}", show(t)),
                None => format!("at {}: expected {p:?}, found the end", self.len),
            }),
        }
    }

    fn expr(&mut self) -> Result<Node, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("at {}: nested deeper than {MAX_DEPTH}", self.pos()));
        }
        let cond = self.binary(0)?;
        let out = if self.eat("?") {
            let yes = self.binary(0)?;
            self.expect(":")?;
            let no = self.expr()?;
            Node::Cond(Box::new(cond), Box::new(yes), Box::new(no))
        } else {
            cond
        };
        self.depth -= 1;
        Ok(out)
    }

    /// Binary operators by precedence level (lowest first), all left-associative.
    fn binary(&mut self, level: usize) -> Result<Node, String> {
        const LEVELS: [&[&str]; 5] = [
            &["||"],
            &["&&"],
            &["==", "!=", "<", "<=", ">", ">=", "in"],
            &["+", "-"],
            &["*", "/", "%"],
        ];
        let Some(ops) = LEVELS.get(level) else {
            return self.unary();
        };
        let mut left = self.binary(level + 1)?;
        for _ in 0..MAX_CHAIN {
            let op = match self.peek() {
                Some(Tok::Punct(p)) if ops.contains(p) => *p,
                _ => return Ok(left),
            };
            self.at += 1;
            let right = self.binary(level + 1)?;
            left = Node::Binary(op, Box::new(left), Box::new(right));
        }
        Err(format!(
            "at {}: a chain longer than {MAX_CHAIN}",
            self.pos()
        ))
    }

    fn unary(&mut self) -> Result<Node, String> {
        for op in ["!", "-"] {
            if self.eat(op) {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(format!("at {}: nested deeper than {MAX_DEPTH}", self.pos()));
                }
                let inner = self.unary()?;
                self.depth -= 1;
                // A negative literal is one literal (so that i64::MIN can be written).
                return Ok(match (op, inner) {
                    ("-", Node::Lit(Value::Int(v))) => Node::Lit(Value::Int(-v)),
                    ("-", Node::Lit(Value::Uint(v))) if v == 1 << 63 => {
                        Node::Lit(Value::Int(i64::MIN))
                    }
                    ("-", Node::Lit(Value::Double(v))) => Node::Lit(Value::Double(-v)),
                    (op, inner) => Node::Unary(op, Box::new(inner)),
                });
            }
        }
        self.member()
    }

    fn member(&mut self) -> Result<Node, String> {
        let mut node = self.primary()?;
        for _ in 0..MAX_CHAIN {
            if self.eat(".") {
                let name = self.ident()?;
                node = match self.eat("(") {
                    true => Node::Call(Some(Box::new(node)), name, self.args(")")?),
                    false => Node::Select(Box::new(node), name),
                };
            } else if self.eat("[") {
                let index = self.expr()?;
                self.expect("]")?;
                node = Node::Index(Box::new(node), Box::new(index));
            } else {
                return Ok(node);
            }
        }
        Err(format!(
            "at {}: a chain longer than {MAX_CHAIN}",
            self.pos()
        ))
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.toks.get(self.at) {
            Some((_, Tok::Ident(name))) => {
                let name = name.clone();
                self.at += 1;
                Ok(name)
            }
            Some((pos, t)) => Err(format!("at {pos}: expected a name, found {}", show(t))),
            None => Err(format!("at {}: expected a name, found the end", self.len)),
        }
    }

    fn args(&mut self, close: &str) -> Result<Vec<Node>, String> {
        let mut args = Vec::new();
        if self.eat(close) {
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat(close) {
                return Ok(args);
            }
            self.expect(",")?;
            // A trailing comma is allowed in lists.
            if close == "]" && self.eat(close) {
                return Ok(args);
            }
        }
    }

    fn primary(&mut self) -> Result<Node, String> {
        let pos = self.pos();
        match self.toks.get(self.at).cloned() {
            Some((_, Tok::Lit(v))) => {
                self.at += 1;
                Ok(Node::Lit(v))
            }
            Some((_, Tok::Ident(name))) => {
                self.at += 1;
                match self.eat("(") {
                    true => Ok(Node::Call(None, name, self.args(")")?)),
                    false => Ok(Node::Ident(name)),
                }
            }
            Some((_, Tok::Punct("("))) => {
                self.at += 1;
                let inner = self.expr()?;
                self.expect(")")?;
                Ok(inner)
            }
            Some((_, Tok::Punct("["))) => {
                self.at += 1;
                Ok(Node::List(self.args("]")?))
            }
            Some((_, Tok::Punct("{"))) => Err(format!("at {pos}: map literals are not supported")),
            Some((_, t)) => Err(format!("at {pos}: unexpected {}", show(&t))),
            None => Err(format!("at {pos}: unexpected end")),
        }
    }
}

/// The dotted path a select chain spells (`request.headers`), if it is one.
fn path(node: &Node) -> Option<String> {
    match node {
        Node::Ident(name) => Some(name.clone()),
        Node::Select(inner, field) => Some(format!("{}.{field}", path(inner)?)),
        _ => None,
    }
}

/// The attribute `request.headers[<key>]` and the like name (header names folded to lower
/// case: HTTP's names are case-insensitive).
fn keyed(map: &str, key: &Node) -> Result<Attribute, String> {
    let Node::Lit(Value::Str(key)) = key else {
        return Err(format!("{map} can only be indexed by a string literal"));
    };
    let key = key.to_ascii_lowercase();
    match map {
        "request.headers" => Ok(Attribute::RequestHeader(key)),
        "response.headers" => Ok(Attribute::ResponseHeader(key)),
        _ => Err(format!("{map} is not a map the mesh provides")),
    }
}

fn resolve(node: Node) -> Result<Expr, String> {
    let boxed = |n: Node| resolve(n).map(Box::new);
    Ok(match node {
        Node::Lit(v) => Expr::Lit(v),
        n @ (Node::Ident(_) | Node::Select(..)) => {
            let name = path(&n).ok_or("a field selected from a value that has none")?;
            Expr::Attr(Attribute::named(&name).ok_or_else(|| match &n {
                Node::Select(inner, field)
                    if path(inner).is_some_and(|p| p.ends_with("headers")) =>
                {
                    format!(
                        "write {}['{field}'] for a header",
                        path(inner).unwrap_or_default()
                    )
                }
                _ => format!("{name} is not an attribute the mesh provides"),
            })?)
        }
        Node::Index(map, key) => {
            let map = path(&map).ok_or("only request.headers and response.headers are indexed")?;
            Expr::Attr(keyed(&map, &key)?)
        }
        Node::List(items) => Expr::List(items.into_iter().map(resolve).collect::<Result<_, _>>()?),
        Node::Unary(op, inner) => match op {
            "!" => Expr::Not(boxed(*inner)?),
            _ => Expr::Neg(boxed(*inner)?),
        },
        Node::Binary("in", key, map) if path(&map).is_some_and(|p| p.ends_with(".headers")) => {
            Expr::Present(keyed(&path(&map).unwrap_or_default(), &key)?)
        }
        Node::Binary(op, l, r) => {
            let (l, r) = (boxed(*l)?, boxed(*r)?);
            match op {
                "&&" => Expr::And(l, r),
                "||" => Expr::Or(l, r),
                _ => Expr::Bin(BinOp::of(op), l, r),
            }
        }
        Node::Cond(c, y, n) => Expr::Cond(boxed(*c)?, boxed(*y)?, boxed(*n)?),
        Node::Call(target, name, args) => call(target, &name, args)?,
    })
}

fn call(target: Option<Box<Node>>, name: &str, args: Vec<Node>) -> Result<Expr, String> {
    if name == "has" && target.is_none() {
        let [arg] = <[Node; 1]>::try_from(args).map_err(|_| "has() takes one field")?;
        let attr = match arg {
            Node::Select(map, key) if path(&map).is_some_and(|p| p.ends_with(".headers")) => keyed(
                &path(&map).unwrap_or_default(),
                &Node::Lit(Value::Str(key.into())),
            )?,
            n @ Node::Select(..) => {
                let name = path(&n).ok_or("has() takes a field")?;
                Attribute::named(&name)
                    .ok_or_else(|| format!("{name} is not an attribute the mesh provides"))?
            }
            _ => return Err("has() takes a field".into()),
        };
        return Ok(Expr::Present(attr));
    }
    const KNOWN: [&str; 10] = [
        "size",
        "startsWith",
        "endsWith",
        "contains",
        "int",
        "uint",
        "double",
        "string",
        "duration",
        "matches",
    ];
    if !KNOWN.contains(&name) {
        return Err(format!("function {name}() is not supported"));
    }
    // Receiver-style and global forms are the same function with the receiver first.
    let mut all: Vec<Expr> = target
        .map(|t| resolve(*t))
        .transpose()?
        .into_iter()
        .collect();
    let literal_pattern = match (name, args.first()) {
        ("matches", Some(Node::Lit(Value::Str(p)))) if all.len() == 1 => Some(p.to_string()),
        _ => None,
    };
    for a in args {
        all.push(resolve(a)?);
    }
    let (func, arity) = match name {
        "size" => (Func::Size, 1),
        "startsWith" => (Func::StartsWith, 2),
        "endsWith" => (Func::EndsWith, 2),
        "contains" => (Func::Contains, 2),
        "int" => (Func::Int, 1),
        "uint" => (Func::Uint, 1),
        "double" => (Func::Double, 1),
        "string" => (Func::String, 1),
        "duration" => (Func::Duration, 1),
        "matches" => {
            let pattern = match (literal_pattern, all.get(1)) {
                (Some(p), _) => p,
                (None, Some(Expr::Lit(Value::Str(p)))) => p.to_string(),
                _ => return Err("matches() needs a string literal pattern".into()),
            };
            let re = regex::RegexBuilder::new(&pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| format!("invalid regex {pattern:?}: {e}"))?;
            let target = all.into_iter().next().ok_or("matches() needs a string")?;
            return Ok(Expr::Matches(Box::new(target), re));
        }
        other => return Err(format!("function {other}() is not supported")),
    };
    if all.len() != arity {
        return Err(format!("{name}() takes {} argument(s)", arity));
    }
    if func == Func::Duration
        && let Some(Expr::Lit(Value::Str(s))) = all.first()
    {
        // A literal duration is parsed once, here, and refused here when malformed.
        return super::eval::duration(s).map(|d| Expr::Lit(Value::Duration(d)));
    }
    Ok(Expr::Call(func, all))
}
