//! The paths a rule can match at all, to skip a rule in one comparison.
//!
//! Why: Istio writes one policy per rule with `and_rules: [method, path]`-shaped permissions;
//! a request is tried against each rule in turn, and most rules fail on the path. A rule whose
//! every permission requires a path prefix (or exact path) carries that set; a request whose
//! path starts with none of them skips the rule without walking its matchers. The full match
//! still decides for requests that pass.

use super::Perm;
use crate::policy::headers::HeaderKind;

/// Path prefixes of which the path must start with one.
#[derive(Debug)]
pub(super) enum Paths {
    /// The common case, one packed prefix, kept inline in the rule (no pointer to follow):
    /// `(bits, mask, length)`.
    One(u128, u128, usize),
    Any(Box<[Prefix]>),
}

/// One required prefix. Case-sensitive ones of at most 16 bytes are also kept packed, so the
/// check is one masked compare against the path's [`Head`].
#[derive(Debug)]
pub(super) struct Prefix {
    text: Box<str>,
    /// `false`: compared case-insensitively (the text is folded).
    cs: bool,
    packed: Option<(u128, u128)>,
}

impl Prefix {
    fn new(text: &str, cs: bool) -> Self {
        let packed = (cs && text.len() <= 16).then(|| {
            let mut b = [0u8; 16];
            b[..text.len()].copy_from_slice(text.as_bytes());
            let mask = if text.len() == 16 {
                u128::MAX
            } else {
                (1u128 << (8 * text.len())) - 1
            };
            (u128::from_le_bytes(b), mask)
        });
        Self {
            text: text.into(),
            cs,
            packed,
        }
    }
}

/// A request path's first 16 bytes, packed (zero-padded), and its length: computed once per
/// request for every rule's check.
pub(super) struct Head {
    bits: u128,
    len: usize,
}

impl Head {
    pub(super) fn of(path: &str) -> Self {
        let mut b = [0u8; 16];
        let n = path.len().min(16);
        b[..n].copy_from_slice(&path.as_bytes()[..n]);
        Self {
            bits: u128::from_le_bytes(b),
            len: path.len(),
        }
    }
}

/// The prefixes one of which every path a rule with `permissions` matches starts with, or
/// `None` when some permission does not need any.
pub(super) fn required(permissions: &[Perm]) -> Option<Paths> {
    let mut out = Vec::new();
    for p in permissions {
        out.extend(of(p)?);
    }
    Some(match out.as_slice() {
        [
            Prefix {
                packed: Some((bits, mask)),
                text,
                ..
            },
        ] => Paths::One(*bits, *mask, text.len()),
        _ => Paths::Any(out.into()),
    })
}

fn of(p: &Perm) -> Option<Vec<Prefix>> {
    match p {
        Perm::Path(HeaderKind::Prefix(x, ic) | HeaderKind::Exact(x, ic)) => {
            Some(vec![Prefix::new(x, !ic)])
        }
        // The narrowest requirement among the parts.
        Perm::And(v) => v.iter().filter_map(of).min_by_key(Vec::len),
        Perm::Or(v) => {
            let mut all = Vec::new();
            for p in v {
                all.extend(of(p)?);
            }
            Some(all)
        }
        Perm::Never => Some(Vec::new()),
        _ => None,
    }
}

/// Whether `path` (whose head is `head`) starts with one of `paths`.
#[inline]
pub(super) fn admits(paths: &Paths, path: &str, head: &Head) -> bool {
    match paths {
        Paths::One(bits, mask, len) => head.len >= *len && head.bits & mask == *bits,
        Paths::Any(all) => all.iter().any(|p| match p.packed {
            Some((bits, mask)) => head.len >= p.text.len() && head.bits & mask == bits,
            None => path.as_bytes().get(..p.text.len()).is_some_and(|h| {
                if p.cs {
                    h == p.text.as_bytes()
                } else {
                    h.eq_ignore_ascii_case(p.text.as_bytes())
                }
            }),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::{Head, Paths, Perm, required};

    fn admits(paths: &Paths, path: &str) -> bool {
        super::admits(paths, path, &Head::of(path))
    }
    use crate::policy::headers::HeaderKind;

    fn prefix(p: &str) -> Perm {
        Perm::Path(HeaderKind::Prefix(p.into(), false))
    }

    #[test]
    fn a_rule_needs_a_path_only_when_every_permission_does() {
        let method = || Perm::Any;
        let and = Perm::And(vec![method(), prefix("/a/")]);
        let or = Perm::Or(vec![
            prefix("/b/"),
            Perm::Path(HeaderKind::Exact("/c".into(), true)),
        ]);
        let paths = required(&[and, or]).expect("every permission needs a path");
        assert!(admits(&paths, "/a/x") && admits(&paths, "/b/") && admits(&paths, "/C"));
        assert!(!admits(&paths, "/d") && !admits(&paths, "/a"));
        // Packed (up to 16 bytes) and long prefixes alike.
        let long = "/a/very/long/prefix/indeed/";
        let paths = required(&[prefix("/exactly16bytes/"), prefix(long)]).unwrap();
        assert!(matches!(paths, Paths::Any(_)));
        assert!(admits(&paths, "/exactly16bytes/x") && admits(&paths, &format!("{long}x")));
        assert!(!admits(&paths, "/exactly16bytes") && !admits(&paths, "/a/very/long/prefix/"));
        assert!(matches!(required(&[prefix("/one/")]), Some(Paths::One(..))));
        assert!(admits(&required(&[prefix("/one/")]).unwrap(), "/one/x"));
        assert!(!admits(&required(&[prefix("/one/")]).unwrap(), "/one"));
        // One permission without a path requirement: the rule may match any path.
        assert!(required(&[prefix("/a/"), Perm::Any]).is_none());
        assert!(required(&[Perm::Not(Box::new(prefix("/a/")))]).is_none());
        // Or with an unconstrained branch: no requirement.
        assert!(required(&[Perm::Or(vec![prefix("/a/"), Perm::Any])]).is_none());
        // No permission (or only `Never`): nothing matches.
        assert!(!admits(&required(&[]).unwrap(), "/"));
        assert!(!admits(&required(&[Perm::Never]).unwrap(), "/"));
    }
}
