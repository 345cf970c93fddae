//! Istio's HTTP metadata exchange: the caller describes its workload in
//! `x-envoy-peer-metadata` (a base64 `google.protobuf.Struct`, Istio's node metadata keys) and
//! `x-envoy-peer-metadata-id`, so that the server's metrics can name their source (Kiali's
//! workload graph reads `source_workload` from the destination's series).
//!
//! Why by hand: mesh-tower never sees prost, and the subset needed (string values and one
//! nested struct) is a few dozen lines each way. The decoder reads untrusted bytes: it is
//! bounded in depth and size, skips what it does not know, and gives up (no metadata) on
//! anything malformed.
//!
//! Trust: a server uses a caller's metadata only on a mutually authenticated connection, and
//! only if it names the namespace of the caller's SPIFFE ID; the headers never reach the
//! handler. A client sends them only on mTLS clusters (the mesh's own), never to other hosts.

use super::Workload;
use crate::wire::put_bytes;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderValue;

/// A value of the subset of `google.protobuf.Value` used here.
#[derive(Clone, Debug, PartialEq)]
enum Val {
    Str(String),
    Struct(Vec<(String, Val)>),
}

/// The two headers a client of `w` sends.
pub(crate) fn headers(w: &Workload) -> Option<(HeaderValue, HeaderValue)> {
    let mut labels = Vec::new();
    for (k, v) in [
        ("app", &w.app),
        ("version", &w.version),
        ("service.istio.io/canonical-name", &w.canonical_service),
        ("service.istio.io/canonical-revision", &w.canonical_revision),
    ] {
        if let Some(v) = v {
            labels.push((k.to_owned(), Val::Str(v.clone())));
        }
    }
    let mut fields = vec![
        ("WORKLOAD_NAME".to_owned(), Val::Str(w.name.clone())),
        ("NAMESPACE".to_owned(), Val::Str(w.namespace.clone())),
        ("LABELS".to_owned(), Val::Struct(labels)),
    ];
    if let Some(c) = &w.cluster {
        fields.push(("CLUSTER_ID".to_owned(), Val::Str(c.clone())));
    }
    let mut bytes = Vec::new();
    encode_struct(&fields, &mut bytes);
    let value = HeaderValue::from_str(&STANDARD.encode(bytes)).ok()?;
    let id = HeaderValue::from_str(&format!("mesh~{}.{}", w.name, w.namespace)).ok()?;
    Some((value, id))
}

/// The caller's workload from its `x-envoy-peer-metadata` value, if well formed.
pub(crate) fn decode(header: &str) -> Option<Workload> {
    if header.len() > 8192 {
        return None;
    }
    let bytes = STANDARD.decode(header).ok()?;
    let fields = decode_struct(&bytes, 0)?;
    Some(Workload::from_node_metadata(&to_json(&Val::Struct(fields))))
}

