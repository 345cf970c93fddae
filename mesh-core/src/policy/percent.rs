//! Envoy's percentage types: `Percent` (a double in `[0, 100]`) and `FractionalPercent`
//! (numerator over a fixed denominator).

use crate::error::{Errors, FieldPath};
use serde::{Deserialize, Serialize};

/// Envoy's `type.v3.Percent`: a value in `[0, 100]`.
///
/// Compared by bits so config types stay `Eq` (a config is never NaN: validation refuses it).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Percent {
    /// The percentage.
    pub value: f64,
}

impl PartialEq for Percent {
    fn eq(&self, other: &Self) -> bool {
        self.value.to_bits() == other.value.to_bits()
    }
}

impl Eq for Percent {}

impl Percent {
    /// `value` percent.
    pub fn new(value: f64) -> Self {
        Self { value }
    }

    pub(crate) fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        errors.check(
            (0.0..=100.0).contains(&self.value),
            &path.field("value"),
            "must be between 0 and 100",
        );
    }
}

/// Envoy's `FractionalPercent.DenominatorType`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DenominatorType {
    /// 100.
    #[default]
    Hundred,
    /// 10,000.
    TenThousand,
    /// 1,000,000.
    Million,
}

impl DenominatorType {
    /// The denominator's value.
    pub fn value(self) -> u32 {
        match self {
            Self::Hundred => 100,
            Self::TenThousand => 10_000,
            Self::Million => 1_000_000,
        }
    }
}

/// Envoy's `FractionalPercent`: `numerator / denominator`. A numerator above the denominator
/// means 100% (Envoy clamps it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FractionalPercent {
    /// Numerator.
    #[serde(default)]
    pub numerator: u32,
    /// Denominator (default `HUNDRED`).
    #[serde(default)]
    pub denominator: DenominatorType,
}

impl FractionalPercent {
    /// `numerator` percent.
    pub fn percent(numerator: u32) -> Self {
        Self {
            numerator,
            denominator: DenominatorType::Hundred,
        }
    }

    /// Whether a uniform random `r` falls inside the fraction (Envoy's `r % denominator <
    /// numerator`).
    pub fn hits(&self, r: u64) -> bool {
        let d = self.denominator.value();
        self.numerator >= d || (r % u64::from(d)) < u64::from(self.numerator)
    }

    /// The fraction as a ratio in `[0, 1]`.
    pub fn ratio(&self) -> f64 {
        (f64::from(self.numerator) / f64::from(self.denominator.value())).min(1.0)
    }
}

/// Envoy's `RuntimeFractionalPercent`. There is no runtime layer in-process, so the default
/// value is the value (the key is kept for the config dump).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeFractionalPercent {
    /// The fraction in force.
    pub default_value: FractionalPercent,
    /// Envoy's runtime key (informational).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub runtime_key: String,
}

/// A plain double in config (Envoy's `DoubleValue`/`FloatValue` wrappers), compared by bits so
/// config types stay `Eq`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Double(pub f64);

impl PartialEq for Double {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Double {}

/// Envoy's `RuntimeDouble`: a double whose runtime key is informational in-process.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeDouble {
    /// The value in force.
    pub default_value: f64,
}

impl PartialEq for RuntimeDouble {
    fn eq(&self, other: &Self) -> bool {
        self.default_value.to_bits() == other.default_value.to_bits()
    }
}

impl Eq for RuntimeDouble {}
