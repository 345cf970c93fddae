//! Evaluation: CEL's semantics for the operators and functions the mesh supports.

use super::{Attributes, BinOp, Expr, Func, Value};
use std::borrow::Cow;
use std::cmp::Ordering;

type Out<'a> = Result<Value<'a>, String>;

/// A literal, borrowed from the program instead of copied.
fn borrow<'a>(v: &'a Value<'static>) -> Value<'a> {
    match v {
        Value::Str(s) => Value::Str(Cow::Borrowed(s)),
        Value::List(xs) => Value::List(xs.iter().map(borrow).collect()),
        other => other.clone(),
    }
}

fn kind(v: &Value<'_>) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Uint(_) => "uint",
        Value::Double(_) => "double",
        Value::Str(_) => "string",
        Value::Duration(_) => "duration",
        Value::List(_) => "list",
    }
}

impl Expr {
    pub(super) fn eval<'a>(&'a self, attrs: &'a dyn Attributes) -> Out<'a> {
        match self {
            Expr::Lit(v) => Ok(borrow(v)),
            Expr::Attr(a) => attrs.get(a).ok_or_else(|| format!("no value for {a:?}")),
            Expr::Present(a) => Ok(Value::Bool(attrs.get(a).is_some())),
            Expr::List(xs) => Ok(Value::List(
                xs.iter().map(|x| x.eval(attrs)).collect::<Result<_, _>>()?,
            )),
            Expr::Not(x) => match x.eval(attrs)? {
                Value::Bool(b) => Ok(Value::Bool(!b)),
                v => Err(format!("! of a {}", kind(&v))),
            },
            Expr::Neg(x) => match x.eval(attrs)? {
                Value::Int(i) => i.checked_neg().map(Value::Int).ok_or("overflow".into()),
                Value::Double(d) => Ok(Value::Double(-d)),
                Value::Duration(d) => d
                    .checked_neg()
                    .map(Value::Duration)
                    .ok_or("overflow".into()),
                v => Err(format!("- of a {}", kind(&v))),
            },
            // CEL's logic is commutative over errors: a definite answer on either side wins.
            Expr::And(a, b) => logic(a.eval(attrs), || b.eval(attrs), false),
            Expr::Or(a, b) => logic(a.eval(attrs), || b.eval(attrs), true),
            Expr::Cond(c, y, n) => match c.eval(attrs)? {
                Value::Bool(true) => y.eval(attrs),
                Value::Bool(false) => n.eval(attrs),
                v => Err(format!("a {} as a condition", kind(&v))),
            },
            Expr::Bin(op, a, b) => binary(*op, a.eval(attrs)?, b.eval(attrs)?),
            Expr::Matches(x, re) => match x.eval(attrs)? {
                Value::Str(s) => Ok(Value::Bool(re.is_match(&s))),
                v => Err(format!("matches() on a {}", kind(&v))),
            },
            Expr::Call(f, args) => {
                let mut vals = Vec::with_capacity(args.len());
                for a in args {
                    vals.push(a.eval(attrs)?);
                }
                call(*f, vals)
            }
        }
    }
}

/// `a && b` (`short` false) or `a || b` (`short` true).
fn logic<'a>(a: Out<'a>, b: impl FnOnce() -> Out<'a>, short: bool) -> Out<'a> {
    let a = match a {
        Ok(Value::Bool(x)) if x == short => return Ok(Value::Bool(short)),
        Ok(Value::Bool(_)) => Ok(()),
        Ok(v) => Err(format!("a {} in a logical operator", kind(&v))),
        Err(e) => Err(e),
    };
    match b() {
        Ok(Value::Bool(x)) if x == short => Ok(Value::Bool(short)),
        Ok(Value::Bool(x)) => a.map(|()| Value::Bool(x)),
        Ok(v) => a.and(Err(format!("a {} in a logical operator", kind(&v)))),
        Err(e) => a.and(Err(e)),
    }
}

