//! Writing the few protobuf messages the mesh sends itself (Istio's metadata exchange, an
//! ORCA report request): mesh-tower never sees prost, and these messages are a handful of
//! fields, so their wire form is written by hand with these two primitives.

/// `v` as a base-128 varint.
pub(crate) fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Field `field` as a length-delimited value (wire type 2).
pub(crate) fn put_bytes(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
    put_varint(field << 3 | 2, out);
    put_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}
