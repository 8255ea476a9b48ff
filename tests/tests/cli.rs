//! The `mssp` binary as a NOC engineer uses it: `policy validate` and `simulate`, including
//! every refusal class of the contract with its message.

use std::{path::PathBuf, process::Command};

use mssp_tests::{mssp_bin, packet::Frame, require_root};
use pcap_file::pcap::{PcapPacket, PcapWriter};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mssp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn write_pcap(name: &str, frames: &[Vec<u8>]) -> PathBuf {
    let path = tmp(name);
    let f = std::fs::File::create(&path).unwrap();
    let mut w = PcapWriter::new(f).unwrap();
    for (i, fr) in frames.iter().enumerate() {
        w.write_packet(&PcapPacket::new(
            std::time::Duration::from_millis(i as u64),
            fr.len() as u32,
            fr,
        ))
        .unwrap();
    }
    path
}

fn mssp(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(mssp_bin())
        .args(args)
        .output()
        .expect("run mssp");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = r#"{"version":12,
  "infrastructure":["198.18.255.0/24","2001:db8:ffff::/48"],
  "global":{"sources":[{"prefix":"198.18.200.0/22","action":"drop","comment":"feed X"}]},
  "customers":[{"id":7,"name":"acme","prefixes":["198.19.7.0/24","2001:db8:7::/48"],
    "sources":[{"prefix":"198.18.66.0/24","action":"drop","comment":"ticket 4411"},
               {"prefix":"198.18.66.128/25","action":"allow"}],"rules":[]}]}"#;