/// Numbers of any kind compared by value (CEL's heterogeneous numeric ordering).
fn num_cmp(a: &Value<'_>, b: &Value<'_>) -> Option<Ordering> {
    use Value::*;
    match (a, b) {
        (Int(x), Int(y)) => Some(x.cmp(y)),
        (Uint(x), Uint(y)) => Some(x.cmp(y)),
        (Double(x), Double(y)) => x.partial_cmp(y),
        (Int(x), Uint(y)) => Some(if *x < 0 {
            Ordering::Less
        } else {
            (*x as u64).cmp(y)
        }),
        (Uint(_), Int(_)) => num_cmp(b, a).map(Ordering::reverse),
        (Int(x), Double(y)) => (*x as f64).partial_cmp(y),
        (Uint(x), Double(y)) => (*x as f64).partial_cmp(y),
        (Double(_), Int(_) | Uint(_)) => num_cmp(b, a).map(Ordering::reverse),
        _ => None,
    }
}

fn equal(a: &Value<'_>, b: &Value<'_>) -> bool {
    match (a, b) {
        (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b))
        }
        _ => match num_cmp(a, b) {
            Some(o) => o == Ordering::Equal,
            None => a == b,
        },
    }
}

fn order(a: &Value<'_>, b: &Value<'_>) -> Result<Ordering, String> {
    if let Some(o) = num_cmp(a, b) {
        return Ok(o);
    }
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Ok(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Ok(x.cmp(y)),
        (Value::Duration(x), Value::Duration(y)) => Ok(x.cmp(y)),
        _ => Err(format!("no ordering between {} and {}", kind(a), kind(b))),
    }
}

fn binary<'a>(op: BinOp, a: Value<'a>, b: Value<'a>) -> Out<'a> {
    use Value::*;
    let overflow = || "overflow".to_string();
    let cmp = |f: fn(Ordering) -> bool| order(&a, &b).map(|o| Bool(f(o)));
    match op {
        BinOp::Eq => Ok(Bool(equal(&a, &b))),
        BinOp::Ne => Ok(Bool(!equal(&a, &b))),
        BinOp::Lt => cmp(Ordering::is_lt),
        BinOp::Le => cmp(Ordering::is_le),
        BinOp::Gt => cmp(Ordering::is_gt),
        BinOp::Ge => cmp(Ordering::is_ge),
        BinOp::In => match &b {
            List(xs) => Ok(Bool(xs.iter().any(|x| equal(&a, x)))),
            other => Err(format!("in a {}", kind(other))),
        },
        _ => match (op, a, b) {
            (BinOp::Add, Int(x), Int(y)) => x.checked_add(y).map(Int).ok_or_else(overflow),
            (BinOp::Sub, Int(x), Int(y)) => x.checked_sub(y).map(Int).ok_or_else(overflow),
            (BinOp::Mul, Int(x), Int(y)) => x.checked_mul(y).map(Int).ok_or_else(overflow),
            (BinOp::Div, Int(x), Int(y)) => {
                x.checked_div(y).map(Int).ok_or("division by zero".into())
            }
            (BinOp::Rem, Int(x), Int(y)) => {
                x.checked_rem(y).map(Int).ok_or("modulus by zero".into())
            }
            (BinOp::Add, Uint(x), Uint(y)) => x.checked_add(y).map(Uint).ok_or_else(overflow),
            (BinOp::Sub, Uint(x), Uint(y)) => x.checked_sub(y).map(Uint).ok_or_else(overflow),
            (BinOp::Mul, Uint(x), Uint(y)) => x.checked_mul(y).map(Uint).ok_or_else(overflow),
            (BinOp::Div, Uint(x), Uint(y)) => {
                x.checked_div(y).map(Uint).ok_or("division by zero".into())
            }
            (BinOp::Rem, Uint(x), Uint(y)) => {
                x.checked_rem(y).map(Uint).ok_or("modulus by zero".into())
            }
            (BinOp::Add, Double(x), Double(y)) => Ok(Double(x + y)),
            (BinOp::Sub, Double(x), Double(y)) => Ok(Double(x - y)),
            (BinOp::Mul, Double(x), Double(y)) => Ok(Double(x * y)),
            (BinOp::Div, Double(x), Double(y)) => Ok(Double(x / y)),
            (BinOp::Add, Duration(x), Duration(y)) => {
                x.checked_add(y).map(Duration).ok_or_else(overflow)
            }
            (BinOp::Sub, Duration(x), Duration(y)) => {
                x.checked_sub(y).map(Duration).ok_or_else(overflow)
            }
            (BinOp::Add, Str(x), Str(y)) => Ok(Str(Cow::Owned(format!("{x}{y}")))),
            (BinOp::Add, List(mut x), List(y)) => {
                x.extend(y);
                Ok(List(x))
            }
            (op, a, b) => Err(format!("no {op:?} for {} and {}", kind(&a), kind(&b))),
        },
    }
}

