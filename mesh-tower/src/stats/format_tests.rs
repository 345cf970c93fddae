use super::*;

fn values<'a>(req: &'a [Option<String>], resp: &'a [Option<String>]) -> Values<'a> {
    Values {
        start_time: "2026-12-02T03:04:05.678Z",
        duration_ms: 12,
        request_headers: req,
        response_headers: resp,
        protocol: "HTTP/2",
        code: 200,
        flags: "-",
        grpc: Some(7),
        bytes_sent: 52,
        upstream_host: Some("127.0.0.1:9000".parse().unwrap()),
        upstream_cluster: Some("outbound|80||web"),
        peer: Some("spiffe://cluster.local/ns/shop/sa/web"),
        client_side: true,
        remote: None,
        local: None,
    }
}

#[test]
fn text_formats_print_each_command_as_envoy_does() {
    let f = LogFormat::text(
        "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_SENT% %DURATION% %REQ(X-USER):4% %RESP(X-BACKEND)% %GRPC_STATUS% %GRPC_STATUS(SNAKE_STRING)% %GRPC_STATUS_NUMBER% \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% %UPSTREAM_PEER_URI_SAN% %DOWNSTREAM_PEER_URI_SAN% %BYTES_RECEIVED% 100%%\n",
    )
    .unwrap();
    assert_eq!(
        f.request_headers,
        [":method", "x-envoy-original-path", ":path", "x-user"]
    );
    assert_eq!(f.response_headers, ["x-backend"]);
    let req = [
        Some("GET".to_owned()),
        None,
        Some("/items?id=1".to_owned()),
        Some("alexandra".to_owned()),
    ];
    let resp = [None];
    assert_eq!(
        f.render(&values(&req, &resp)),
        "[2026-12-02T03:04:05.678Z] \"GET /items?id=1 HTTP/2\" 200 - 52 12 alex - PermissionDenied PERMISSION_DENIED 7 \"127.0.0.1:9000\" outbound|80||web spiffe://cluster.local/ns/shop/sa/web - - 100%\n"
    );
}

#[test]
fn json_formats_keep_numbers_and_print_missing_values_as_null() {
    let f = LogFormat::json(
        r#"{"code":"%RESPONSE_CODE%","path":"%REQ(:PATH)%","ua":"%REQ(USER-AGENT)%","both":"%RESPONSE_CODE% %RESPONSE_FLAGS%","grpc":"%GRPC_STATUS(NUMBER)%","flags":"%RESPONSE_FLAGS%"}"#,
    )
    .unwrap();
    let req = [Some("/x".to_owned()), None];
    let line = f.render(&values(&req, &[]));
    assert!(line.ends_with('\n'));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"code": 200, "path": "/x", "ua": null, "both": "200 -", "grpc": 7, "flags": "-"}),
        "no flags is the string \"-\", a missing header is null"
    );
}

#[test]
fn bad_formats_are_refused_with_the_command_named() {
    for (format, says) in [
        ("%RESPONSE_CODE", "unterminated command"),
        ("%WHATEVER%", "%WHATEVER%: unknown or unsupported command"),
        ("%REQ%", "needs a header name"),
        ("%REQ(bad header)%", "is not a header name"),
        ("%REQ(X):abc%", "must be a number"),
        ("%RESPONSE_CODE(X)%", "takes no argument"),
        ("%GRPC_STATUS(LOUD)%", "one of CAMEL_STRING"),
        ("%START_TIME(%s)%", "only the default format"),
    ] {
        let e = LogFormat::text(format).unwrap_err();
        assert!(e.contains(says), "{format}: {e}");
    }
    assert!(
        LogFormat::json("[1]")
            .unwrap_err()
            .contains("not a JSON object")
    );
    assert!(
        LogFormat::json(r#"{"a": 1}"#)
            .unwrap_err()
            .contains("only string values")
    );
}
