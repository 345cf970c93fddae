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
pub(crate) mod tests {
    use super::*;

    /// Encodes a report the way protobuf would (doubles as fixed64, maps as entries).
    pub(crate) fn encode(fields: &[(u8, f64)], named: &[(&str, f64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (f, v) in fields {
            out.push((f << 3) | 1);
            out.extend_from_slice(&v.to_le_bytes());
        }
        for (k, v) in named {
            let mut entry = vec![0x0a, k.len() as u8];
            entry.extend_from_slice(k.as_bytes());
            entry.push(0x11);
            entry.extend_from_slice(&v.to_le_bytes());
            out.push((8 << 3) | 2);
            out.push(entry.len() as u8);
            out.extend(entry);
        }
        out
    }

    #[test]
    fn named_metrics_come_out_whole_for_load_reports() {
        let none = named_metrics(&HeaderMap::new()).unwrap();
        assert_eq!(none, None);
        let text = headers(
            HEADER,
            "TEXT cpu_utilization=0.5, named_metrics.queue=3, named_metrics.gpu=0.25",
        );
        assert_eq!(
            named_metrics(&text).unwrap(),
            Some(vec![("queue".to_owned(), 3.0), ("gpu".to_owned(), 0.25)])
        );
        use base64::Engine;
        let bin = base64::engine::general_purpose::STANDARD
            .encode(encode(&[(1, 0.5)], &[("queue", 2.0), ("disk", 7.5)]));
        assert_eq!(
            named_metrics(&headers(HEADER_BIN, &bin)).unwrap(),
            Some(vec![("queue".to_owned(), 2.0), ("disk".to_owned(), 7.5)])
        );
        assert_eq!(
            named_metrics(&headers(HEADER, "TEXT cpu_utilization=0.1")).unwrap(),
            Some(vec![]),
            "a report without named metrics"
        );
        assert!(named_metrics(&headers(HEADER_BIN, "////")).is_err());
    }

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    }

    #[test]
    fn text_reports_parse_with_either_separator() {
        let wanted = vec!["named_metrics.gpu".to_string()];
        let r = LoadReport::from_headers(
            &headers(
                HEADER,
                "TEXT cpu_utilization=0.5, rps_fractional:200,eps=4,named_metrics.gpu=0.9,named_metrics.disk=0.99",
            ),
            &wanted,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            r,
            LoadReport {
                cpu_utilization: 0.5,
                application_utilization: 0.0,
                rps_fractional: 200.0,
                eps: 4.0,
                named_max: 0.9,
            }
        );
        assert_eq!(LoadReport::from_headers(&HeaderMap::new(), &[]), Ok(None));
    }

    #[test]
    fn bad_text_reports_are_errors_not_panics() {
        for bad in [
            "TEXT cpu_utilization=abc",
            "TEXT cpu_utilization=0.1,cpu_utilization=0.2",
            "TEXT cpu_utilization=NaN",
            "TEXT rps_fractional=inf",
            "TEXT bogus=1",
            "TEXT named_metrics.=1",
            "TEXT novalue",
            "JSON {}",
            "BIN !!!",
            "BIN ",
        ] {
            assert!(
                LoadReport::from_headers(&headers(HEADER, bad), &[]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn binary_reports_decode_from_either_header() {
        let wanted = vec!["named_metrics.q".to_string()];
        let proto = encode(
            &[(1, 0.25), (6, 50.0), (7, 1.0), (9, 0.4)],
            &[("q", 0.7), ("r", 5.0)],
        );
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&proto);
        let expected = LoadReport {
            cpu_utilization: 0.25,
            application_utilization: 0.4,
            rps_fractional: 50.0,
            eps: 1.0,
            named_max: 0.7,
        };
        for h in [
            headers(HEADER_BIN, &b64),
            headers(HEADER, &format!("BIN {b64}")),
        ] {
            assert_eq!(LoadReport::from_headers(&h, &wanted), Ok(Some(expected)));
        }
        // Unknown fields (rps as a varint, a fixed32, request_cost) are skipped.
        let mut extra = vec![3 << 3, 0x96, 0x01, (10 << 3) | 5, 0, 0, 0, 0];
        extra.extend(encode(&[(6, 9.0)], &[]));
        assert_eq!(
            LoadReport::from_proto(&extra, &[]).unwrap().rps_fractional,
            9.0
        );
        // Truncated or garbled input is an error.
        for cut in 1..proto.len() {
            let _ = LoadReport::from_proto(&proto[..cut], &wanted);
        }
        assert!(LoadReport::from_proto(&proto[..proto.len() - 3], &wanted).is_err());
        assert!(LoadReport::from_proto(&[0xff; 12], &[]).is_err());
    }

    #[test]
    fn weight_is_qps_over_utilization_with_error_penalty() {
        let r = |cpu, app, named, qps, eps| LoadReport {
            cpu_utilization: cpu,
            application_utilization: app,
            rps_fractional: qps,
            eps,
            named_max: named,
        };
        assert_eq!(r(0.5, 0.0, 0.0, 100.0, 0.0).weight(1.0), Some(200.0));
        // Named metrics win over application_utilization, which wins over CPU.
        assert_eq!(r(0.5, 0.25, 0.8, 100.0, 0.0).weight(1.0), Some(125.0));
        assert_eq!(r(0.5, 0.25, 0.0, 100.0, 0.0).weight(1.0), Some(400.0));
        // 10 errors/s at 100 qps with penalty 2 adds 0.2 utilization.
        assert_eq!(r(0.3, 0.0, 0.0, 100.0, 10.0).weight(2.0), Some(200.0));
        assert_eq!(r(0.5, 0.0, 0.0, 0.0, 0.0).weight(1.0), None);
        assert_eq!(r(0.0, 0.0, 0.0, 10.0, 0.0).weight(1.0), None);
        assert_eq!(
            r(1e-300, 0.0, 0.0, 1e300, 0.0).weight(1.0),
            Some(f64::from(u32::MAX))
        );
    }
}
