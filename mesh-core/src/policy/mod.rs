//! Traffic policy: retries, hedging, circuit breakers and retry budgets, outlier detection,
//! fault injection and local rate limiting, in Envoy's v3 shapes.
//!
//! Each type is the validated form of one Envoy message, so a control plane's config and a
//! pasted Envoy YAML snippet mean the same here as in Envoy. Defaults are Envoy's, and each is
//! documented on its field; where gRPC's gRFCs narrow a behaviour, the enforcing middleware in
//! `mesh-tower` says so. TLS lives with the config it secures ([`crate::config::tls`]).

pub mod breaker;
pub mod fault;
pub mod outlier;
pub mod percent;
pub mod ratelimit;
pub mod retry;

pub use breaker::{CircuitBreakers, RetryBudget, RoutingPriority, Thresholds};
pub use fault::{Empty, FaultAbort, FaultDelay, HttpFault};
pub use outlier::OutlierDetection;
pub use percent::{
    DenominatorType, Double, FractionalPercent, Percent, RuntimeDouble, RuntimeFractionalPercent,
};
pub use ratelimit::{LocalRateLimit, TokenBucket};
pub use retry::{HedgePolicy, RetryBackOff, RetryCondition, RetryHostPredicate, RetryPolicy};
