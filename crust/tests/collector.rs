//! The report collector: the real `crust-node --collector` takes a report
//! over an encrypted crust connection and stores it, refuses malformed,
//! oversized and too frequent ones with an error to the sender (storing
//! none of them), and `crust-node reports summary` counts what was stored;
//! plus the summary of a known set of reports.
#![allow(clippy::unwrap_used)]

mod common;

use common::process::start_node;
use common::{Node, PATIENCE};
use crust::probe::{
    Behaviour, Envelope, FORMAT_VERSION, Findings, Outcome, Ports, ReportStore, Submission,
    SubmitError, Summary, TcpFindings, Technique, UdpReach, UpnpFindings, predict, submit,
};

fn findings(mapping: Behaviour, filtering: Behaviour, ports: Ports, hairpin: bool) -> Findings {
    let mut f = Findings {
        udp: UdpReach::Reachable,
        behind_nat: Some(true),
        mapping: Some(mapping),
        filtering: Some(filtering),
        ports: Some(ports),
        hairpinning: Some(hairpin),
        lifetime: None,
        tcp: TcpFindings::default(),
        upnp: UpnpFindings {
            present: Some(false),
            ..UpnpFindings::default()
        },
        cgnat: None,
        ipv6: None,
        predicted: Vec::new(),
    };
    f.predicted = predict(&f);
    f
}

fn submission(findings: Findings, outcomes: Vec<Outcome>) -> Submission {
    Submission {
        version: FORMAT_VERSION,
        client: "test".into(),
        findings,
        outcomes,
        network: Some("203.0.113.0/24".into()),
        addresses: None,
        duration_ms: 1234,
    }
}

fn cone() -> Submission {
    submission(
        findings(
            Behaviour::EndpointIndependent,
            Behaviour::AddressAndPortDependent,
            Ports::Preserved,
            true,
        ),
        vec![Outcome {
            peer_nat: "eim-apdf".into(),
            technique: Technique::UdpHolePunch,
            success: true,
        }],
    )
}

fn symmetric() -> Submission {
    submission(
        findings(
            Behaviour::AddressAndPortDependent,
            Behaviour::AddressAndPortDependent,
            Ports::Sequential { delta: 1 },
            false,
        ),
        vec![
            Outcome {
                peer_nat: "eim-apdf".into(),
                technique: Technique::UdpHolePunch,
                success: false,
            },
            Outcome {
                peer_nat: "eim-apdf".into(),
                technique: Technique::Relay,
                success: true,
            },
        ],
    )
}

#[test]
fn summary_counts_behaviours_and_technique_success_per_pair() {
    let reports = [cone(), cone(), symmetric()];
    let s = Summary::of(&reports);
    assert_eq!(s.reports, 3);
    assert_eq!(s.behaviours["nat class"]["eim-apdf"], 2);
    assert_eq!(s.behaviours["nat class"]["apdm-apdf"], 1);
    assert_eq!(s.behaviours["mapping"]["endpoint_independent"], 2);
    assert_eq!(s.behaviours["port allocation"]["sequential (delta 1)"], 1);
    assert_eq!(s.behaviours["port allocation"]["preserved"], 2);
    assert_eq!(s.behaviours["hairpinning"]["yes"], 2);
    assert_eq!(s.behaviours["upnp present"]["no"], 3);
    let pair = |own: &str, peer: &str, t: &str| {
        s.techniques[&(own.to_owned(), peer.to_owned(), t.to_owned())]
    };
    assert_eq!(pair("eim-apdf", "eim-apdf", "udp_hole_punch"), (2, 2));
    assert_eq!(pair("apdm-apdf", "eim-apdf", "udp_hole_punch"), (0, 1));
    assert_eq!(pair("apdm-apdf", "eim-apdf", "relay"), (1, 1));
    let text = s.to_string();
    assert!(text.starts_with("3 reports"), "{text}");
    assert!(text.contains("eim-apdf / eim-apdf"), "{text}");
    assert!(text.contains("66.7%"), "{text}");
}

#[test]
fn store_keeps_reports_and_summarises_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = ReportStore::open(&dir.path().join("reports.db")).unwrap();
    let ids: Vec<u64> = [cone(), symmetric()]
        .iter()
        .map(|r| store.insert(1_700_000_000, r).unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2]);
    assert_eq!(store.all().unwrap(), vec![cone(), symmetric()]);
    assert_eq!(
        store.summary().unwrap(),
        Summary::of(&[cone(), symmetric()])
    );
}

