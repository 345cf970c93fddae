//! ORCA load reports: what an endpoint says about its own load on each response.
//!
//! Open Request Cost Aggregation is how a backend tells its callers how busy it is, so they can
//! weigh it by capacity rather than guess from latency. A report rides on a response in one
//! header (or, for gRPC, in the trailers):
//!
//! - `endpoint-load-metrics-bin`: a base64 `xds.data.orca.v3.OrcaLoadReport` (gRPC servers);
//! - `endpoint-load-metrics: BIN <base64>`: the same, under the plain name;
//! - `endpoint-load-metrics: TEXT cpu_utilization=0.3, rps_fractional=120, named_metrics.gpu=0.9`
//!   (`:` is accepted in place of `=`, as older Envoys wrote it).
//!
//! Only the fields a weight needs are decoded, and named metrics only when the cluster names
//! them, so a report costs no allocation. A malformed report is an error for the caller to
//! count and ignore: a backend cannot break its callers by sending garbage.

use base64::Engine;
use http::HeaderMap;

/// The plain header (text or `BIN ` prefixed).
pub const HEADER: &str = "endpoint-load-metrics";
/// The binary header gRPC servers send.
pub const HEADER_BIN: &str = "endpoint-load-metrics-bin";

/// The parts of an ORCA load report that weights are computed from.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// `cpu_utilization`.
    pub cpu_utilization: f64,
    /// `application_utilization`.
    pub application_utilization: f64,
    /// `rps_fractional`: requests per second the endpoint serves.
    pub rps_fractional: f64,
    /// `eps`: errors per second.
    pub eps: f64,
    /// The largest of the named metrics the caller asked about (0 when none was reported).
    pub named_max: f64,
}

/// Why a report was not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ORCA load report: {0}")]
pub struct ReportError(String);

fn err(msg: impl Into<String>) -> ReportError {
    ReportError(msg.into())
}

impl LoadReport {
    /// Reads the report in `headers` (response headers or trailers); `Ok(None)` when there is
    /// none. `wanted` lists named metrics (`named_metrics.<k>` or `utilization.<k>`) whose
    /// largest value becomes [`named_max`](Self::named_max).
    pub fn from_headers(
        headers: &HeaderMap,
        wanted: &[String],
    ) -> Result<Option<Self>, ReportError> {
        if let Some(v) = headers.get(HEADER_BIN) {
            return Self::from_base64(v.as_bytes(), wanted).map(Some);
        }
        let Some(v) = headers.get(HEADER) else {
            return Ok(None);
        };
        let v = v.as_bytes();
        if let Some(b) = v.strip_prefix(b"BIN ") {
            Self::from_base64(b, wanted).map(Some)
        } else if let Some(t) = v.strip_prefix(b"TEXT ") {
            let t = std::str::from_utf8(t).map_err(|_| err("TEXT report is not UTF-8"))?;
            Self::from_text(t, wanted).map(Some)
        } else {
            let prefix: String = String::from_utf8_lossy(&v[..v.len().min(5)]).into();
            Err(err(format!(
                "unsupported format {prefix:?} (want TEXT or BIN)"
            )))
        }
    }

