//! The publisher against [`MemBackend`]: diffs, reclamation, rollback, capacity.

use mssp_common::abi::{Counter, Node4, Node6, SourceAction, Tree, value};

use super::{backend::MemBackend, *};
use crate::{
    compile::tree::NodeKind,
    dataplane::backend::Capacities,
    policy::{Capacity, parse_policy},
};

fn small() -> Capacities {
    Capacities {
        slots: 64,
        records: 160,
        nodes4: 4096,
        nodes6: 4096,
        chain: 256,
        entry_ids: 4096,
        rules: 512,
        rule_cidrs: 512,
        buckets: 512,
    }
}

fn walk<N: NodeKind>(nodes: &[N], t: &Tree, addr: u128) -> u32 {
    if t.root == mssp_common::abi::TREE_EMPTY {
        return 0;
    }
    let mut idx = t.root;
    for _ in 0..t.height {
        let n = &nodes[idx as usize];
        idx = n.first_child() + n.pick_child(addr);
    }
    nodes[idx as usize].leaf_value(addr)
}

/// The data path starts a record's source lookups at the copies of the roots in the record:
/// they must be the arena's root nodes (padding for an empty tree).
fn assert_heads(b: &MemBackend, rec: &Record) {
    let empty = mssp_common::abi::TREE_EMPTY;
    let h4 = (rec.src4.root != empty).then(|| b.nodes4[rec.src4.root as usize]);
    let h6 = (rec.src6.root != empty).then(|| b.nodes6[rec.src6.root as usize]);
    assert_eq!(rec.src4_head, h4.unwrap_or(Node4::PAD), "slot {}", rec.slot);
    assert_eq!(rec.src6_head, h6.unwrap_or(Node6::PAD), "slot {}", rec.slot);
}

/// (customer id, customer source value, global source value, infrastructure) as the data
/// path would see them.
fn look(b: &MemBackend, v6: bool, src: u128, dst: u128) -> (Option<u32>, u32, u32, bool) {
    let root = &b.records[b.cur[0] as usize];
    assert_heads(b, root);
    let get = |t4: &Tree, t6: &Tree, a: u128| {
        if v6 {
            walk::<Node6>(&b.nodes6, t6, a)
        } else {
            walk::<Node4>(&b.nodes4, t4, a)
        }
    };
    let infra =
        get(&root.infra4, &root.infra6, src) != 0 || get(&root.infra4, &root.infra6, dst) != 0;
    let slot = get(&root.dst4, &root.dst6, dst);
    let glob = get(&root.src4, &root.src6, src);
    if slot == 0 || b.cur[slot as usize] == 0 {
        return (None, 0, glob, infra);
    }
    let rec = &b.records[b.cur[slot as usize] as usize];
    assert_heads(b, rec);
    (
        Some(rec.customer_id),
        get(&rec.src4, &rec.src6, src),
        glob,
        infra,
    )
}

fn ip4(a: [u8; 4]) -> u128 {
    u32::from_be_bytes(a) as u128
}

/// [`P1`] without its customer 9.
fn without_customer_9() -> String {
    P1.replace(
        r#",
    {"id":9,"prefixes":["198.19.0.0/16"],"sources":[{"prefix":"198.18.1.0/24","action":"monitor"}]}"#,
        "",
    )
}

fn policy(json: &str) -> Desired {
    Desired::from_policy(&parse_policy(json.as_bytes(), &Capacity::default()).unwrap())
}

const P1: &str = r#"{"version":1,
  "infrastructure":["198.18.255.0/24"],
  "global":{"sources":[{"prefix":"198.18.200.0/22","action":"drop"},{"prefix":"198.18.210.0/24","action":"monitor"}]},
  "customers":[
    {"id":7,"prefixes":["198.19.7.0/24","2001:db8:7::/48"],
     "sources":[{"prefix":"198.18.66.0/24","action":"drop"},{"prefix":"198.18.66.128/25","action":"allow"},
                {"prefix":"2001:db8:66::/48","action":"drop"}]},
    {"id":8,"prefixes":["198.19.8.0/24","198.19.8.128/25"],"sources":[]},
    {"id":9,"prefixes":["198.19.0.0/16"],"sources":[{"prefix":"198.18.1.0/24","action":"monitor"}]}]}"#;

