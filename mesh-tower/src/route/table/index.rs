//! A virtual host's routes indexed by what they match, so a request meets only the routes
//! that could match it.
//!
//! Why: Envoy and gRPC scan a virtual host's routes in order, and Istio writes hundreds of
//! routes per virtual host; with a third of them regexes a request that falls through to the
//! last route paid ~21 µs at 1000 routes. The index keeps first-match-wins exactly (the answer
//! is the lowest-numbered route whose whole `RouteMatch` holds) but finds the candidates
//! without a scan:
//!
//! - exact and prefix paths (and `path_separated_prefix`) in a radix tree, one for
//!   case-sensitive keys and one for folded keys: walking the request's path once yields every
//!   route whose path could match, at most one list per tree node on the way;
//! - regex paths under their literal prefix in the case-sensitive tree (`/api/v[0-9]+/.*` is a
//!   candidate only for paths starting `/api/v`); those without one in one `RegexSet` (one
//!   pass over the path for all of them), or checked one by one when there are few;
//! - within a list, routes that require an exact value of one header (Istio's header routes,
//!   gRPC's `:path`-like splits) bucketed by that value.
//!
//! Each candidate list is sorted, so the search stops in a list at its first full match or
//! at the best found so far. Runtime fractions are drawn only for routes whose path matched,
//! as in a scan, though possibly for a route that a lower-numbered match later wins over;
//! the odds of every route stay as configured.

use super::{PathMatcher, RequestMatcher};
use crate::policy::headers::header_value;
use http::{HeaderMap, HeaderName};
use regex::RegexSet;
use std::cell::RefCell;
use std::collections::HashMap;

/// Below this many routes a plain scan is as fast as the index.
pub(in crate::route) const MIN_ROUTES: usize = 12;
/// Below this many regex routes each is checked on its own rather than through a set.
const MIN_SET: usize = 8;
/// A list gets header buckets when at least this many of its routes share one exact header.
const MIN_BUCKETED: usize = 6;

/// The index of one virtual host's routes (route numbers are their positions).
#[derive(Debug)]
pub(in crate::route) struct RouteIndex {
    sensitive: Radix,
    folded: Radix,
    regex: Regexes,
}

#[derive(Debug)]
enum Regexes {
    /// Checked in order by the full matcher.
    Few(Candidates),
    /// One pass over the path; `routes[i]` is the route of pattern `i`.
    Set { set: RegexSet, routes: Box<[u32]> },
}

impl RouteIndex {
    pub(in crate::route) fn new<'a>(
        matchers: impl IntoIterator<Item = &'a RequestMatcher>,
    ) -> Self {
        let (mut sensitive, mut folded) = (Builder::default(), Builder::default());
        let mut regexes: Vec<(u32, &str)> = Vec::new();
        let mut all = Vec::new();
        for (i, m) in matchers.into_iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            all.push(m);
            match &m.path {
                PathMatcher::Prefix(p, cs) | PathMatcher::Separated(p, cs) => {
                    let tree = if *cs { &mut sensitive } else { &mut folded };
                    let n = tree.insert(p.as_bytes());
                    tree.lists[n].0.push(i);
                }
                PathMatcher::Exact(p, cs) => {
                    let tree = if *cs { &mut sensitive } else { &mut folded };
                    let n = tree.insert(p.as_bytes());
                    tree.lists[n].1.push(i);
                }
                PathMatcher::Regex(re) => {
                    // A regex can only match paths starting with its literal prefix: it is a
                    // candidate there, as a prefix route is (the full match checks the rest).
                    let pattern = unanchored(re.as_str());
                    match literal_prefix(pattern) {
                        Some(p) if !p.is_empty() => {
                            let n = sensitive.insert(&p);
                            sensitive.lists[n].0.push(i);
                        }
                        _ => regexes.push((i, re.as_str())),
                    }
                }
            }
        }
        let regex = if regexes.len() < MIN_SET {
            Regexes::Few(Candidates::new(regexes.iter().map(|r| r.0).collect(), &all))
        } else {
            // The patterns are the routes' own anchored regexes; a set too big for the
            // regex crate's limits leaves them to be checked one by one.
            match regex::RegexSetBuilder::new(regexes.iter().map(|r| r.1))
                .size_limit(64 << 20)
                .dfa_size_limit(16 << 20)
                .build()
            {
                Ok(set) => Regexes::Set {
                    set,
                    routes: regexes.iter().map(|r| r.0).collect(),
                },
                Err(e) => {
                    tracing::debug!(error = %e, "regex set not built; regex routes checked one by one");
                    Regexes::Few(Candidates::new(regexes.iter().map(|r| r.0).collect(), &all))
                }
            }
        };
        Self {
            sensitive: sensitive.finish(&all),
            folded: folded.finish(&all),
            regex,
        }
    }

    /// The lowest-numbered route for which `full` (the route's whole match) holds.
    pub(in crate::route) fn find(
        &self,
        path: &str,
        headers: &HeaderMap,
        full: impl Fn(u32) -> bool,
    ) -> Option<u32> {
        let mut best = u32::MAX;
        let mut visit = |c: &Candidates| c.first(headers, &mut best, &full);
        self.sensitive.walk(path.as_bytes(), false, &mut visit);
        self.folded.walk(path.as_bytes(), true, &mut visit);
        match &self.regex {
            Regexes::Few(c) => visit(c),
            Regexes::Set { set, routes } => {
                // Only patterns of routes before the best so far can change the answer.
                if routes.first().is_some_and(|&r| r < best) {
                    MATCHED.with_borrow_mut(|matched| {
                        matched.clear();
                        matched.resize(routes.len(), false);
                        set.matches_read_at(matched, path, 0);
                        for (k, _) in matched.iter().enumerate().filter(|(_, m)| **m) {
                            let r = routes[k];
                            if r >= best {
                                break;
                            }
                            if full(r) {
                                best = r;
                                break;
                            }
                        }
                    });
                }
            }
        }
        (best != u32::MAX).then_some(best)
    }
}

