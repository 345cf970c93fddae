use super::{Attribute, Program, Value};
use std::borrow::Cow;

/// A request: 503 from cluster `backend`, path `/api/v1?x=1`, `x-debug: on`, 1.5 s.
fn request(a: &Attribute) -> Option<Value<'static>> {
    Some(match a {
        Attribute::ResponseCode => Value::Int(503),
        Attribute::ResponseGrpcStatus => Value::Int(14),
        Attribute::RequestPath => Value::Str("/api/v1?x=1".into()),
        Attribute::RequestUrlPath => Value::Str("/api/v1".into()),
        Attribute::RequestMethod => Value::Str("GET".into()),
        Attribute::RequestHeader(h) if h == "x-debug" => Value::Str("on".into()),
        Attribute::RequestDuration => Value::Duration(1_500_000_000),
        Attribute::ResponseSize => Value::Uint(4096),
        Attribute::ConnectionMtls => Value::Bool(true),
        Attribute::XdsClusterName => Value::Str("backend".into()),
        _ => return None,
    })
}

fn eval(src: &str) -> Result<Value<'static>, String> {
    let p = Program::parse(src)?;
    let v = p.eval(&request)?;
    Ok(match v {
        Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
        Value::List(_) => return Err("list".into()),
        Value::Null => Value::Null,
        Value::Bool(b) => Value::Bool(b),
        Value::Int(i) => Value::Int(i),
        Value::Uint(u) => Value::Uint(u),
        Value::Double(d) => Value::Double(d),
        Value::Duration(d) => Value::Duration(d),
    })
}

fn truth(src: &str) -> bool {
    match eval(src) {
        Ok(Value::Bool(b)) => b,
        other => panic!("{src}: {other:?}"),
    }
}

#[test]
fn envoy_and_istio_examples_evaluate() {
    assert!(truth("response.code >= 400"));
    assert!(truth("response.code >= 500 && response.code < 600"));
    assert!(truth(
        "(connection.mtls && request.headers['x-debug'] == 'on') || request.url_path.contains('v1beta3')"
    ));
    assert!(truth(
        "request.url_path.startsWith('/api/') && !request.path.endsWith('.png')"
    ));
    assert!(truth("request.duration > duration('1s')"));
    assert!(!truth("request.duration > duration('1m30s')"));
    assert!(truth("response.grpc_status in [4, 14]"));
    assert!(truth("request.method in ['GET', 'HEAD']"));
    assert!(truth("xds.cluster_name.matches('^back')"));
    assert!(truth("matches(xds.cluster_name, 'end$')"));
    assert!(truth(
        "size(request.url_path) == 7 && request.url_path.size() == 7"
    ));
    assert!(truth(
        "'x-debug' in request.headers && !('x-other' in request.headers)"
    ));
    assert!(truth("has(request.headers.x_missing) == false"));
    assert!(truth("response.code == 503 ? true : false"));
}

#[test]
fn numbers_compare_across_kinds_and_arithmetic_is_checked() {
    assert!(truth("response.size == 4096"));
    assert!(truth("response.size > 4095.5"));
    assert!(truth("1u < 2 && -1 < 0u && 2.0 == 2"));
    assert_eq!(eval("7 / 2").unwrap(), Value::Int(3));
    assert_eq!(eval("7 % 3 + 2 * 3 - 1").unwrap(), Value::Int(6));
    assert_eq!(eval("0x10 + 1").unwrap(), Value::Int(17));
    assert_eq!(eval("-9223372036854775808").unwrap(), Value::Int(i64::MIN));
    assert!(
        eval("9223372036854775807 + 1")
            .unwrap_err()
            .contains("overflow")
    );
    assert!(eval("1 / 0").unwrap_err().contains("division by zero"));
    assert_eq!(eval("'a' + 'b'").unwrap(), Value::Str("ab".into()));
    assert_eq!(eval("int('42') + int(2.9)").unwrap(), Value::Int(44));
    assert_eq!(
        eval("string(response.code)").unwrap(),
        Value::Str("503".into())
    );
    assert!(truth("1 == 'a' == false"));
}

