//! Envoy's JSON and YAML forms of xDS messages (feature `json`).
//!
//! Envoy reads and writes its API as proto3 JSON: REST-JSON control planes
//! (`api_type: REST`), resource files (`path_config_source`), config dumps. Every message type,
//! and the `Any`-typed extensions inside them (`"@type": "type.googleapis.com/…"`), is
//! covered by the descriptors envoy-types' Rust types were generated from (`build.rs` brings
//! them in), so a message goes JSON → dynamic message → protobuf bytes → the same prost type
//! the gRPC transports decode. Unknown fields are refused, as Envoy refuses them in files.
//!
//! YAML is read as JSON's superset (Envoy's own YAML forms are JSON values).
//!
//! ```
//! use envoy_types::pb::envoy::config::cluster::v3::Cluster;
//! let c: Cluster = mesh_xds_client::json::from_str(r#"{"name": "web", "connect_timeout": "0.25s"}"#)?;
//! assert_eq!(c.name, "web");
//! let back = mesh_xds_client::json::to_value(&c)?;
//! assert_eq!(back["connect_timeout"], "0.250s");
//! # Ok::<(), mesh_xds_client::json::JsonError>(())
//! ```

use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};
use std::sync::OnceLock;

/// envoy-types' `FileDescriptorSet` (copied from its package by `build.rs`).
static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_types.bin"));

/// Why a message could not be read or written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JsonError(String);

/// Unknown fields are refused (a misspelt field must not be silently dropped).
const STRICT: DeserializeOptions = DeserializeOptions::new().deny_unknown_fields(true);

fn err(msg: impl Into<String>) -> JsonError {
    JsonError(msg.into())
}

/// envoy-types' `FileDescriptorSet` as embedded (for tools and benches that build their own
/// pool).
pub fn descriptor_set() -> &'static [u8] {
    DESCRIPTORS
}

/// Every Envoy, xDS, udpa and well-known type, decoded on first use (about 3 MB of
/// descriptors; only programs that read JSON pay for it).
pub fn pool() -> Result<&'static DescriptorPool, JsonError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(DESCRIPTORS).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| err(format!("envoy-types' descriptor set: {e}")))
}

fn descriptor<M: prost::Name>() -> Result<prost_reflect::MessageDescriptor, JsonError> {
    pool()?
        .get_message_by_name(&M::full_name())
        .ok_or_else(|| err(format!("no descriptor for {}", M::full_name())))
}

fn to_prost<M: prost::Message + Default>(message: &DynamicMessage) -> Result<M, JsonError> {
    M::decode(prost::Message::encode_to_vec(message).as_slice())
        .map_err(|e| err(format!("re-encoding: {e}")))
}

/// Reads `M` from its proto3 JSON text (the error names line and column).
pub fn from_str<M: prost::Message + prost::Name + Default>(json: &str) -> Result<M, JsonError> {
    let mut de = serde_json::Deserializer::from_str(json);
    let message = DynamicMessage::deserialize_with_options(descriptor::<M>()?, &mut de, &STRICT)
        .map_err(|e| err(e.to_string()))?;
    de.end().map_err(|e| err(e.to_string()))?;
    to_prost(&message)
}

/// Reads `M` from a JSON value (for instance YAML read as JSON).
pub fn from_value<M: prost::Message + prost::Name + Default>(
    value: &serde_json::Value,
) -> Result<M, JsonError> {
    let message = DynamicMessage::deserialize_with_options(descriptor::<M>()?, value, &STRICT)
        .map_err(|e| err(e.to_string()))?;
    to_prost(&message)
}

/// Reads `M` from YAML or JSON text.
pub fn from_yaml<M: prost::Message + prost::Name + Default>(text: &str) -> Result<M, JsonError> {
    let value: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| err(format!("YAML: {e}")))?;
    from_value(&value)
}

/// Writes `m` as proto3 JSON with the proto field names (Envoy's YAML spelling: `version_info`,
/// `resource_names`, …), default values left out.
pub fn to_value<M: prost::Message + prost::Name>(m: &M) -> Result<serde_json::Value, JsonError> {
    write(m, SerializeOptions::new().use_proto_field_name(true))
}

/// As [`to_value`], with fields at their default values written out too (`""`, `0`, `[]`):
/// for peers that require fields proto3 JSON may leave out (sovereign's `DiscoveryRequest`
/// wants `node.cluster` and `error_detail.details`).
pub fn to_value_with_defaults<M: prost::Message + prost::Name>(
    m: &M,
) -> Result<serde_json::Value, JsonError> {
    write(
        m,
        SerializeOptions::new()
            .use_proto_field_name(true)
            .skip_default_fields(false),
    )
}

fn write<M: prost::Message + prost::Name>(
    m: &M,
    options: SerializeOptions,
) -> Result<serde_json::Value, JsonError> {
    let message = DynamicMessage::decode(descriptor::<M>()?, m.encode_to_vec().as_slice())
        .map_err(|e| err(e.to_string()))?;
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;

    #[test]
    fn any_typed_extensions_and_yaml_read() {
        // A listener with an Any-typed HCM holding an Any-typed router, and a cluster.
        let yaml = crate::files::tests::LISTENER;
        let resp: DiscoveryResponse = from_yaml(yaml).unwrap();
        assert_eq!(resp.version_info, "1");
        assert_eq!(resp.resources.len(), 2);
        let l: Listener = prost::Message::decode(resp.resources[0].value.as_slice()).unwrap();
        assert_eq!(l.name, "web");
        let hcm = l.api_listener.unwrap().api_listener.unwrap();
        assert!(hcm.type_url.ends_with("HttpConnectionManager"));
        assert!(!hcm.value.is_empty());
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused_with_where() {
        let e = from_str::<Cluster>(r#"{"name": "a", "conect_timeout": "1s"}"#).unwrap_err();
        assert!(
            e.0.contains("conect_timeout") && e.0.contains("line 1"),
            "{e}"
        );
        let e = from_str::<Cluster>(r#"{"name": "a", "connect_timeout": "soon"}"#).unwrap_err();
        assert!(e.0.contains("duration"), "{e}");
        let e = from_yaml::<Cluster>("name: [").unwrap_err();
        assert!(e.0.starts_with("YAML"), "{e}");
    }

    #[test]
    fn written_json_reads_back_equal() {
        let c = Cluster {
            name: "web".into(),
            connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: 2,
                nanos: 0,
            }),
            ..Default::default()
        };
        let v = to_value(&c).unwrap();
        assert_eq!(v["connect_timeout"], "2s");
        assert_eq!(from_value::<Cluster>(&v).unwrap(), c);
        assert!(v.get("alt_stat_name").is_none(), "defaults left out");
        let full = to_value_with_defaults(&c).unwrap();
        assert_eq!(full["alt_stat_name"], "");
        assert_eq!(from_value::<Cluster>(&full).unwrap(), c);
    }
}
