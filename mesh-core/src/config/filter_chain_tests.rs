use super::*;

fn range(s: &str) -> CidrRange {
    let (a, l) = s.split_once('/').unwrap();
    CidrRange {
        address_prefix: a.into(),
        prefix_len: l.parse().unwrap(),
    }
}

fn m(dst: &[&str], ty: SourceType, src: &[&str], ports: &[u16]) -> FilterChainMatch {
    FilterChainMatch {
        prefix_ranges: dst.iter().map(|s| range(s)).collect(),
        source_type: ty,
        source_prefix_ranges: src.iter().map(|s| range(s)).collect(),
        source_ports: ports.to_vec(),
        ..FilterChainMatch::default()
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn each_stage_keeps_the_most_specific_and_never_goes_back() {
    use SourceType::*;
    let s = ChainSelector::new(&[
        m(&["10.0.0.0/8"], Any, &[], &[]),                  // 0
        m(&["10.0.0.5/32"], Any, &["192.168.0.0/16"], &[]), // 1
        m(&[], External, &[], &[]),                         // 2
        m(&[], SameIpOrLoopback, &[], &[]),                 // 3
        m(&[], Any, &["172.16.0.0/12"], &[]),               // 4
        m(&[], Any, &["172.16.0.0/12"], &[4000]),           // 5
    ]);
    let to = |local: &str, remote: &str| s.select(addr(local), addr(remote));
    // The longest destination prefix wins: .5/32 over 10/8 ...
    assert_eq!(to("10.0.0.5:80", "192.168.1.1:1"), Some(1));
    // ... and is kept even when its source range then fails: no fall back to 10/8.
    assert_eq!(to("10.0.0.5:80", "8.8.8.8:1"), None);
    assert_eq!(to("10.1.2.3:80", "8.8.8.8:1"), Some(0));
    // No destination range: the chains without one; the source type they name wins.
    assert_eq!(to("11.0.0.1:80", "8.8.8.8:1"), Some(2));
    assert_eq!(to("11.0.0.1:80", "127.0.0.1:1"), Some(3));
    assert_eq!(
        to("11.0.0.1:80", "11.0.0.1:1"),
        Some(3),
        "same IP counts as local"
    );
    // A source type named beats ANY, so chains 4 and 5 are never reached from outside.
    assert_eq!(to("11.0.0.1:80", "172.16.0.1:4000"), Some(2));
    // IPv4-mapped IPv6 addresses (a dual-stack listener) match IPv4 ranges.
    assert_eq!(
        to("[::ffff:10.0.0.5]:80", "[::ffff:192.168.3.3]:9"),
        Some(1)
    );
}

#[test]
fn a_listed_source_port_beats_none_and_longer_source_prefixes_win() {
    let s = ChainSelector::new(&[
        m(&[], SourceType::Any, &["172.16.0.0/12"], &[]),
        m(&[], SourceType::Any, &["172.16.0.0/12"], &[4000, 4001]),
        m(&[], SourceType::Any, &["172.16.5.0/24"], &[]),
    ]);
    let from = |remote: &str| s.select(addr("10.0.0.1:80"), addr(remote));
    assert_eq!(from("172.17.0.1:4001"), Some(1));
    assert_eq!(from("172.17.0.1:5000"), Some(0));
    assert_eq!(from("172.16.5.9:4000"), Some(2), "the /24 is more specific");
    assert_eq!(from("10.9.9.9:4000"), None);
    assert_eq!(
        ChainSelector::new(&[]).select(addr("10.0.0.1:80"), addr("1.1.1.1:1")),
        None
    );
}

#[test]
fn raw_buffer_named_beats_unset_after_the_destination_stage() {
    let raw = FilterChainMatch {
        transport_protocol: "raw_buffer".into(),
        ..m(&[], SourceType::Any, &[], &[])
    };
    let s = ChainSelector::new(&[
        m(&[], SourceType::Any, &["10.0.0.0/8"], &[]),
        raw,
        m(&["10.0.0.1/32"], SourceType::Any, &[], &[]),
    ]);
    // Chain 0 has the more specific source, but chain 1 won the earlier stage.
    assert_eq!(s.select(addr("10.0.0.2:80"), addr("10.9.9.9:1")), Some(1));
    // The destination stage comes first still.
    assert_eq!(s.select(addr("10.0.0.1:80"), addr("10.9.9.9:1")), Some(2));
}

#[test]
fn chains_that_could_tie_are_refused_with_their_paths() {
    let chain = |m: FilterChainMatch| FilterChain {
        filter_chain_match: m,
        ..FilterChain::default()
    };
    let check = |chains: &[FilterChain]| {
        let mut e = Errors::new();
        let p = FieldPath::root().field("filter_chains");
        validate(chains, &|i| p.index(i), &mut e);
        e.into_result().err().map(|e| e.to_string())
    };
    use SourceType::*;
    // The same range written two ways (10.1.2.3/8 is 10.0.0.0/8) ties.
    let e = check(&[
        chain(m(&["10.0.0.0/8"], Any, &[], &[80])),
        chain(m(&["10.1.2.3/8", "11.0.0.0/8"], Any, &[], &[80, 81])),
    ])
    .expect("a tie");
    assert!(
        e.contains(
            "filter_chains[1].filter_chain_match: matches the same connections as filter_chains[0]"
        ),
        "{e}"
    );
    // Differing in any stage is fine.
    assert_eq!(
        check(&[
            chain(m(&["10.0.0.0/8"], Any, &[], &[80])),
            chain(m(&["10.0.0.0/8"], External, &[], &[80])),
            chain(m(&["10.0.0.0/8"], Any, &[], &[])),
            chain(m(&["10.0.0.0/16"], Any, &[], &[80])),
        ]),
        None
    );
    let e = check(&[chain(m(&["10.0.0.300/8"], Any, &["::/129"], &[0]))]).expect("bad");
    for want in [
        "filter_chains[0].filter_chain_match.prefix_ranges[0]: 10.0.0.300/8 is not an IP range",
        "filter_chains[0].filter_chain_match.source_prefix_ranges[0]: ::/129 is not an IP range",
        "filter_chains[0].filter_chain_match.source_ports: port 0 never matches",
    ] {
        assert!(e.contains(want), "{want} in {e}");
    }
    // Two empty matches tie too.
    assert!(
        check(&[
            chain(FilterChainMatch::default()),
            chain(FilterChainMatch::default())
        ])
        .is_some()
    );
}

#[test]
fn a_server_checks_each_chain_as_it_checks_its_own_settings() {
    let yaml = r#"
servers:
  - name: echo
    close_unmatched: true
    filter_chains:
      - filter_chain_match: { source_type: SAME_IP_OR_LOOPBACK }
        limits: { max_concurrent_streams: 0 }
      - filter_chain_match: { source_type: EXTERNAL }
        transport_socket:
          common_tls_context:
            tls_certificate_provider_instance: { instance_name: nowhere }
"#;
    let e = crate::MeshConfig::from_yaml(yaml).unwrap_err().to_string();
    for want in [
        "servers[0].filter_chains[0].limits.max_concurrent_streams: must be at least 1",
        "servers[0].filter_chains[1].transport_socket",
    ] {
        assert!(e.contains(want), "{want} in {e}");
    }
    let e = crate::MeshConfig::from_yaml("servers: [{ name: echo, close_unmatched: true }]")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("servers[0].close_unmatched: needs filter_chains"),
        "{e}"
    );
}
