//! Errors that name *where* a config is wrong.
//!
//! Every check in this crate reports a [`FieldPath`] such as
//! `route_configs[0].virtual_hosts[1].routes[2].match.headers[0].safe_regex`, because a user staring
//! at a rejected file (or a control-plane operator reading a NACK's `error_detail`) needs the exact
//! field, not just "invalid config". Validation collects every problem it finds rather than stopping
//! at the first, so one edit cycle can fix them all.

use std::fmt;

/// A dotted path to a field, with `[i]` for list indices: `clusters[3].connect_timeout`.
///
/// ```
/// use mesh_core::FieldPath;
/// let p = FieldPath::root().field("routes").index(2).field("match");
/// assert_eq!(p.to_string(), "routes[2].match");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(String);

impl FieldPath {
    /// The empty path (the document or resource itself).
    pub fn root() -> Self {
        Self(String::new())
    }

    /// A path starting at `name`.
    pub fn new(name: &str) -> Self {
        Self(name.to_owned())
    }

    /// This path extended by a field name.
    // Paths are built for every field a translation or validation visits (tens of thousands
    // for a large route config), so each is one allocation sized up front, not `format!`.
    pub fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            return Self(name.to_owned());
        }
        let mut out = String::with_capacity(self.0.len() + 1 + name.len());
        out.push_str(&self.0);
        out.push('.');
        out.push_str(name);
        Self(out)
    }

    /// This path extended by a list index.
    pub fn index(&self, i: usize) -> Self {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(self.0.len() + 8);
        out.push_str(&self.0);
        let _ = write!(out, "[{i}]");
        Self(out)
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One problem found in a config: the field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValidationError {
    /// Where the problem is.
    pub path: FieldPath,
    /// What is wrong, in words.
    pub message: String,
}

impl ValidationError {
    /// A new error at `path`.
    pub fn new(path: FieldPath, message: impl Into<String>) -> Self {
        Self {
            path,
            message: message.into(),
        }
    }
}

/// Why a config was rejected. A rejected config is never partly applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The document could not be parsed (syntax, unknown field, wrong type).
    #[error("parse error: {0}")]
    Parse(String),
    /// The document parsed but breaks one or more rules; every problem found is listed.
    #[error("{}", join(.0))]
    Invalid(Vec<ValidationError>),
}

impl ConfigError {
    /// The validation errors (empty for a parse error).
    pub fn errors(&self) -> &[ValidationError] {
        match self {
            ConfigError::Parse(_) => &[],
            ConfigError::Invalid(errors) => errors,
        }
    }
}

fn join(errors: &[ValidationError]) -> String {
    let mut out = String::new();
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(&e.to_string());
    }
    out
}

/// Collects validation errors while walking a config.
#[derive(Debug, Default)]
pub struct Errors(Vec<ValidationError>);

impl Errors {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem at `path`.
    pub fn push(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.0.push(ValidationError::new(path.clone(), message));
    }

    /// Records a problem at `path` unless `ok` holds.
    pub fn check(&mut self, ok: bool, path: &FieldPath, message: impl Into<String>) {
        if !ok {
            self.push(path, message);
        }
    }

    /// How many errors have been recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing was recorded, otherwise every recorded error.
    pub fn into_result(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FieldPath;

    #[test]
    fn paths_read_as_the_formatter_wrote_them() {
        for i in [0usize, 7, 10, 99, 1234, usize::MAX] {
            let p = FieldPath::root().field("routes").index(i).field("match");
            assert_eq!(p.as_str(), format!("routes[{i}].match"));
            assert_eq!(FieldPath::root().index(i).as_str(), format!("[{i}]"));
        }
        assert_eq!(FieldPath::new("a").field("b").as_str(), "a.b");
        assert_eq!(FieldPath::root().field("a").as_str(), "a");
    }
}