    /// Parses the text format's body: `name=value` pairs separated by commas.
    pub fn from_text(text: &str, wanted: &[String]) -> Result<Self, ReportError> {
        let mut r = Self::default();
        let mut seen = 0u32;
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = pair
                .split_once(['=', ':'])
                .map(|(n, v)| (n.trim(), v.trim()))
                .ok_or_else(|| err(format!("{pair:?} is not name=value")))?;
            let value: f64 = value
                .parse()
                .map_err(|_| err(format!("{name}: {value:?} is not a number")))?;
            if !value.is_finite() {
                return Err(err(format!("{name}: {value} is not finite")));
            }
            let bit = match name {
                "cpu_utilization" => {
                    r.cpu_utilization = value;
                    1
                }
                "mem_utilization" => 2,
                "application_utilization" => {
                    r.application_utilization = value;
                    4
                }
                "rps_fractional" => {
                    r.rps_fractional = value;
                    8
                }
                "eps" => {
                    r.eps = value;
                    16
                }
                _ if name.starts_with("named_metrics.") || name.starts_with("utilization.") => {
                    if name.ends_with('.') {
                        return Err(err(format!("{name}: empty metric key")));
                    }
                    if wanted.iter().any(|w| w == name) {
                        r.named_max = r.named_max.max(value);
                    }
                    0
                }
                _ => return Err(err(format!("unsupported metric {name:?}"))),
            };
            if seen & bit != 0 {
                return Err(err(format!("duplicate metric {name:?}")));
            }
            seen |= bit;
        }
        Ok(r)
    }

    /// Decodes a base64 `OrcaLoadReport` (padding optional, as gRPC binary metadata allows).
    pub fn from_base64(b64: &[u8], wanted: &[String]) -> Result<Self, ReportError> {
        let b64 = b64.trim_ascii();
        if b64.is_empty() {
            return Err(err("empty binary report"));
        }
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let bytes = engine
            .decode(b64)
            .map_err(|e| err(format!("bad base64: {e}")))?;
        Self::from_proto(&bytes, wanted)
    }

    /// Decodes the protobuf `xds.data.orca.v3.OrcaLoadReport`, skipping fields weights do not
    /// use.
    pub fn from_proto(mut buf: &[u8], wanted: &[String]) -> Result<Self, ReportError> {
        let mut r = Self::default();
        while !buf.is_empty() {
            let key = varint(&mut buf)?;
            let (field, wire) = (key >> 3, key & 7);
            match wire {
                1 => {
                    let v = fixed64(&mut buf)?;
                    match field {
                        1 => r.cpu_utilization = v,
                        6 => r.rps_fractional = v,
                        7 => r.eps = v,
                        9 => r.application_utilization = v,
                        _ => {}
                    }
                }
                0 => {
                    varint(&mut buf)?;
                }
                2 => {
                    let len = usize::try_from(varint(&mut buf)?).map_err(|_| truncated())?;
                    let body = buf.get(..len).ok_or_else(truncated)?;
                    buf = &buf[len..];
                    let prefix = match field {
                        5 => "utilization.",
                        8 => "named_metrics.",
                        _ => continue,
                    };
                    if let Some(v) = map_entry(body, prefix, wanted)? {
                        r.named_max = r.named_max.max(v);
                    }
                }
                5 => {
                    buf = buf.get(4..).ok_or_else(truncated)?;
                }
                _ => return Err(err(format!("field {field}: wire type {wire} not expected"))),
            }
        }
        for (name, v) in [
            ("cpu_utilization", r.cpu_utilization),
            ("application_utilization", r.application_utilization),
            ("rps_fractional", r.rps_fractional),
            ("eps", r.eps),
        ] {
            if !v.is_finite() {
                return Err(err(format!("{name}: {v} is not finite")));
            }
        }
        Ok(r)
    }

    /// The endpoint's weight (gRFC A58, as Envoy 1.40 computes it): `qps / utilization`, where
    /// utilization is the largest wanted named metric, else `application_utilization`, else
    /// `cpu_utilization` (the first positive one), and errors add `penalty × eps / qps`.
    /// `None` when the report carries no positive QPS or utilization.
    pub fn weight(&self, error_utilization_penalty: f64) -> Option<f64> {
        let qps = self.rps_fractional;
        if qps <= 0.0 {
            return None;
        }
        let mut utilization = if self.named_max > 0.0 {
            self.named_max
        } else if self.application_utilization > 0.0 {
            self.application_utilization
        } else {
            self.cpu_utilization
        };
        utilization += error_utilization_penalty * self.eps / qps;
        (utilization > 0.0).then(|| (qps / utilization).min(f64::from(u32::MAX)))
    }
}

