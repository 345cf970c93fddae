//! The TLS negative matrix against another TLS stack (Python's `ssl`, i.e. OpenSSL:
//! `interop/tlspeer/peer.py`). Our client meets servers with a wrong CA, an expired or
//! not-yet-valid leaf, the wrong SAN, a SPIFFE ID from an unknown trust domain, two URI SANs,
//! no `h2` ALPN; our server meets clients with no certificate, a wrong CA, an expired or
//! not-yet-valid leaf. Each case fails the handshake with an error that says why, and no
//! request reaches the application; a well-formed control case on the same harness passes,
//! so a failure cannot come from the harness itself.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_examples::pki::{DevCa, Issued, LeafSpec, WorkloadFiles, Ymd, spiffe_bundle_map};
use mesh_tower::{ErrorKind, Mesh};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tower::ServiceExt;

const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/backend";
type Validity = Option<(Ymd, Ymd)>;
const PAST: Validity = Some(((2020, 1, 1), (2021, 1, 1)));
const FUTURE: Validity = Some(((2090, 1, 1), (2091, 1, 1)));

fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

fn peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tlspeer/peer.py")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The Python TLS server, serving `cert` with `alpn`.
struct PyServer {
    _child: Child,
    port: u16,
    lines: Lines<BufReader<ChildStdout>>,
}

impl PyServer {
    async fn start(dir: &Path, cert: &Issued, alpn: &str) -> Self {
        let cert_path = write(dir, "server.pem", &cert.cert_pem);
        let key_path = write(dir, "server.key", &cert.key_pem);
        let mut child = Command::new(python())
            .arg(peer_script())
            .args(["server", &cert_path, &key_path, alpn])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs the TLS peer");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next_line().await.unwrap().expect("the peer's port");
        let port = first
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("TLS peer did not start: {first}"));
        PyServer {
            _child: child,
            port,
            lines,
        }
    }

    /// What the server says about the next connection.
    async fn next_connection(&mut self, case: &str) -> serde_json::Value {
        let line = tokio::time::timeout(support::PATIENCE, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{case}: the peer did not report the connection"))
            .unwrap()
            .expect("a line");
        serde_json::from_str(&line).unwrap()
    }
}

/// The client's provider: its identity, and roots from `roots` (a CA PEM, or a SPIFFE bundle
/// map JSON when `bundle` is set).
fn provider_yaml(files: &WorkloadFiles, bundle: Option<&str>) -> String {
    let roots = match bundle {
        Some(path) => format!("spiffe_trust_bundle_map_file: {path:?}"),
        None => format!(
            "ca_certificate_file: {:?}",
            files.roots.display().to_string()
        ),
    };
    format!(
        "{{ file_watcher: {{ certificate_file: {:?}, private_key_file: {:?}, {roots} }} }}",
        files.cert.display().to_string(),
        files.key.display().to_string(),
    )
}

async fn client_mesh(port: u16, protocol: &str, provider: &str) -> Mesh {
    let yaml = format!(
        r#"
certificate_providers: {{ default: {provider} }}
listeners:
  - name: web
    route_config:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [{{ match: {{ prefix: / }}, route: {{ cluster: web }} }}]
clusters:
  - name: web
    type: STATIC
    protocol: {protocol}
    load_assignment:
      cluster_name: web
      endpoints: [{{ lb_endpoints: [{{ address: "127.0.0.1:{port}" }}] }}]
    transport_socket:
      common_tls_context:
        tls_certificate_provider_instance: {{ instance_name: default }}
        validation_context:
          ca_certificate_provider_instance: {{ instance_name: default }}
          match_subject_alt_names: [{{ prefix: "spiffe://cluster.local/ns/shop/sa/backend" }}]
"#
    );
    Mesh::from_config(mesh_core::MeshConfig::from_yaml(&yaml).unwrap())
        .await
        .unwrap()
}

struct ClientCase {
    name: &'static str,
    server: Issued,
    alpn: &'static str,
    protocol: &'static str,
    bundle: bool,
    /// `None`: the control case (must succeed); else words the error must contain.
    refusal: Option<String>,
}

