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