/// Every `named_metrics` entry of the report in `headers` (response headers or trailers), as
/// load reports carry them (gRFC A64: all of them, keys as sent); `Ok(None)` when there is
/// no report.
pub fn named_metrics(headers: &HeaderMap) -> Result<Option<Vec<(String, f64)>>, ReportError> {
    let (text, b64) = match (headers.get(HEADER_BIN), headers.get(HEADER)) {
        (Some(v), _) => (None, v.as_bytes()),
        (None, Some(v)) => match v.as_bytes() {
            b if b.starts_with(b"BIN ") => (None, &b[4..]),
            b if b.starts_with(b"TEXT ") => (Some(&b[5..]), &b""[..]),
            _ => return Err(err("unsupported format (want TEXT or BIN)")),
        },
        (None, None) => return Ok(None),
    };
    let mut out = Vec::new();
    if let Some(t) = text {
        let t = std::str::from_utf8(t).map_err(|_| err("TEXT report is not UTF-8"))?;
        for pair in t.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, value)) = pair.split_once(['=', ':']) else {
                return Err(err(format!("{pair:?} is not name=value")));
            };
            if let Some(key) = name.trim().strip_prefix("named_metrics.") {
                let v: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| err(format!("{name}: {value:?} is not a number")))?;
                if v.is_finite() && !key.is_empty() {
                    out.push((key.to_owned(), v));
                }
            }
        }
        return Ok(Some(out));
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine
        .decode(b64.trim_ascii())
        .map_err(|e| err(format!("bad base64: {e}")))?;
    let mut buf = &bytes[..];
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        match key & 7 {
            0 => drop(varint(&mut buf)?),
            1 => buf = buf.get(8..).ok_or_else(truncated)?,
            5 => buf = buf.get(4..).ok_or_else(truncated)?,
            2 => {
                let len = usize::try_from(varint(&mut buf)?).map_err(|_| truncated())?;
                let body = buf.get(..len).ok_or_else(truncated)?;
                buf = &buf[len..];
                if key >> 3 == 8
                    && let Some((k, v)) = entry(body)?
                {
                    out.push((k, v));
                }
            }
            w => return Err(err(format!("wire type {w} not expected"))),
        }
    }
    Ok(Some(out))
}

/// One `map<string, double>` entry's key and value (finite values with a key only).
fn entry(buf: &[u8]) -> Result<Option<(String, f64)>, ReportError> {
    let (key, value) = raw_entry(buf)?;
    let key = std::str::from_utf8(key).map_err(|_| err("metric key is not UTF-8"))?;
    Ok((!key.is_empty() && value.is_finite()).then(|| (key.to_owned(), value)))
}

/// One `map<string, double>` entry's key bytes and value.
fn raw_entry(mut buf: &[u8]) -> Result<(&[u8], f64), ReportError> {
    let (mut key, mut value) = (&b""[..], 0.0);
    while !buf.is_empty() {
        match varint(&mut buf)? {
            0x0a => {
                let len = usize::try_from(varint(&mut buf)?).map_err(|_| truncated())?;
                key = buf.get(..len).ok_or_else(truncated)?;
                buf = &buf[len..];
            }
            0x11 => value = fixed64(&mut buf)?,
            tag => return Err(err(format!("map entry: unexpected tag {tag}"))),
        }
    }
    Ok((key, value))
}

fn truncated() -> ReportError {
    err("truncated protobuf")
}

fn varint(buf: &mut &[u8]) -> Result<u64, ReportError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or_else(truncated)?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(err("varint longer than 10 bytes"))
}

fn fixed64(buf: &mut &[u8]) -> Result<f64, ReportError> {
    let bytes: [u8; 8] = buf
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(truncated)?;
    *buf = &buf[8..];
    Ok(f64::from_le_bytes(bytes))
}

/// One `map<string, double>` entry; its value when `prefix + key` is wanted.
fn map_entry(buf: &[u8], prefix: &str, wanted: &[String]) -> Result<Option<f64>, ReportError> {
    let (key, value) = raw_entry(buf)?;
    let hit = wanted
        .iter()
        .any(|w| w.strip_prefix(prefix).is_some_and(|k| k.as_bytes() == key));
    Ok((hit && value.is_finite()).then_some(value))
}

#[cfg(test)]
#[path = "orca_tests.rs"]
pub(crate) mod tests;