fn refusal_cases() -> Vec<(&'static str, String, Vec<&'static str>)> {
    let mut many = String::from(r#"{"version":1,"customers":["#);
    for i in 0..16_384u32 {
        if i > 0 {
            many.push(',');
        }
        many.push_str(&format!(r#"{{"id":{i}}}"#));
    }
    many.push_str("]}");
    vec![
        (
            "unknown field",
            GOOD.replace(r#""name":"acme""#, r#""nmae":"acme""#),
            vec!["customers[0]", "unknown field `nmae`"],
        ),
        (
            "unknown action",
            GOOD.replace(r#""action":"allow""#, r#""action":"permit""#),
            vec!["customers[0].sources[1].action", "unknown variant `permit`"],
        ),
        (
            "host bits",
            GOOD.replace("198.18.66.0/24", "198.18.66.1/24"),
            vec![
                "customers[0].sources[0].prefix",
                "\"198.18.66.1/24\" has host bits set; did you mean 198.18.66.0/24?",
            ],
        ),
        (
            "unparsable cidr",
            GOOD.replace("198.18.200.0/22", "198.18.200.0/33"),
            vec!["global.sources[0].prefix", "\"198.18.200.0/33\"", "0 to 32"],
        ),
        (
            "unparsable address",
            GOOD.replace("198.18.255.0/24", "198.18.256.0/24"),
            vec!["infrastructure[0]", "\"198.18.256.0/24\""],
        ),
        (
            "duplicate customer id",
            GOOD.replace(
                r#""rules":[]}]}"#,
                r#""rules":[]},{"id":7,"prefixes":["198.19.8.0/24"]}]}"#,
            ),
            vec!["customers[1].id", "customer id 7 is used twice"],
        ),
        (
            "prefix claimed twice",
            GOOD.replace(
                r#""rules":[]}]}"#,
                r#""rules":[]},{"id":8,"prefixes":["198.19.7.0/24"]}]}"#,
            ),
            vec![
                "customers[1].prefixes[0]",
                "198.19.7.0/24 is already claimed by customer 7",
            ],
        ),
        (
            "truncated",
            GOOD[..GOOD.len() - 20].to_string(),
            vec!["truncated"],
        ),
        (
            "not json",
            "version = 12\n".to_string(),
            vec!["not valid JSON"],
        ),
        (
            "more than the maps hold",
            many,
            vec!["16384 customers, but the maps hold 16383"],
        ),
    ]
}

#[test]
fn validate_refuses_every_class_with_its_message() {
    for (name, doc, needles) in refusal_cases() {
        let path = tmp(&format!("{}.json", name.replace(' ', "-")));
        std::fs::write(&path, &doc).unwrap();
        let (code, _out, err) = mssp(&["policy", "validate", path.to_str().unwrap()]);
        assert_eq!(code, 65, "{name}: exit code; stderr: {err}");
        for n in &needles {
            assert!(err.contains(n), "{name}: message lacks {n:?}: {err}");
        }
        let (code, out, _) = mssp(&["policy", "validate", "--json", path.to_str().unwrap()]);
        assert_eq!(code, 65);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["valid"], false, "{name}");
    }
    let path = tmp("good.json");
    std::fs::write(&path, GOOD).unwrap();
    let (code, out, err) = mssp(&["policy", "validate", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("valid (version 12, 1 customers, 3 source entries)"),
        "{out}"
    );
}

#[test]
fn simulate_refuses_bad_policies_and_changes_nothing() {
    require_root();
    let pcap = write_pcap(
        "one.pcap",
        &[Frame::new("198.18.66.1", "198.19.7.9").build()],
    );
    for (name, doc, needles) in refusal_cases() {
        let path = tmp(&format!("sim-{}.json", name.replace(' ', "-")));
        std::fs::write(&path, &doc).unwrap();
        let (code, out, err) = mssp(&[
            "simulate",
            "--policy",
            path.to_str().unwrap(),
            "--pcap",
            pcap.to_str().unwrap(),
            "--json",
        ]);
        assert_ne!(code, 0, "{name}: accepted");
        assert!(
            out.is_empty(),
            "{name}: printed decisions for a refused policy: {out}"
        );
        for n in &needles {
            assert!(err.contains(n), "{name}: message lacks {n:?}: {err}");
        }
    }
}

#[test]
fn simulate_answers_why_with_the_brief_reasons() {
    require_root();
    let policy = tmp("sim-good.json");
    std::fs::write(&policy, GOOD).unwrap();
    let frames = vec![
        Frame::new("198.18.66.1", "198.19.7.9")
            .udp(53, 4000)
            .build(),
        Frame::new("198.18.66.200", "198.19.7.9").build(),
        Frame::new("198.18.201.1", "198.19.7.9")
            .tcp(1, 80, 2)
            .build(),
        Frame::new("198.18.255.1", "198.19.7.9").build(),
        Frame::new("198.18.1.1", "198.19.7.9").icmp(8, 0).build(),
        Frame::new("198.18.1.1", "198.18.50.9").build(),
        mssp_tests::packet::raw(0x0806, 28),
        Frame::new("198.18.1.1", "198.19.7.9").build()[..40].to_vec(),
        Frame::new("198.18.1.1", "198.19.7.9")
            .vlan(0x8100, 1)
            .vlan(0x8100, 2)
            .vlan(0x8100, 3)
            .build(),
        Frame::new("2001:db8:1::1", "2001:db8:7::1").build(),
        vec![0u8; 10],
    ];
    let pcap = write_pcap("why.pcap", &frames);
    let (code, out, err) = mssp(&[
        "simulate",
        "--policy",
        policy.to_str().unwrap(),
        "--pcap",
        pcap.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), frames.len());
    let expect = [
        ("drop", "customer_block", serde_json::json!(7)),
        ("pass", "allowlisted", serde_json::json!(7)),
        ("drop", "global_block", serde_json::json!(7)),
        ("pass", "infrastructure", serde_json::json!(7)),
        ("pass", "default", serde_json::json!(7)),
        ("pass", "default", serde_json::Value::Null),
        ("pass", "non_ip", serde_json::Value::Null),
        ("drop", "malformed", serde_json::Value::Null),
        ("drop", "unsupported_encap", serde_json::Value::Null),
        ("pass", "default", serde_json::json!(7)),
    ];
    for (i, (action, reason, customer)) in expect.iter().enumerate() {
        assert_eq!(lines[i]["index"], i + 1);
        assert_eq!(lines[i]["action"], *action, "frame {}: {}", i + 1, lines[i]);
        assert_eq!(lines[i]["reason"], *reason, "frame {}: {}", i + 1, lines[i]);
        assert_eq!(
            lines[i]["customer"],
            *customer,
            "frame {}: {}",
            i + 1,
            lines[i]
        );
    }
    assert_eq!(lines[0]["entry"], "198.18.66.0/24");
    assert!(
        lines[10]["error"]
            .as_str()
            .unwrap()
            .contains("shorter than an Ethernet header")
    );
    // The readable form says the same.
    let (code, text, _) = mssp(&[
        "simulate",
        "--policy",
        policy.to_str().unwrap(),
        "--pcap",
        pcap.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let first = text.lines().next().unwrap();
    assert!(
        first.contains("drop") && first.contains("customer_block") && first.contains("customer=7"),
        "{first}"
    );
}
