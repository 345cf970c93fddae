//! Filling `${NAME}` placeholders in a config template with real addresses, and the one-cluster
//! config the tests and benches share.

use std::collections::HashMap;
use std::fmt::Display;

/// [`web_config`] over HTTP/2 with mesh mTLS: certificate provider `default` reads `files`
/// (and its certificate is presented when `present_cert`), and the server's URI SAN must be
/// `server_id`.
pub fn mtls_web_config(
    files: &crate::pki::WorkloadFiles,
    addrs: &[impl Display],
    server_id: &str,
    present_cert: bool,
) -> String {
    let identity = if present_cert {
        "tls_certificate_provider_instance: { instance_name: default }, "
    } else {
        ""
    };
    let tls = format!(
        "transport_socket: {{ common_tls_context: {{ {identity}\
         validation_context: {{ ca_certificate_provider_instance: {{ instance_name: default }}, \
         match_subject_alt_names: [{{ exact: \"{server_id}\" }}] }} }} }}"
    );
    format!(
        "certificate_providers: {{ default: {} }}\n{}",
        files.file_watcher_yaml("600s"),
        web_config(addrs, &format!("protocol: HTTP2, {tls}"))
    )
}

/// A config with one listener `web` routing everything to the EDS cluster `web`, whose
/// endpoints are `addrs`. `cluster_fields` are more entries of the cluster's flow mapping, such
/// as `protocol: HTTP2, lb_policy: RANDOM`.
pub fn web_config(addrs: &[impl Display], cluster_fields: &str) -> String {
    web_config_routing(addrs, cluster_fields, "")
}

/// [`web_config`] whose route has `route_fields` too (more entries of its `route` flow
/// mapping, such as `retry_policy: { retry_on: 5xx, num_retries: 1 }`).
pub fn web_config_routing(
    addrs: &[impl Display],
    cluster_fields: &str,
    route_fields: &str,
) -> String {
    let route_fields = if route_fields.is_empty() {
        String::new()
    } else {
        format!(", {route_fields}")
    };
    let eps: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{ address: \"{a}\" }}"))
        .collect();
    format!(
        r#"
listeners:
  - name: web
    route_config:
      virtual_hosts:
        - name: web
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              route: {{ cluster: web{route_fields} }}
clusters:
  - {{ name: web, type: EDS, {cluster_fields} }}
endpoints:
  - cluster_name: web
    endpoints:
      - lb_endpoints: [{}]
"#,
        eps.join(", ")
    )
}

/// Replaces every `${KEY}` in `template` with its value; unknown keys are an error.
pub fn render(template: &str, values: &HashMap<&str, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or("unterminated ${")?;
        let key = &after[..end];
        let value = values
            .get(key)
            .ok_or_else(|| format!("no value for ${{{key}}}"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_web_config_parses_with_its_cluster_fields() {
        let yaml = web_config(
            &["127.0.0.1:1", "127.0.0.1:2"],
            "protocol: HTTP2, lb_policy: RANDOM",
        );
        let config = mesh_core::MeshConfig::from_yaml(&yaml).unwrap();
        assert_eq!(config.clusters[0].lb_policy, mesh_core::LbPolicy::Random);
        assert_eq!(config.endpoints[0].endpoints[0].lb_endpoints.len(), 2);
    }

    #[test]
    fn fills_placeholders_and_rejects_unknown_ones() {
        let values = HashMap::from([("A", "1.2.3.4:5".to_owned())]);
        assert_eq!(
            render("x: ${A}, y: ${A}", &values).unwrap(),
            "x: 1.2.3.4:5, y: 1.2.3.4:5"
        );
        assert!(render("${B}", &values).is_err());
        assert!(render("${A", &values).is_err());
    }
}