fn to_json(v: &Val) -> serde_json::Value {
    match v {
        Val::Str(s) => serde_json::Value::String(s.clone()),
        Val::Struct(f) => {
            serde_json::Value::Object(f.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

/// `Struct { map<string, Value> fields = 1 }`; `Value { string_value = 3, struct_value = 5 }`.
fn encode_struct(fields: &[(String, Val)], out: &mut Vec<u8>) {
    for (k, v) in fields {
        let mut value = Vec::new();
        match v {
            Val::Str(s) => put_bytes(3, s.as_bytes(), &mut value),
            Val::Struct(f) => {
                let mut inner = Vec::new();
                encode_struct(f, &mut inner);
                put_bytes(5, &inner, &mut value);
            }
        }
        let mut entry = Vec::new();
        put_bytes(1, k.as_bytes(), &mut entry);
        put_bytes(2, &value, &mut entry);
        put_bytes(1, &entry, out);
    }
}

/// Reads protobuf fields: `(field number, wire type, payload)`, where the payload is the bytes
/// of a length-delimited field and empty for others (skipped).
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn next_field(&mut self) -> Option<Option<(u64, &'a [u8])>> {
        if self.0.is_empty() {
            return Some(None);
        }
        let tag = self.varint()?;
        let (field, wire) = (tag >> 3, tag & 7);
        let payload: &[u8] = match wire {
            0 => {
                self.varint()?;
                &[]
            }
            1 => {
                self.0 = self.0.get(8..)?;
                &[]
            }
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                let (p, rest) = (self.0.get(..len)?, self.0.get(len..)?);
                self.0 = rest;
                p
            }
            5 => {
                self.0 = self.0.get(4..)?;
                &[]
            }
            _ => return None,
        };
        Some(Some((if wire == 2 { field } else { 0 }, payload)))
    }
}

/// At most a struct within a struct (Istio's `LABELS`).
const MAX_DEPTH: usize = 2;

fn decode_struct(bytes: &[u8], depth: usize) -> Option<Vec<(String, Val)>> {
    if depth >= MAX_DEPTH {
        return None;
    }
    let mut out = Vec::new();
    let mut fields = Fields(bytes);
    while let Some((field, entry)) = fields.next_field()? {
        if field != 1 {
            continue;
        }
        let (mut key, mut value) = (None, None);
        let mut parts = Fields(entry);
        while let Some((f, p)) = parts.next_field()? {
            match f {
                1 => key = Some(std::str::from_utf8(p).ok()?.to_owned()),
                2 => value = decode_value(p, depth),
                _ => {}
            }
        }
        if let (Some(k), Some(v)) = (key, value) {
            out.push((k, v));
        }
    }
    Some(out)
}

fn decode_value(bytes: &[u8], depth: usize) -> Option<Val> {
    let mut fields = Fields(bytes);
    let mut out = None;
    while let Some((f, p)) = fields.next_field()? {
        match f {
            3 => out = Some(Val::Str(std::str::from_utf8(p).ok()?.to_owned())),
            5 => out = Some(Val::Struct(decode_struct(p, depth + 1)?)),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reviews() -> Workload {
        Workload {
            name: "reviews-v2".into(),
            namespace: "bookinfo".into(),
            cluster: Some("Kubernetes".into()),
            app: Some("reviews".into()),
            version: Some("v2".into()),
            ..Workload::default()
        }
    }

    #[test]
    fn a_workload_survives_the_round_trip() {
        let (value, id) = headers(&reviews()).unwrap();
        assert_eq!(id, "mesh~reviews-v2.bookinfo");
        let back = decode(value.to_str().unwrap()).unwrap();
        assert_eq!(back, reviews());
    }

    /// What Istio's sidecar sends: prost-encoded `Struct` with more keys and kinds of value
    /// (a number, a list) than we read; they are skipped.
    #[test]
    fn unknown_keys_and_kinds_are_skipped() {
        let mut bytes = Vec::new();
        encode_struct(
            &[("NAMESPACE".into(), Val::Str("bookinfo".into()))],
            &mut bytes,
        );
        // An entry whose Value is a number (field 2, fixed64) and one with a list (field 6).
        let mut number = Vec::new();
        number.push(2 << 3 | 1);
        number.extend_from_slice(&1.5f64.to_le_bytes());
        let mut entry = Vec::new();
        put_bytes(1, b"ISTIO_VERSION_NUM", &mut entry);
        put_bytes(2, &number, &mut entry);
        put_bytes(1, &entry, &mut bytes);
        let mut list = Vec::new();
        put_bytes(6, b"\x0a\x02\x1a\x00", &mut list);
        let mut entry = Vec::new();
        put_bytes(1, b"APP_CONTAINERS", &mut entry);
        put_bytes(2, &list, &mut entry);
        put_bytes(1, &entry, &mut bytes);
        let w = decode(&STANDARD.encode(&bytes)).unwrap();
        assert_eq!(w.namespace, "bookinfo");
        assert_eq!(w.name, "");
    }

    #[test]
    fn malformed_input_gives_no_metadata_and_never_panics() {
        assert_eq!(decode("not base64!"), None);
        let (value, _) = headers(&reviews()).unwrap();
        let bytes = STANDARD.decode(value.to_str().unwrap()).unwrap();
        // Every truncation, and every single-byte corruption, of a valid value.
        for n in 0..bytes.len() {
            let _ = decode(&STANDARD.encode(&bytes[..n]));
            let mut bad = bytes.clone();
            bad[n] ^= 0xff;
            let _ = decode(&STANDARD.encode(&bad));
        }
        // Structs nested deeper than Istio's LABELS are skipped, not followed.
        let mut deep = Vec::new();
        encode_struct(
            &[(
                "A".into(),
                Val::Struct(vec![(
                    "B".into(),
                    Val::Struct(vec![("C".into(), Val::Str("d".into()))]),
                )]),
            )],
            &mut deep,
        );
        assert_eq!(decode(&STANDARD.encode(&deep)), Some(Workload::default()));
        // Oversized values are not even decoded.
        assert_eq!(decode(&"A".repeat(10_000)), None);
    }
}