#[tokio::test]
async fn collector_round_trip_and_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("reports.db");
    let db_arg = db.to_str().unwrap();
    let node = start_node(&["--collector", db_arg, "--collector-burst", "5"]);
    node.wait_for_log("collecting reports into");
    let mut tester = Node::start().await;
    tester.service.connect(node.id, &[node.addr]).await.unwrap();
    let good = serde_json::to_string_pretty(&cone()).unwrap();
    let id = submit(
        &tester.service,
        &mut tester.events,
        node.id,
        good.clone(),
        PATIENCE,
    )
    .await
    .unwrap();
    assert_eq!(id, 1);

    // Malformed: not JSON, an unknown field, a wrong version, oversized.
    let mut unknown: serde_json::Value = serde_json::to_value(cone()).unwrap();
    unknown["tracking"] = serde_json::json!("x");
    let mut version = cone();
    version.version = 99;
    let oversized = format!(
        "{{\"client\": \"{}\"}}",
        "x".repeat(crust::probe::MAX_REPORT_BYTES)
    );
    for (bad, expect) in [
        ("{not json".to_owned(), "malformed"),
        (unknown.to_string(), "unknown field"),
        (serde_json::to_string(&version).unwrap(), "version 99"),
        (oversized, "too large"),
    ] {
        match submit(&tester.service, &mut tester.events, node.id, bad, PATIENCE).await {
            Err(SubmitError::Rejected(reason)) => {
                assert!(reason.contains(expect), "{reason:?} should say {expect:?}")
            }
            other => panic!("expected a rejection ({expect}), got {other:?}"),
        }
    }
    // The burst of 5 is spent (the rate limit counts every report, good or
    // bad): the next good one is refused too.
    match submit(
        &tester.service,
        &mut tester.events,
        node.id,
        good.clone(),
        PATIENCE,
    )
    .await
    {
        Err(SubmitError::Rejected(reason)) => assert!(reason.contains("too many"), "{reason}"),
        other => panic!("expected the rate limit, got {other:?}"),
    }
    // A broken envelope is answered too.
    tester
        .service
        .send(&node.id, &b"CRPR\xff\xff"[..], crust::Priority::NORMAL)
        .await
        .unwrap();
    let answer = tester.message_from(node.id).await;
    assert!(matches!(
        Envelope::decode(&answer),
        Ok(Some(Envelope::Rejected { .. }))
    ));
    drop(node);

    // Only the good report was stored.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_crust-node"))
        .args(["reports", "summary", "--db", db_arg])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("1 reports"), "{text}");
    assert!(text.contains("eim-apdf"), "{text}");
}

/// The whole chain with the real binaries: one `crust-node` is probe
/// server and collector at once; `crust-node probe --yes` probes against it
/// (loopback: no NAT), shows the masked report and sends it; the summary
/// counts it.
#[test]
fn crust_node_probe_submits_to_a_node_that_serves_and_collects() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("reports.db");
    let db_arg = db.to_str().unwrap();
    // A free port for the probe server (and the next one for its second
    // address); a race with another process is possible but unlikely.
    let port = loop {
        let p = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if p < u16::MAX {
            break p;
        }
    };
    let port_arg = port.to_string();
    let node = start_node(&[
        "--collector",
        db_arg,
        "--probe-server",
        "127.0.0.1,127.0.0.2",
        "--probe-port",
        &port_arg,
    ]);
    node.wait_for_log("probe server on 127.0.0.1:");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_crust-node"))
        .args([
            "probe",
            "--no-upnp",
            "--yes",
            "--collector-network",
            "crust-tests",
        ])
        .args(["--server", &format!("127.0.0.1:{port}")])
        .args(["--collector", &format!("{}@{}", node.id, node.addr)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(text.contains("NAT class:           none"), "{text}");
    assert!(text.contains("\"network\": \"127.0.0.0/24\""), "{text}");
    assert!(text.contains("stored it as report 1"), "{text}");
    drop(node);
    let store = ReportStore::open(&db).unwrap();
    let stored = store.all().unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].findings.nat_class(), "none");
    assert_eq!(stored[0].addresses, None, "masked unless opted in");
}