#[test]
fn publishes_what_the_policy_says() {
    let mut dp = Dataplane::new(MemBackend::new(small()));
    let s = dp.apply(&policy(P1), &Clock::now()).unwrap();
    assert_eq!(s.customers_changed, 3);
    assert!(s.root_changed);
    let b = dp.backend();
    let (c, v, g, infra) = look(b, false, ip4([198, 18, 66, 1]), ip4([198, 19, 7, 9]));
    assert_eq!(
        (c, value::action(v), g, infra),
        (Some(7), SourceAction::Drop as u32, 0, false)
    );
    let (_, v, _, _) = look(b, false, ip4([198, 18, 66, 200]), ip4([198, 19, 7, 9]));
    assert_eq!(value::action(v), SourceAction::Allow as u32);
    // The more specific customer prefix wins: 198.19.7.0/24 (7) inside 198.19.0.0/16 (9).
    assert_eq!(look(b, false, 1, ip4([198, 19, 7, 1])).0, Some(7));
    assert_eq!(look(b, false, 1, ip4([198, 19, 9, 1])).0, Some(9));
    assert_eq!(look(b, false, 1, ip4([198, 19, 8, 200])).0, Some(8));
    assert_eq!(look(b, false, 1, ip4([198, 20, 0, 1])).0, None);
    let (_, _, g, _) = look(b, false, ip4([198, 18, 201, 1]), 1);
    assert_eq!(value::action(g), SourceAction::Drop as u32);
    let (_, _, _, infra) = look(b, false, ip4([198, 18, 255, 1]), 1);
    assert!(infra);
    let (c, v, _, _) = look(
        b,
        true,
        0x2001_0db8_0066_0000_0000_0000_0000_0001,
        0x2001_0db8_0007_0000_0000_0000_0000_0001,
    );
    assert_eq!((c, value::action(v)), (Some(7), SourceAction::Drop as u32));
    // Ids are distinct and non-zero.
    let ids: HashSet<u32> = dp.entries().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), 6);
    assert!(!ids.contains(&0));
}