fn call(f: Func, mut args: Vec<Value<'_>>) -> Out<'_> {
    use Value::*;
    let second = if args.len() == 2 { args.pop() } else { None };
    let first = args.pop().ok_or("missing argument")?;
    match (f, first, second) {
        (Func::Size, Str(s), None) => Ok(Int(s.chars().count() as i64)),
        (Func::Size, List(xs), None) => Ok(Int(xs.len() as i64)),
        (Func::StartsWith, Str(s), Some(Str(p))) => Ok(Bool(s.starts_with(&*p))),
        (Func::EndsWith, Str(s), Some(Str(p))) => Ok(Bool(s.ends_with(&*p))),
        (Func::Contains, Str(s), Some(Str(p))) => Ok(Bool(s.contains(&*p))),
        (Func::Int, v, None) => match v {
            Int(i) => Ok(Int(i)),
            Uint(u) => i64::try_from(u)
                .map(Int)
                .map_err(|_| "int() out of range".into()),
            Double(d)
                if d.is_finite()
                    && d > -9.223_372_036_854_776e18
                    && d < 9.223_372_036_854_776e18 =>
            {
                Ok(Int(d as i64))
            }
            Str(s) => s.parse().map(Int).map_err(|_| format!("int({s:?})")),
            Duration(n) => Ok(Int(n / 1_000_000_000)),
            v => Err(format!("int() of a {}", kind(&v))),
        },
        (Func::Uint, v, None) => match v {
            Uint(u) => Ok(Uint(u)),
            Int(i) => u64::try_from(i)
                .map(Uint)
                .map_err(|_| "uint() out of range".into()),
            Double(d) if (0.0..1.844_674_407_370_955_2e19).contains(&d) => Ok(Uint(d as u64)),
            Str(s) => s.parse().map(Uint).map_err(|_| format!("uint({s:?})")),
            v => Err(format!("uint() of a {}", kind(&v))),
        },
        (Func::Double, v, None) => match v {
            Double(d) => Ok(Double(d)),
            Int(i) => Ok(Double(i as f64)),
            Uint(u) => Ok(Double(u as f64)),
            Str(s) => s.parse().map(Double).map_err(|_| format!("double({s:?})")),
            v => Err(format!("double() of a {}", kind(&v))),
        },
        (Func::String, v, None) => Ok(Str(match v {
            Str(s) => s,
            Int(i) => i.to_string().into(),
            Uint(u) => u.to_string().into(),
            Double(d) => d.to_string().into(),
            Bool(b) => b.to_string().into(),
            Duration(n) => format!("{}s", n as f64 / 1e9).into(),
            v => return Err(format!("string() of a {}", kind(&v))),
        })),
        (Func::Duration, Str(s), None) => duration(&s).map(Duration),
        (Func::Duration, Duration(d), None) => Ok(Duration(d)),
        (f, a, b) => Err(format!(
            "no {f:?} for {}{}",
            kind(&a),
            b.map(|b| format!(", {}", kind(&b))).unwrap_or_default()
        )),
    }
}

/// A Go-style duration string (`1.5s`, `100ms`, `1h2m`, `-3us`) in nanoseconds.
pub(super) fn duration(s: &str) -> Result<i64, String> {
    let bad = || format!("bad duration {s:?}");
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "h" => 3.6e12,
            "m" => 6e10,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" => 1e3,
            "ns" => 1.0,
            _ => return Err(bad()),
        };
        total += value * unit;
        rest = &rest[u..];
    }
    if total >= 9.2e18 {
        return Err(bad());
    }
    Ok(if neg { -(total as i64) } else { total as i64 })
}
