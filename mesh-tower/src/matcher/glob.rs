//! Regexes of the shapes control planes write, matched without the regex engine.
//!
//! Why: Istio turns `namespaces: [foo]` into the principal regex `.*/ns/foo/.*`, and wildcard
//! principals, hosts and paths into `literal.*` or `.*literal`; they are evaluated on every
//! request an RBAC policy or a route sees. A regex call costs tens of nanoseconds of engine
//! overhead for what is a byte comparison. A pattern that is literal text and `.` (any
//! character but a newline), optionally with a leading and a trailing `.*`, is compared
//! directly; values where the shortcut would not be exact (non-ASCII, so `.` is one character
//! of several bytes, or with a newline) go to the regex, which is kept for them.

use regex::Regex;

/// A compiled shape: `.*`? (literal or `.`)* `.*`?
#[derive(Debug)]
pub(crate) struct Glob {
    head: bool,
    tail: bool,
    /// The pattern's length in characters (`.` is one).
    len: usize,
    /// Its literal runs and where each starts (the gaps are `.`s): compared as slices.
    runs: Box<[(usize, Box<[u8]>)]>,
    re: Regex,
}

impl Glob {
    /// The shape of `pattern` (the regex as written, without anchors), or `re` back when the
    /// pattern is anything else.
    pub(crate) fn new(pattern: &str, re: Regex) -> Result<Self, Regex> {
        let Some((head, tail, toks)) = shape(pattern.as_bytes()) else {
            return Err(re);
        };
        let mut runs: Vec<(usize, Vec<u8>)> = Vec::new();
        for (i, t) in toks.iter().enumerate() {
            match (t, runs.last_mut()) {
                (Some(b), Some((at, run))) if *at + run.len() == i => run.push(*b),
                (Some(b), _) => runs.push((i, vec![*b])),
                (None, _) => {}
            }
        }
        Ok(Self {
            head,
            tail,
            len: toks.len(),
            runs: runs.into_iter().map(|(at, r)| (at, r.into())).collect(),
            re,
        })
    }

    pub(crate) fn matches(&self, value: &str) -> bool {
        let v = value.as_bytes();
        if !v.is_ascii() || v.contains(&b'\n') {
            return self.re.is_match(value);
        }
        let n = self.len;
        let at = |start: usize| {
            self.runs
                .iter()
                .all(|(off, run)| v[start + off..start + off + run.len()] == **run)
        };
        match (self.head, self.tail) {
            (false, false) => v.len() == n && at(0),
            (false, true) => v.len() >= n && at(0),
            (true, false) => v.len() >= n && at(v.len() - n),
            (true, true) => v.len() >= n && (0..=v.len() - n).any(at),
        }
    }
}

/// `(leading .*, trailing .*, tokens)` when the pattern has the shape.
fn shape(mut p: &[u8]) -> Option<(bool, bool, Vec<Option<u8>>)> {
    let head = p.starts_with(b".*");
    if head {
        p = &p[2..];
    }
    let mut toks = Vec::with_capacity(p.len());
    let mut i = 0;
    let mut tail = false;
    while i < p.len() {
        match p[i] {
            b'.' if p.get(i + 1) == Some(&b'*') => {
                // Only as the very end.
                if i + 2 != p.len() {
                    return None;
                }
                tail = true;
                i += 2;
            }
            b'.' => {
                toks.push(None);
                i += 1;
            }
            b'\\' => {
                let c = *p.get(i + 1)?;
                // An escaped punctuation character is itself; `\d`, `\w`, `\b`… are classes.
                if !c.is_ascii_punctuation() {
                    return None;
                }
                toks.push(Some(c));
                i += 2;
            }
            b'*' | b'+' | b'?' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'|' | b'^' | b'$' => {
                return None;
            }
            c if c.is_ascii_graphic() || c == b' ' => {
                toks.push(Some(c));
                i += 1;
            }
            _ => return None,
        }
    }
    Some((head, tail, toks))
}

#[cfg(test)]
mod tests {
    use super::Glob;
    use crate::matcher::headers::full_regex;

    #[test]
    fn shapes_are_recognised_and_others_left_to_the_regex() {
        for (p, shaped) in [
            (".*/ns/foo/.*", true),
            ("spiffe://cluster.local/ns/x/sa/.*", true),
            (".*\\.example\\.com", true),
            ("exact", true),
            (".*", true),
            ("a.*b", false),
            ("a+", false),
            ("(?i)abc", false),
            ("\\d+", false),
            ("a|b", false),
            ("[a-z]", false),
            ("é.*", false),
        ] {
            assert_eq!(Glob::new(p, full_regex(p).unwrap()).is_ok(), shaped, "{p}");
        }
    }

    /// Every shaped pattern agrees with its regex, on values made to hit the edges.
    #[test]
    fn a_glob_matches_exactly_what_its_regex_matches() {
        const PATTERNS: &[&str] = &[
            ".*/ns/foo/.*",
            "spiffe://cluster.local/ns/x/sa/.*",
            ".*\\.example\\.com",
            "a.c",
            ".*",
            "",
            ".*a.*",
            "ab\\.",
            "..",
        ];
        const PARTS: &[&str] = &[
            "",
            "a",
            "b",
            "c",
            ".",
            "/ns/foo/",
            "spiffe://cluster.local/ns/x/sa/",
            "spiffe://clusterXlocal/ns/x/sa/",
            ".example.com",
            "xexample.com",
            "\n",
            "é",
            "ab.",
            "abc",
        ];
        let mut rng = fastrand::Rng::with_seed(11);
        for p in PATTERNS {
            let re = full_regex(p).unwrap();
            let glob = Glob::new(p, re.clone()).unwrap_or_else(|_| panic!("{p} has the shape"));
            for _ in 0..2000 {
                let v: String = (0..rng.usize(0..4))
                    .map(|_| PARTS[rng.usize(..PARTS.len())])
                    .collect();
                assert_eq!(glob.matches(&v), re.is_match(&v), "{p:?} on {v:?}");
            }
        }
    }
}