#[test]
fn reapplying_changes_nothing_and_changes_reclaim() {
    let mut dp = Dataplane::new(MemBackend::new(small()));
    dp.apply(&policy(P1), &Clock::now()).unwrap();
    let fill = dp.fill();
    let s = dp.apply(&policy(P1), &Clock::now()).unwrap();
    assert_eq!((s.customers_changed, s.root_changed), (0, false));
    assert_eq!(dp.fill(), fill);

    // Change customer 8 only.
    let p2 = P1.replace(r#""id":8,"prefixes":["198.19.8.0/24","198.19.8.128/25"],"sources":[]"#,
        r#""id":8,"prefixes":["198.19.8.0/24","198.19.8.128/25"],"sources":[{"prefix":"198.18.9.0/24","action":"drop"}]"#);
    let before7 = dp.live(dp.slot(7).unwrap()).copied();
    let s = dp.apply(&policy(&p2), &Clock::now()).unwrap();
    assert_eq!((s.customers_changed, s.root_changed), (1, false));
    assert_eq!(dp.live(dp.slot(7).unwrap()).copied(), before7);
    let (_, v, _, _) = look(
        dp.backend(),
        false,
        ip4([198, 18, 9, 9]),
        ip4([198, 19, 8, 1]),
    );
    assert_eq!(value::action(v), SourceAction::Drop as u32);

    // Back again: the same amount of everything is in use (old regions were released).
    dp.apply(&policy(P1), &Clock::now()).unwrap();
    assert_eq!(dp.fill(), fill);
}

#[test]
fn unchanged_customers_are_skipped_and_keep_their_ids() {
    let mut dp = Dataplane::new(MemBackend::new(small()));
    dp.apply(&policy(P1), &Clock::now()).unwrap();
    let ids: BTreeSet<(String, u32)> = dp.entries().map(|(k, id)| (format!("{k:?}"), id)).collect();
    let p2 = P1.replace("198.18.1.0/24", "198.18.2.0/24");
    // Customer 9 changes back and forth; 7 and 8 are skipped every time (memo), yet their
    // entries keep their ids and nothing of theirs is released.
    for round in 0..4 {
        let doc = if round % 2 == 0 { &p2 } else { P1 };
        let s = dp.apply(&policy(doc), &Clock::now()).unwrap();
        assert_eq!(
            (s.customers_changed, s.root_changed),
            (1, false),
            "round {round}"
        );
    }
    let after: BTreeSet<(String, u32)> =
        dp.entries().map(|(k, id)| (format!("{k:?}"), id)).collect();
    let kept = |s: &BTreeSet<(String, u32)>| {
        s.iter()
            .filter(|(k, _)| !k.contains("Customer(9)"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(kept(&after), kept(&ids));
    assert_eq!(after.len(), ids.len());
    // A failed apply leaves the memo as it was: the next apply still sees 7 unchanged.
    let changed = P1.replace("198.18.66.0/24", "198.18.67.0/24");
    dp.backend_mut().fail_write_in = 1;
    dp.apply(&policy(&changed), &Clock::now()).unwrap_err();
    let s = dp.apply(&policy(&changed), &Clock::now()).unwrap();
    assert_eq!(s.customers_changed, 1);
    let (_, v, _, _) = look(
        dp.backend(),
        false,
        ip4([198, 18, 67, 1]),
        ip4([198, 19, 7, 9]),
    );
    assert_eq!(value::action(v), SourceAction::Drop as u32);
}

#[test]
fn removing_a_customer_frees_its_slot() {
    let mut dp = Dataplane::new(MemBackend::new(small()));
    dp.apply(&policy(P1), &Clock::now()).unwrap();
    let slot9 = dp.slot(9).unwrap();
    let p = without_customer_9();
    let s = dp.apply(&policy(&p), &Clock::now()).unwrap();
    assert_eq!(s.customers_removed, 1);
    assert!(s.root_changed);
    assert_eq!(dp.slot(9), None);
    assert_eq!(dp.backend().cur[slot9 as usize], 0);
    assert_eq!(look(dp.backend(), false, 1, ip4([198, 19, 9, 1])).0, None);
    assert_eq!(dp.entries().count(), 5);
}

/// A slot reused by another customer starts from zero counters, and the new slots of one
/// apply are zeroed in one backend call (10k new customers were 10k syscalls, ~20% of a
/// 1M-entry push).
#[test]
fn new_slots_start_at_zero_counters_in_one_call() {
    let mut dp = Dataplane::new(MemBackend::new(small()));
    dp.apply(&policy(&without_customer_9()), &Clock::now())
        .unwrap();
    assert_eq!(dp.backend().slot_resets, 1);
    let slots = dp.backend().caps.slots;
    let stale = Counter {
        packets: 5,
        bytes: 500,
    };
    for c in dp.backend_mut().counters.iter_mut() {
        *c = stale;
    }
    let many: String = (20..40)
        .map(|i| format!(r#",{{"id":{i},"prefixes":["198.19.{i}.0/24"]}}"#))
        .collect();
    let p = P1.replacen(r#""sources":[]}"#, &format!(r#""sources":[]}}{many}"#), 1);
    let s = dp.apply(&policy(&p), &Clock::now()).unwrap();
    assert_eq!(s.customers_changed, 21, "customer 9 and 20..40");
    assert_eq!(dp.backend().slot_resets, 2, "one call for all 21 new slots");
    for id in std::iter::once(9).chain(20..40) {
        let slot = dp.slot(id).unwrap();
        for idx in counters::slot_indices(slot, slots) {
            assert_eq!(
                dp.backend().counters[idx as usize],
                Counter::default(),
                "customer {id}"
            );
        }
    }
    let kept = dp.slot(7).unwrap();
    let idx = counters::slot_indices(kept, slots).next().unwrap();
    assert_eq!(
        dp.backend().counters[idx as usize],
        stale,
        "a kept customer keeps its counts"
    );
}

#[test]
fn a_failure_midway_leaves_the_old_policy() {
    let mut dp = Dataplane::new(MemBackend::new(small()));
    dp.apply(&policy(P1), &Clock::now()).unwrap();
    let snapshot = (dp.backend().cur.clone(), dp.fill(), dp.customers());
    let changed = P1
        .replace("198.18.66.0/24", "198.18.67.0/24")
        .replace("198.19.8.0/24", "198.19.80.0/24");
    // Fail the third write: the customer is written, the root is not.
    dp.backend_mut().fail_write_in = 3;
    let e = dp.apply(&policy(&changed), &Clock::now()).unwrap_err();
    assert!(e.to_string().contains("injected failure"), "{e}");
    assert_eq!(
        (dp.backend().cur.clone(), dp.fill(), dp.customers()),
        snapshot
    );
    let (_, v, _, _) = look(
        dp.backend(),
        false,
        ip4([198, 18, 66, 1]),
        ip4([198, 19, 7, 9]),
    );
    assert_eq!(value::action(v), SourceAction::Drop as u32);
    // And it applies cleanly afterwards.
    dp.apply(&policy(&changed), &Clock::now()).unwrap();
    let (_, v, _, _) = look(
        dp.backend(),
        false,
        ip4([198, 18, 67, 1]),
        ip4([198, 19, 7, 9]),
    );
    assert_eq!(value::action(v), SourceAction::Drop as u32);
}

/// Regression: a failed RCU barrier after the switch returned an error although the new
/// records were live, so the agent believed (and later re-applied) the old policy.
#[test]
fn a_failed_barrier_still_reports_the_published_policy() {
    let mut dp = Dataplane::new(MemBackend::new(small()));
    dp.apply(&policy(P1), &Clock::now()).unwrap();
    let fill = dp.fill();
    let changed = P1.replace("198.18.66.0/24", "198.18.67.0/24");
    dp.backend_mut().fail_barriers = 1;
    let s = dp
        .apply(&policy(&changed), &Clock::now())
        .expect("the new policy is published, so the apply succeeded");
    assert!(s.reclaim_deferred);
    // What the maps enforce and what the publisher believes agree: the new policy.
    let slot = dp.slot(7).unwrap();
    let rec = dp.backend().records[dp.backend().cur[slot as usize] as usize];
    assert_eq!(
        dp.live(slot).map(|l| l.record),
        Some(dp.backend().cur[slot as usize])
    );
    assert_eq!(dp.live(slot).map(|l| l.digest), Some(rec.digest));
    let (_, v, _, _) = look(
        dp.backend(),
        false,
        ip4([198, 18, 67, 1]),
        ip4([198, 19, 7, 9]),
    );
    assert_eq!(value::action(v), SourceAction::Drop as u32);
    let (_, v, _, _) = look(
        dp.backend(),
        false,
        ip4([198, 18, 66, 1]),
        ip4([198, 19, 7, 9]),
    );
    assert_eq!(v, 0, "the old entry is no longer enforced");
    // The replaced regions are not reused until a barrier succeeds; then they are.
    assert!(dp.fill().iter().zip(&fill).any(|(a, b)| a.used > b.used));
    let s = dp.apply(&policy(&changed), &Clock::now()).unwrap();
    assert!(!s.reclaim_deferred);
    assert_eq!(dp.fill(), fill);
}

#[test]
fn a_full_map_is_an_error_and_changes_nothing() {
    let mut caps = small();
    caps.nodes4 = 6;
    let mut dp = Dataplane::new(MemBackend::new(caps));
    dp.apply(&policy(P1), &Clock::now()).unwrap();
    let snapshot = (dp.backend().cur.clone(), dp.fill());
    let mut big = String::from(
        r#"{"version":2,"customers":[{"id":7,"prefixes":["198.19.7.0/24"],"sources":["#,
    );
    for i in 0..200 {
        if i > 0 {
            big.push(',');
        }
        big.push_str(&format!(
            r#"{{"prefix":"198.18.{i}.0/24","action":"drop"}}"#
        ));
    }
    big.push_str("]}]}");
    let e = dp.apply(&policy(&big), &Clock::now()).unwrap_err();
    assert!(matches!(e, DataplaneError::Full(_)), "{e}");
    assert!(e.to_string().contains("map NODES4 is full"), "{e}");
    assert_eq!((dp.backend().cur.clone(), dp.fill()), snapshot);
}

#[test]
fn expired_entries_are_left_out_and_ids_recycled() {
    let mut dp = Dataplane::new(MemBackend::new(small()));
    let p = r#"{"version":1,"customers":[{"id":1,"prefixes":["198.19.1.0/24"],"sources":[
        {"prefix":"198.18.1.0/24","action":"drop","expires":"2000-01-01T00:00:00Z"},
        {"prefix":"198.18.2.0/24","action":"drop","expires":"2999-01-01T00:00:00Z"}]}]}"#;
    dp.apply(&policy(p), &Clock::now()).unwrap();
    assert_eq!(dp.entries().count(), 1);
    let (_, v, _, _) = look(
        dp.backend(),
        false,
        ip4([198, 18, 1, 1]),
        ip4([198, 19, 1, 1]),
    );
    assert_eq!(v, 0);
    let (_, v, _, _) = look(
        dp.backend(),
        false,
        ip4([198, 18, 2, 1]),
        ip4([198, 19, 1, 1]),
    );
    assert!(value::is_chain(v), "an expiring entry goes through a chain");
}

#[test]
fn adoption_rebuilds_the_allocators_and_changes_nothing() {
    let mut dp = Dataplane::new(MemBackend::new(small()));
    let mut journal = Vec::new();
    dp.apply_journaled(&policy(P1), &Clock::now(), &mut |j| {
        journal.push(j.clone());
        Ok(())
    })
    .unwrap();
    let fill = dp.fill();
    let table = dp.id_table();
    assert_eq!(journal[0].assigned_ids.len(), table.entries.len());
    let backend = dp.backend().clone();
    let mut again = Dataplane::adopt(backend, &table).unwrap();
    assert_eq!(again.fill(), fill);
    assert_eq!(again.customers(), dp.customers());
    let s = again.apply(&policy(P1), &Clock::now()).unwrap();
    assert_eq!(
        (s.customers_changed, s.root_changed),
        (0, false),
        "nothing to rewrite after adoption"
    );
    // A real change after adoption allocates without clobbering live regions.
    let p2 = P1.replace("198.18.66.0/24", "198.18.67.0/24");
    again.apply(&policy(&p2), &Clock::now()).unwrap();
    let (_, v, _, _) = look(
        again.backend(),
        false,
        ip4([198, 18, 67, 1]),
        ip4([198, 19, 7, 9]),
    );
    assert_eq!(value::action(v), SourceAction::Drop as u32);
    let (_, g, _, _) = look(again.backend(), false, 1, ip4([198, 19, 9, 1]));
    assert_eq!(g, 0);
}

#[test]
fn adoption_refuses_inconsistent_maps() {
    let mut dp = Dataplane::new(MemBackend::new(small()));
    dp.apply(&policy(P1), &Clock::now()).unwrap();
    let mut backend = dp.backend().clone();
    let slot = dp.slot(7).unwrap();
    let idx = backend.cur[slot as usize];
    backend.records[idx as usize].slot = 999;
    let e = Dataplane::adopt(backend, &dp.id_table()).err().unwrap();
    assert!(e.to_string().contains("left untouched"), "{e}");
}

/// The data path starts source lookups at the record's copies of the roots: a record whose
/// copy differs from the arena's root is drift for `verify`, and adoption refuses it rather
/// than take over a data path that does not follow the trees it believes published.
#[test]
fn a_head_that_differs_from_the_arena_root_is_drift_and_refused_at_adoption() {
    let mut dp = Dataplane::new(MemBackend::new(small()));
    dp.apply(&policy(P1), &Clock::now()).unwrap();
    assert_eq!(dp.verify(), Vec::<String>::new());
    let again = Dataplane::adopt(dp.backend().clone(), &dp.id_table()).unwrap();
    assert_eq!(again.verify(), Vec::<String>::new());

    let slot = dp.slot(7).unwrap();
    let idx = dp.backend().cur[slot as usize] as usize;
    for v6 in [false, true] {
        let mut bad = dp.backend().clone();
        let rec = &mut bad.records[idx];
        if v6 {
            rec.src6_head.w[0] ^= 1;
        } else {
            rec.src4_head.w[0] ^= 1;
        }
        let family = if v6 { "IPv6" } else { "IPv4" };
        let e = Dataplane::adopt(bad.clone(), &dp.id_table()).err().unwrap().to_string();
        assert!(e.contains(&format!("slot {slot} points at record {idx}")), "{e}");
        assert!(e.contains(family) && e.contains("copy of the source root"), "{e}");
        assert!(e.contains("left untouched"), "{e}");
        let good = std::mem::replace(&mut dp.backend_mut().records[idx], bad.records[idx]);
        let d = dp.verify();
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("customer 7") && d[0].contains(family), "{d:?}");
        dp.backend_mut().records[idx] = good;
        assert_eq!(dp.verify(), Vec::<String>::new());
    }
}

/// Regression: the record digest (persisted in the kernel's records, so a restarted agent
/// recognises what is live) hashed `format!("{:?}")` strings, which change with any
/// rename in the Rust types. It now hashes the published ABI records, whose layout is
/// versioned: the same policy must give the same digest in every build.
#[test]
fn record_digests_are_a_stable_encoding() {
    let p = r#"{"version":1,"customers":[{"id":7,"prefixes":["198.19.7.0/24"],
        "sources":[{"prefix":"198.18.66.0/24","action":"drop"}],
        "rules":[{"id":10,"match":{"protocol":"udp","src_ports":["53","123"],"length":{"min":600}},"action":"drop"},
                 {"id":11,"match":{"protocol":"tcp","tcp_flags":{"set":["syn"],"unset":["ack"]}},"action":{"rate_limit":{"pps":10,"burst":50}}}],
        "limits":{"pps":1000000}}]}"#;
    let mut dp = Dataplane::new(MemBackend::new(small()));
    dp.apply(&policy(p), &Clock::now()).unwrap();
    let slot = dp.slot(7).unwrap();
    let rec = dp.backend().records[dp.backend().cur[slot as usize] as usize];
    assert_eq!(rec.digest, GOLDEN_DIGEST, "got {:#x}", rec.digest);
}

