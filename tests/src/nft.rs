//! nftables as an independent counter of what arrives: named counters on a netdev ingress
//! hook of an interface, which sees every frame the XDP program passed (and none it
//! dropped), before the stack looks at it.

use std::collections::HashMap;

use crate::netns::Netns;

pub struct Counters<'a> {
    ns: &'a Netns,
    table: String,
}

impl<'a> Counters<'a> {
    /// One counter per (name, nft match), e.g. `("flood", "udp sport 123")`.
    pub fn new(ns: &'a Netns, ifname: &str, counters: &[(&str, &str)]) -> Counters<'a> {
        let table = "mssp_test".to_string();
        let mut script = format!(
            "table netdev {table} {{\n  chain ingress {{ type filter hook ingress device \"{ifname}\" priority 0; policy accept; }}\n"
        );
        for (name, _) in counters {
            script.push_str(&format!("  counter {name} {{ }}\n"));
        }
        script.push_str("}\n");
        for (name, m) in counters {
            script.push_str(&format!(
                "add rule netdev {table} ingress {m} counter name {name}\n"
            ));
        }
        let path = std::env::temp_dir().join(format!("mssp-nft-{}.nft", crate::netns::unique("n")));
        std::fs::write(&path, script).expect("nft script");
        ns.sh(&["nft", "-f", path.to_str().expect("utf-8 path")]);
        let _ = std::fs::remove_file(&path);
        Counters { ns, table }
    }

    /// Packets per counter so far.
    pub fn read(&self) -> HashMap<String, u64> {
        let out = self.ns.sh(&[
            "nft",
            "-j",
            "list",
            "counters",
            "table",
            "netdev",
            &self.table,
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("nft -j");
        let mut m = HashMap::new();
        for item in v["nftables"].as_array().into_iter().flatten() {
            let c = &item["counter"];
            if let (Some(name), Some(p)) = (c["name"].as_str(), c["packets"].as_u64()) {
                m.insert(name.to_string(), p);
            }
        }
        m
    }

    pub fn get(&self, name: &str) -> u64 {
        self.read().get(name).copied().unwrap_or(0)
    }
}

impl Drop for Counters<'_> {
    fn drop(&mut self) {
        let _ = self
            .ns
            .try_sh(&["nft", "delete", "table", "netdev", &self.table]);
    }
}
