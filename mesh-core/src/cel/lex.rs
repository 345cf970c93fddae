//! CEL's tokens: literals, identifiers, operators. Byte offsets ride along for errors.

use super::Value;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Lit(Value<'static>),
    Ident(String),
    /// `in`, `&&`, `==`, `(`, … (reserved words other than `in` and the literals are refused).
    Punct(&'static str),
}

const PUNCT: [&str; 23] = [
    "&&", "||", "==", "!=", "<=", ">=", "<", ">", "!", "(", ")", "[", "]", "{", "}", ".", ",", "?",
    ":", "+", "-", "*", "/",
];

/// Words CEL reserves for itself or for later; an identifier may not be one.
const RESERVED: [&str; 15] = [
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
];

/// `src` as tokens with their byte offsets.
pub(super) fn tokens(src: &str) -> Result<Vec<(usize, Tok)>, String> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if src[i..].starts_with("//") {
            i = src[i..].find('\n').map_or(b.len(), |n| i + n);
            continue;
        }
        let at = i;
        if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let (tok, len) = number(&src[i..]).map_err(|e| format!("at {at}: {e}"))?;
            out.push((at, tok));
            i += len;
            continue;
        }
        let raw = matches!(c, b'r' | b'R') && matches!(b.get(i + 1), Some(b'"' | b'\''));
        if c == b'"' || c == b'\'' || raw {
            let start = if raw { i + 1 } else { i };
            let (s, len) = string(&src[start..], raw).map_err(|e| format!("at {at}: {e}"))?;
            out.push((at, Tok::Lit(Value::Str(s.into()))));
            i = start + len;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let len = src[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(src.len() - i);
            let word = &src[i..i + len];
            out.push((
                at,
                match word {
                    "true" => Tok::Lit(Value::Bool(true)),
                    "false" => Tok::Lit(Value::Bool(false)),
                    "null" => Tok::Lit(Value::Null),
                    "in" => Tok::Punct("in"),
                    w if RESERVED.contains(&w) => {
                        return Err(format!("at {at}: {w:?} is a reserved word"));
                    }
                    w => Tok::Ident(w.to_owned()),
                },
            ));
            i += len;
            continue;
        }
        if c == b'%' {
            out.push((at, Tok::Punct("%")));
            i += 1;
            continue;
        }
        match PUNCT.iter().find(|p| src[i..].starts_with(**p)) {
            Some(p) => {
                out.push((at, Tok::Punct(p)));
                i += p.len();
            }
            None => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(format!("at {at}: unexpected {ch:?}"));
            }
        }
    }
    Ok(out)
}

/// A numeric literal at the start of `s`: `12`, `0x1F`, `12u`, `1.5`, `1e3`.
fn number(s: &str) -> Result<(Tok, usize), String> {
    let b = s.as_bytes();
    if s.starts_with("0x") || s.starts_with("0X") {
        let len = 2 + s[2..]
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(s.len() - 2);
        let digits = &s[2..len];
        let unsigned = matches!(b.get(len), Some(b'u' | b'U'));
        let v =
            u64::from_str_radix(digits, 16).map_err(|_| format!("bad number {:?}", &s[..len]))?;
        return Ok(match unsigned {
            true => (Tok::Lit(Value::Uint(v)), len + 1),
            false => (
                Tok::Lit(Value::Int(
                    i64::try_from(v).map_err(|_| "integer too large")?,
                )),
                len,
            ),
        });
    }
    let mut len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let mut float = false;
    if b.get(len) == Some(&b'.') && b.get(len + 1).is_some_and(u8::is_ascii_digit) {
        float = true;
        len += 1;
        len += s[len..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s.len() - len);
    }
    if matches!(b.get(len), Some(b'e' | b'E')) {
        let mut e = len + 1;
        if matches!(b.get(e), Some(b'+' | b'-')) {
            e += 1;
        }
        let digits = s[e..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s.len() - e);
        if digits > 0 {
            float = true;
            len = e + digits;
        }
    }
    let text = &s[..len];
    if float {
        let v: f64 = text.parse().map_err(|_| format!("bad number {text:?}"))?;
        return Ok((Tok::Lit(Value::Double(v)), len));
    }
    if matches!(b.get(len), Some(b'u' | b'U')) {
        let v: u64 = text.parse().map_err(|_| format!("bad number {text:?}"))?;
        return Ok((Tok::Lit(Value::Uint(v)), len + 1));
    }
    // `-9223372036854775808` lexes as `-` then this; the parser folds the sign.
    match text.parse::<i64>() {
        Ok(v) => Ok((Tok::Lit(Value::Int(v)), len)),
        Err(_) if text == "9223372036854775808" => Ok((Tok::Lit(Value::Uint(1 << 63)), len)),
        Err(_) => Err(format!("integer {text} too large")),
    }
}

/// A quoted string at the start of `s` (its quote first), with its length in bytes.
fn string(s: &str, raw: bool) -> Result<(String, usize), String> {
    let q = &s[..1];
    let triple = s[1..].starts_with(&q.repeat(2));
    let close = if triple { q.repeat(3) } else { q.to_owned() };
    let body = if triple { 3 } else { 1 };
    let mut out = String::new();
    let mut chars = s[body..].char_indices();
    while let Some((i, c)) = chars.next() {
        if s[body + i..].starts_with(&close) {
            return Ok((out, body + i + close.len()));
        }
        if c == '\n' && !triple {
            break;
        }
        if c != '\\' || raw {
            out.push(c);
            continue;
        }
        let (_, e) = chars.next().ok_or("unterminated string")?;
        let hex = |n: usize, chars: &mut std::str::CharIndices<'_>| -> Result<char, String> {
            let digits: String = chars.by_ref().take(n).map(|(_, c)| c).collect();
            u32::from_str_radix(&digits, 16)
                .ok()
                .filter(|_| digits.len() == n)
                .and_then(char::from_u32)
                .ok_or_else(|| format!("bad escape \\{e}{digits}"))
        };
        out.push(match e {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'a' => '\x07',
            'b' => '\x08',
            'f' => '\x0c',
            'v' => '\x0b',
            '\\' | '\'' | '"' | '`' | '?' => e,
            'x' | 'X' => hex(2, &mut chars)?,
            'u' => hex(4, &mut chars)?,
            'U' => hex(8, &mut chars)?,
            other => return Err(format!("bad escape \\{other}")),
        });
    }
    Err("unterminated string".into())
}