/// ABI 2 (records carry the meter flag, rules their expiry), digested by foldhash 0.2 (words,
/// not FNV-1a bytes). A foldhash release that changes its output fails this test: that is
/// safe (every record recompiles once after the upgrade) but should be a decision, not news.
const GOLDEN_DIGEST: u64 = 0xbaae_6b0a_ee22_c41a;

/// With reclaiming deferred, an apply publishes and returns before the RCU barrier; what it
/// replaced (regions, a removed customer's slot, unused ids) is reclaimed by `reclaim`, or
/// first thing by the next apply, so an entry removed and added back keeps a consistent id.
#[test]
fn a_deferred_reclaim_publishes_first_and_reclaims_before_the_next_apply() {
    let mut dp = Dataplane::new(MemBackend::new(small()));
    dp.set_defer_reclaim(true);
    dp.apply(&policy(P1), &Clock::now()).unwrap();
    assert!(
        dp.reclaim(&mut |_| Ok(())).unwrap(),
        "the first apply left its barrier"
    );
    let fill = dp.fill();
    let slot9 = dp.slot(9).unwrap();
    let without9 = without_customer_9();
    let changed = without9.replace("198.18.66.0/24", "198.18.67.0/24");
    let barriers = dp.backend().barriers;
    let s = dp.apply(&policy(&changed), &Clock::now()).unwrap();
    assert_eq!(s.customers_removed, 1);
    assert_eq!(
        dp.backend().barriers,
        barriers,
        "no barrier before the apply returned"
    );
    assert!(dp.reclaim_due());
    // Enforced at once: the new entry drops, the old one is gone, customer 9 is unrouted.
    let (_, v, _, _) = look(
        dp.backend(),
        false,
        ip4([198, 18, 67, 1]),
        ip4([198, 19, 7, 9]),
    );
    assert_eq!(value::action(v), SourceAction::Drop as u32);
    let (_, v, _, _) = look(
        dp.backend(),
        false,
        ip4([198, 18, 66, 1]),
        ip4([198, 19, 7, 9]),
    );
    assert_eq!(v, 0);
    assert_eq!(look(dp.backend(), false, 1, ip4([198, 19, 9, 1])).0, None);
    // Not yet reclaimed: the old regions and the slot are still held.
    assert!(dp.fill().iter().zip(&fill).any(|(a, b)| a.used > b.used));
    assert_eq!(dp.slot(9), Some(slot9));
    let mut released = Vec::new();
    assert!(
        dp.reclaim(&mut |j| {
            released.extend(j.released_ids.iter().copied());
            released.extend(j.released_slots.iter().map(|(_, s)| *s));
            Ok(())
        })
        .unwrap()
    );
    assert_eq!(dp.backend().barriers, barriers + 1);
    assert!(!dp.reclaim_due());
    assert!(!dp.reclaim(&mut |_| Ok(())).unwrap(), "nothing left");
    assert_eq!(dp.slot(9), None);
    assert_eq!(dp.backend().cur[slot9 as usize], 0);
    assert!(released.contains(&slot9), "{released:?}");
    // Removed and added back with no reclaim call in between: the next apply reclaims
    // first, so the entry is assigned an id afresh and counted under it.
    dp.apply(&policy(&without9), &Clock::now()).unwrap();
    dp.apply(&policy(&changed), &Clock::now()).unwrap();
    dp.apply(&policy(&without9), &Clock::now()).unwrap();
    dp.reclaim(&mut |_| Ok(())).unwrap();
    let (_, v, _, _) = look(
        dp.backend(),
        false,
        ip4([198, 18, 66, 1]),
        ip4([198, 19, 7, 9]),
    );
    assert_eq!(value::action(v), SourceAction::Drop as u32);
    let id = value::id(v);
    assert!(
        dp.entry_key(id).is_some(),
        "the enforced entry's id {id} is assigned"
    );
    assert_eq!(dp.fill(), {
        let mut again = Dataplane::new(MemBackend::new(small()));
        again.apply(&policy(&without9), &Clock::now()).unwrap();
        again.fill()
    });
}