#[test]
fn errors_are_absorbed_by_logic_as_cel_requires() {
    // The header is absent: reading it is an error...
    assert!(eval("request.headers['x-absent'] == 'y'").is_err());
    // ...that a definite answer on either side of && / || absorbs.
    assert!(!truth("request.headers['x-absent'] == 'y' && false"));
    assert!(!truth("false && request.headers['x-absent'] == 'y'"));
    assert!(truth("request.headers['x-absent'] == 'y' || true"));
    assert!(eval("request.headers['x-absent'] == 'y' || false").is_err());
    // An error makes the filter not match.
    let p = Program::parse("request.headers['x-absent'] == 'y'").unwrap();
    assert!(!p.matches(&request));
    assert!(eval("1 + 'a'").is_err());
    assert!(eval("!1").is_err());
}

#[test]
fn what_cannot_be_evaluated_is_refused_when_parsed() {
    for (src, why) in [
        ("response.code >=", "at 16"),
        ("request.size > 10", "request.size is not an attribute"),
        (
            "request.headers.x_debug == 'on'",
            "request.headers['x_debug']",
        ),
        ("request.headers[request.method]", "string literal"),
        ("[1, 2].all(x, x > 0)", "all() is not supported"),
        ("{'a': 1}", "map literals"),
        ("request.path.matches(request.method)", "literal pattern"),
        ("request.path.matches('(')", "invalid regex"),
        ("duration('5 parsecs')", "bad duration"),
        ("'unterminated", "unterminated string"),
        ("if", "reserved word"),
        ("1 2", "unexpected"),
        ("response.code @ 1", "unexpected '@'"),
    ] {
        let err = Program::parse(src).unwrap_err();
        assert!(err.contains(why), "{src}: {err}");
    }
    let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
    assert!(Program::parse(&deep).unwrap_err().contains("nested deeper"));
    let bangs = format!("{}true", "!".repeat(200));
    assert!(
        Program::parse(&bangs)
            .unwrap_err()
            .contains("nested deeper")
    );
    // Long flat chains nest the tree as deeply: bounded too, not a stack overflow.
    let sum = vec!["1"; 300].join(" + ");
    assert!(Program::parse(&sum).unwrap_err().contains("chain longer"));
    let path = format!("request{}", ".a".repeat(300));
    assert!(Program::parse(&path).unwrap_err().contains("chain longer"));
    let huge = vec!["(1 + 1)"; 2000].join(" * ");
    assert!(Program::parse(&huge).unwrap_err().contains("tokens"));
    let fine = vec!["1"; 100].join(" + ");
    assert_eq!(eval(&format!("{fine} == 100")).unwrap(), Value::Bool(true));
}

#[test]
fn strings_unescape_and_attributes_are_listed() {
    assert_eq!(
        eval(r#""a\tb\u00e9""#).unwrap(),
        Value::Str("a\tb\u{e9}".into())
    );
    assert_eq!(eval(r"r'a\tb'").unwrap(), Value::Str("a\\tb".into()));
    assert_eq!(eval("'''it's'''").unwrap(), Value::Str("it's".into()));
    let p = Program::parse(
        "request.headers['X-Debug'] == 'on' && response.code > 1 && response.code < 9",
    )
    .unwrap();
    assert_eq!(
        p.attributes(),
        vec![
            &Attribute::RequestHeader("x-debug".into()),
            &Attribute::ResponseCode
        ]
    );
}

/// Random token soup never panics the parser (expressions come from control planes).
#[test]
fn garbage_never_panics() {
    let atoms = [
        "request.path",
        "(",
        ")",
        "[",
        "]",
        "'x'",
        "1",
        "-",
        "!",
        "&&",
        "||",
        "?",
        ":",
        ".",
        "size",
        ",",
        "in",
        "1.5e",
        "0x",
        "\\",
        "\"",
        "r'",
        "u",
        "has(",
        "matches(",
        "==",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..5000 {
        let mut src = String::new();
        for _ in 0..(seed % 12) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            src.push_str(atoms[(seed % atoms.len() as u64) as usize]);
        }
        if let Ok(p) = Program::parse(&src) {
            let _ = p.eval(&request);
        }
    }
}