/// The pattern inside the anchors `full_regex` adds.
fn unanchored(anchored: &str) -> &str {
    anchored
        .strip_prefix("^(?:")
        .and_then(|p| p.strip_suffix(")$"))
        .unwrap_or("")
}

/// The text every match of `pattern` starts with (`None`: the pattern may match in ways that
/// start otherwise, such as an alternation at the top level). Conservative: it stops at the
/// first construct that is not a plain character, and a character made optional or
/// repeatable by a quantifier after it is not part of the prefix.
fn literal_prefix(pattern: &str) -> Option<Vec<u8>> {
    let p = pattern.as_bytes();
    if top_level_alternation(p) {
        return None;
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < p.len() {
        let (c, width) = match p[i] {
            b'\\' => match p.get(i + 1) {
                Some(&c) if c.is_ascii_punctuation() => (c, 2),
                _ => break,
            },
            b'.' | b'(' | b')' | b'[' | b']' | b'|' | b'^' | b'$' => break,
            b'*' | b'+' | b'?' | b'{' => {
                // The character before is optional or repeated.
                out.pop();
                break;
            }
            c if c.is_ascii_graphic() => (c, 1),
            _ => break,
        };
        if matches!(p.get(i + width), Some(b'*' | b'?' | b'{')) {
            break;
        }
        out.push(c);
        i += width;
    }
    Some(out)
}

/// Whether `|` appears outside any group or class.
fn top_level_alternation(p: &[u8]) -> bool {
    let (mut depth, mut class, mut i) = (0usize, false, 0);
    while i < p.len() {
        match p[i] {
            b'\\' => i += 1,
            b'[' if !class => class = true,
            b']' if class => class = false,
            b'(' if !class => depth += 1,
            b')' if !class => depth = depth.saturating_sub(1),
            b'|' if !class && depth == 0 => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

thread_local! {
    /// The regex set's per-pattern results, reused across requests on a thread.
    static MATCHED: RefCell<Vec<bool>> = const { RefCell::new(Vec::new()) };
}

/// Route numbers in order, and optionally some of them bucketed by one header's exact value.
#[derive(Debug, Default)]
struct Candidates {
    plain: Box<[u32]>,
    by_header: Option<Box<Buckets>>,
}

/// Routes by the exact value they require of one header.
type Buckets = (HeaderName, HashMap<String, Box<[u32]>>);

impl Candidates {
    fn new(routes: Vec<u32>, all: &[&RequestMatcher]) -> Self {
        // The header most of these routes require an exact value of.
        let mut counts: HashMap<&HeaderName, usize> = HashMap::new();
        for &r in &routes {
            for h in all[r as usize].headers.iter().filter_map(|h| h.exact()) {
                *counts.entry(h.0).or_default() += 1;
            }
        }
        let top = counts
            .into_iter()
            .max_by_key(|(n, c)| (*c, n.as_str().to_owned()));
        let Some((name, _)) = top.filter(|(_, c)| *c >= MIN_BUCKETED) else {
            return Self {
                plain: routes.into(),
                by_header: None,
            };
        };
        let name = name.clone();
        let (mut plain, mut buckets) = (Vec::new(), HashMap::<String, Vec<u32>>::new());
        for r in routes {
            let value = all[r as usize]
                .headers
                .iter()
                .filter_map(|h| h.exact())
                .find(|(n, _)| **n == name)
                .map(|(_, v)| v);
            match value {
                Some(v) => buckets.entry(v.to_owned()).or_default().push(r),
                None => plain.push(r),
            }
        }
        let buckets = buckets.into_iter().map(|(v, l)| (v, l.into())).collect();
        Self {
            plain: plain.into(),
            by_header: Some(Box::new((name, buckets))),
        }
    }

    /// Lowers `best` to the first route of these below it whose full match holds.
    fn first(&self, headers: &HeaderMap, best: &mut u32, full: &impl Fn(u32) -> bool) {
        first_in(&self.plain, best, full);
        if let Some(b) = &self.by_header
            && let Some(value) = header_value(headers, &b.0)
            && let Some(list) = b.1.get(value.as_ref())
        {
            first_in(list, best, full);
        }
    }
}

fn first_in(list: &[u32], best: &mut u32, full: &impl Fn(u32) -> bool) {
    for &r in list {
        if r >= *best {
            return;
        }
        if full(r) {
            *best = r;
            return;
        }
    }
}

/// A radix tree of path keys; each node holds the routes whose prefix (`.0`) or exact path
/// (`.1`) ends there.
#[derive(Debug, Default)]
struct Radix {
    nodes: Box<[Node]>,
}

#[derive(Debug, Default)]
struct Node {
    /// The bytes from the parent to this node.
    label: Box<[u8]>,
    /// Children by the first byte of their label, sorted.
    children: Box<[(u8, u32)]>,
    prefix: Option<Box<Candidates>>,
    exact: Option<Box<Candidates>>,
}

impl Radix {
    /// Visits the candidate lists of every key that is a prefix of `path` (and, at the end,
    /// those whose exact key is `path`). `fold`: the keys are lowercase, compare folded.
    fn walk(&self, path: &[u8], fold: bool, visit: &mut impl FnMut(&Candidates)) {
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        let mut rest = path;
        loop {
            if let Some(c) = &node.prefix {
                visit(c);
            }
            let Some(&first) = rest.first() else {
                if let Some(c) = &node.exact {
                    visit(c);
                }
                return;
            };
            let first = if fold {
                first.to_ascii_lowercase()
            } else {
                first
            };
            let Ok(k) = node.children.binary_search_by_key(&first, |c| c.0) else {
                return;
            };
            let child = &self.nodes[node.children[k].1 as usize];
            let n = child.label.len();
            let same = rest.get(..n).is_some_and(|head| {
                if fold {
                    head.eq_ignore_ascii_case(&child.label)
                } else {
                    *head == *child.label
                }
            });
            if !same {
                return;
            }
            rest = &rest[n..];
            node = child;
        }
    }
}

/// A radix tree under construction.
#[derive(Debug)]
struct Builder {
    labels: Vec<Vec<u8>>,
    children: Vec<Vec<(u8, u32)>>,
    lists: Vec<(Vec<u32>, Vec<u32>)>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            labels: vec![Vec::new()],
            children: vec![Vec::new()],
            lists: vec![Default::default()],
        }
    }
}

impl Builder {
    fn push(&mut self, label: Vec<u8>) -> usize {
        self.labels.push(label);
        self.children.push(Vec::new());
        self.lists.push(Default::default());
        self.labels.len() - 1
    }

    /// The node for `key`, created (splitting an edge if needed).
    fn insert(&mut self, key: &[u8]) -> usize {
        let (mut node, mut rest) = (0, key);
        loop {
            let Some(&first) = rest.first() else {
                return node;
            };
            let found = self.children[node].iter().position(|c| c.0 == first);
            let Some(pos) = found else {
                let child = self.push(rest.to_vec());
                self.children[node].push((first, child as u32));
                return child;
            };
            let child = self.children[node][pos].1 as usize;
            let label = &self.labels[child];
            let common = label.iter().zip(rest).take_while(|(a, b)| a == b).count();
            if common < label.len() {
                // Split: node → mid (the common part) → child (the remainder).
                let tail = label[common..].to_vec();
                let mid = self.push(rest[..common].to_vec());
                self.children[node][pos].1 = mid as u32;
                self.children[mid].push((tail[0], child as u32));
                self.labels[child] = tail;
                node = mid;
            } else {
                node = child;
            }
            rest = &rest[common..];
        }
    }

    fn finish(self, all: &[&RequestMatcher]) -> Radix {
        if self.labels.len() == 1 && self.lists[0] == Default::default() {
            return Radix::default();
        }
        let list = |l: Vec<u32>| (!l.is_empty()).then(|| Box::new(Candidates::new(l, all)));
        let nodes = self
            .labels
            .into_iter()
            .zip(self.children)
            .zip(self.lists)
            .map(|((label, mut children), (prefix, exact))| {
                children.sort_unstable_by_key(|c| c.0);
                Node {
                    label: label.into(),
                    children: children.into(),
                    prefix: list(prefix),
                    exact: list(exact),
                }
            })
            .collect();
        Radix { nodes }
    }
}

#[cfg(test)]
mod tests;