/// A reclaim whose barrier is waited for outside the publisher, with an apply in between:
/// the replaced records are freed, but a removed customer's slot only after the later
/// apply's own barrier (a packet routed by the root in between may still reach it), and an
/// entry the later apply uses again keeps its id.
#[test]
fn a_ticket_finished_after_another_apply_frees_only_what_its_barrier_covers() {
    let mut dp = Dataplane::new(MemBackend::new(small()));
    dp.set_defer_reclaim(true);
    dp.apply(&policy(P1), &Clock::now()).unwrap();
    dp.reclaim(&mut |_| Ok(())).unwrap();
    let fill = dp.fill();
    let slot9 = dp.slot(9).unwrap();
    let without9 = without_customer_9();
    let no66 = without9.replace(r#"{"prefix":"198.18.66.0/24","action":"drop"},"#, "");
    dp.apply(&policy(&no66), &Clock::now()).unwrap();
    let t = dp.take_reclaim().expect("something to reclaim");
    // While the barrier is waited for: the entry comes back.
    dp.apply(&policy(&without9), &Clock::now()).unwrap();
    let j = dp.finish_reclaim(t, Ok(())).unwrap();
    assert!(
        j.released_slots.is_empty() && j.released_ids.is_empty(),
        "{j:?}"
    );
    assert_eq!(
        dp.slot(9),
        Some(slot9),
        "not freed: a later commit may route to it"
    );
    let (_, v, _, _) = look(
        dp.backend(),
        false,
        ip4([198, 18, 66, 1]),
        ip4([198, 19, 7, 9]),
    );
    assert_eq!(value::action(v), SourceAction::Drop as u32);
    let id = value::id(v);
    // The later apply's reclaim frees the slot; the entry's id stays its own.
    let (mut slots, mut ids) = (Vec::new(), Vec::new());
    dp.reclaim(&mut |j| {
        slots.extend(j.released_slots.iter().map(|(_, s)| *s));
        ids.extend(j.released_ids.iter().copied());
        Ok(())
    })
    .unwrap();
    assert_eq!(dp.slot(9), None);
    assert_eq!(slots, vec![slot9]);
    assert!(!ids.contains(&id), "{ids:?}");
    assert!(dp.entry_key(id).is_some());
    let mut fresh = Dataplane::new(MemBackend::new(small()));
    fresh.apply(&policy(&without9), &Clock::now()).unwrap();
    assert_eq!(dp.fill(), fresh.fill());
    assert_ne!(dp.fill(), fill);
}