#[tokio::test]
async fn our_client_refuses_every_bad_server_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, stranger) = (DevCa::new("mesh root"), DevCa::new("another root"));
    let client = ca
        .write_workload(&dir.path().join("client"), &ca.issue_spiffe(CLIENT_ID))
        .unwrap();
    let bundle = write(
        dir.path(),
        "bundle.json",
        &spiffe_bundle_map(&[("cluster.local", &ca)]),
    );
    let leaf = |uris: &[&str], validity| {
        ca.issue(&LeafSpec {
            uris,
            dns: &[],
            validity,
        })
    };
    let expired = leaf(&[SERVER_ID], PAST);
    let early = leaf(&[SERVER_ID], FUTURE);
    let case = |name, server, alpn, protocol, bundle, refusal: Option<String>| ClientCase {
        name,
        server,
        alpn,
        protocol,
        bundle,
        refusal,
    };
    let cases = vec![
        case("control", leaf(&[SERVER_ID], None), "http/1.1", "HTTP1", false, None),
        case(
            "control, SPIFFE bundle",
            leaf(&[SERVER_ID], None),
            "h2,http/1.1",
            "HTTP1",
            true,
            None,
        ),
        case(
            "wrong CA",
            stranger.issue_spiffe(SERVER_ID),
            "http/1.1",
            "HTTP1",
            false,
            Some("not signed by a trusted root (unknown issuer".into()),
        ),
        case(
            "expired leaf",
            expired.clone(),
            "http/1.1",
            "HTTP1",
            false,
            Some(format!(
                "certificate (serial {}) expired at 2021-01-01T00:00:00Z",
                expired.serial
            )),
        ),
        case(
            "not-yet-valid leaf",
            early.clone(),
            "http/1.1",
            "HTTP1",
            false,
            Some(format!(
                "certificate (serial {}) is not valid before 2090-01-01T00:00:00Z",
                early.serial
            )),
        ),
        case(
            "wrong SAN",
            leaf(&["spiffe://cluster.local/ns/shop/sa/payments"], None),
            "http/1.1",
            "HTTP1",
            false,
            Some(r#"["URI:spiffe://cluster.local/ns/shop/sa/payments"] match none of [prefix "spiffe://cluster.local/ns/shop/sa/backend"]"#.into()),
        ),
        case(
            "wrong trust domain",
            leaf(&["spiffe://evil.example/ns/shop/sa/backend"], None),
            "http/1.1",
            "HTTP1",
            true,
            Some(r#"trust domain "evil.example""#.into()),
        ),
        case(
            "two URI SANs",
            leaf(&[SERVER_ID, "spiffe://cluster.local/ns/shop/sa/backend-2"], None),
            "http/1.1",
            "HTTP1",
            true,
            Some("2 URI SANs".into()),
        ),
        case(
            "no h2 ALPN",
            leaf(&[SERVER_ID], None),
            "http/1.1",
            "HTTP2",
            false,
            Some("did not agree to HTTP/2 (ALPN h2)".into()),
        ),
    ];
    for c in cases {
        let case_dir = tempfile::tempdir().unwrap();
        let mut server = PyServer::start(case_dir.path(), &c.server, c.alpn).await;
        let provider = provider_yaml(&client, c.bundle.then_some(bundle.as_str()));
        let mesh = client_mesh(server.port, c.protocol, &provider).await;
        let req = http::Request::get("http://web/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let result = mesh.http_client().oneshot(req).await;
        let seen = server.next_connection(c.name).await;
        match (&c.refusal, result) {
            (None, Ok(res)) => {
                let body = res.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(body.as_ref(), b"reached", "{}", c.name);
                assert_eq!(seen["request"], true, "{}: {seen}", c.name);
            }
            (Some(words), Err(e)) => {
                assert_eq!(e.kind(), ErrorKind::Connect, "{}: {e}", c.name);
                let text = e.to_string();
                assert!(text.contains("cluster \"web\""), "{}: {text}", c.name);
                assert!(text.contains(words.as_str()), "{}: {text}", c.name);
                assert_ne!(seen["request"], true, "{}: a request got through", c.name);
            }
            (want, got) => panic!("{}: expected {want:?}, got {got:?}", c.name),
        }
    }
}

/// The Python client against our strict server; its JSON verdict.
async fn py_call(port: u16, roots: &Path, cert: Option<(&str, &str)>) -> serde_json::Value {
    let mut cmd = Command::new(python());
    cmd.arg(peer_script())
        .args(["client", &port.to_string()])
        .arg(roots);
    if let Some((c, k)) = cert {
        cmd.args([c, k]);
    }
    let out = cmd.output().await.expect("python3 runs the TLS peer");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn our_server_refuses_every_bad_client_before_the_application() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, stranger) = (DevCa::new("mesh root"), DevCa::new("another root"));
    let server_files = ca
        .write_workload(&dir.path().join("server"), &ca.issue_spiffe(SERVER_ID))
        .unwrap();
    let (tls, _provider) =
        mesh_examples::identity::strict_server_tls("server", &server_files, "600s");
    let (addr, _task) = mesh_examples::identity::spawn_identity_echo(tls.clone(), true)
        .await
        .unwrap();
    let client_cert = |name: &str, issued: &Issued| {
        (
            write(dir.path(), &format!("{name}.pem"), &issued.cert_pem),
            write(dir.path(), &format!("{name}.key"), &issued.key_pem),
        )
    };
    let spec = |validity| LeafSpec {
        uris: &[CLIENT_ID],
        dns: &[],
        validity,
    };
    let good = client_cert("good", &ca.issue_spiffe(CLIENT_ID));
    let cases = [
        ("control", Some(good)),
        ("no client certificate", None),
        (
            "wrong CA",
            Some(client_cert("stranger", &stranger.issue_spiffe(CLIENT_ID))),
        ),
        (
            "expired",
            Some(client_cert("expired", &ca.issue(&spec(PAST)))),
        ),
        (
            "not yet valid",
            Some(client_cert("early", &ca.issue(&spec(FUTURE)))),
        ),
    ];
    for (name, cert) in cases {
        let before = tls.failed_handshakes();
        let verdict = py_call(
            addr.port(),
            &server_files.roots,
            cert.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
        )
        .await;
        if name == "control" {
            assert_eq!(verdict["status"], 200, "{name}: {verdict}");
            assert_eq!(verdict["body"], CLIENT_ID, "{name}: {verdict}");
            assert_eq!(tls.failed_handshakes(), before, "{name}");
            continue;
        }
        assert!(
            verdict.get("status").is_none(),
            "{name}: reached the application: {verdict}"
        );
        assert!(verdict["error"].is_string(), "{name}: {verdict}");
        // The refusal is counted once our side's handshake future finishes (bounded wait).
        let counted = tokio::time::timeout(support::PATIENCE, async {
            while tls.failed_handshakes() == before {
                tokio::task::yield_now().await;
            }
        });
        assert!(counted.await.is_ok(), "{name}: refusal not counted");
    }
}
