//! A customer's policy changes atomically: two threads run packets through the real program
//! (BPF_PROG_TEST_RUN, one per CPU) while the main thread flips the customer between two
//! large, different policies; every packet must get the verdict of one policy or the other,
//! never something neither would give. Then a policy too large for the maps is refused and
//! the old one stays in force.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use mssp_common::Reason;
use mssp_core::{
    dataplane::{
        Clock, Dataplane, DataplaneError, Desired, backend::Capacities, kernel::KernelBackend,
    },
    loader::{self, LoadOptions},
    policy::cidr::format_net,
    simulate::trace_run,
};
use mssp_tests::{packet::Frame, policy, require_root};

const PROBES: u32 = 3000;
const FILLER: u32 = 12_000;

fn probe_addr(i: u32) -> String {
    // 198.18.0.0/15, four addresses apart so each probe owns a /31 and a /32.
    let a = 0xc612_0000u32 + 4 * i;
    std::net::Ipv4Addr::from(a).to_string()
}

/// Policy A: a /32 per probe (drop, allow, monitor by i % 3) and filler /32s.
/// Policy B: a /31 per probe (allow, drop, monitor) and different filler /30s.
fn policy_json(b: bool, version: u64) -> String {
    let mut entries = Vec::new();
    for i in 0..PROBES {
        let action = match (i % 3, b) {
            (0, false) | (1, true) => "drop",
            (1, false) | (0, true) => "allow",
            _ => "monitor",
        };
        let len = if b { 31 } else { 32 };
        entries.push(format!(
            r#"{{"prefix":"{}/{len}","action":"{action}"}}"#,
            probe_addr(i)
        ));
    }
    for i in 0..FILLER {
        // Filler in 198.19.128.0/17 (never probed), different in each policy.
        let base = 0xc613_8000u32 + 4 * i;
        let (addr, len) = if b { (base, 30) } else { (base + 1, 32) };
        entries.push(format!(
            r#"{{"prefix":"{}/{len}","action":"drop"}}"#,
            std::net::Ipv4Addr::from(addr)
        ));
    }
    format!(
        r#"{{"version":{version},"customers":[{{"id":7,"prefixes":["198.19.7.0/24"],"sources":[{}]}}]}}"#,
        entries.join(",")
    )
}

/// (reason, deciding prefix) a probe gets under a policy.
fn expected(i: u32, b: bool) -> (Reason, Option<String>) {
    let len = if b { 31 } else { 32 };
    let pfx = Some(format!("{}/{len}", probe_addr(i)));
    match (i % 3, b) {
        (0, false) | (1, true) => (Reason::CustomerBlock, pfx),
        (1, false) | (0, true) => (Reason::Allowlisted, pfx),
        _ => (Reason::Default, None),
    }
}

#[test]
fn flips_under_traffic_never_mix_and_failures_keep_the_old_policy() {
    require_root();
    let mut ebpf = loader::load(&LoadOptions {
        trace: true,
        capacities: Some(Capacities {
            nodes4: 8192,
            ..Capacities::default()
        }),
        ..LoadOptions::default()
    })
    .expect("load");
    let backend = KernelBackend::from_ebpf(&mut ebpf).expect("maps");
    let mut dp = Dataplane::new(backend);
    let a = Desired::from_policy(&policy(&policy_json(false, 1)));
    let b = Desired::from_policy(&policy(&policy_json(true, 2)));
    // Every name an entry id has ever had, recorded by the publisher's journal before the id
    // is published (ids are reused once released, so one id may have had several names).
    let ever: Arc<std::sync::Mutex<HashMap<u32, HashSet<String>>>> = Default::default();
    let record = |ever: &Arc<std::sync::Mutex<HashMap<u32, HashSet<String>>>>| {
        let ever = ever.clone();
        move |j: &mssp_core::dataplane::Journal| -> Result<(), String> {
            let mut e = ever.lock().unwrap();
            for (k, id) in &j.assigned_ids {
                e.entry(*id).or_default().insert(format_net(&k.net));
            }
            Ok(())
        }
    };
    dp.apply_journaled(&a, &Clock::now(), &mut record(&ever))
        .expect("apply A");
    let ebpf = Arc::new(ebpf);
    let stop = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicU64::new(0));
    let mut runners = Vec::new();
    for t in 0..2u32 {
        let (ebpf, stop, checked, ever) =
            (ebpf.clone(), stop.clone(), checked.clone(), ever.clone());
        runners.push(std::thread::spawn(move || -> Result<(), String> {
            let frames: Vec<Vec<u8>> = (0..PROBES)
                .map(|i| Frame::new(&probe_addr(i), "198.19.7.9").build())
                .collect();
            let mut i = t * 7919 % PROBES;
            while !stop.load(Ordering::Relaxed) {
                i = (i + 7919) % PROBES;
                let (_, tr) = trace_run(&ebpf, &frames[i as usize])
                    .map_err(|e| e.to_string())?
                    .unwrap();
                let reason = Reason::from_u32(tr.reason).unwrap();
                let names: HashSet<String> = if tr.entry == 0 {
                    HashSet::new()
                } else {
                    ever.lock()
                        .unwrap()
                        .get(&tr.entry)
                        .cloned()
                        .unwrap_or_default()
                };
                let fits = |(r, p): (Reason, Option<String>)| {
                    r == reason
                        && match p {
                            None => tr.entry == 0,
                            Some(p) => names.contains(&p),
                        }
                };
                if !fits(expected(i, false)) && !fits(expected(i, true)) {
                    return Err(format!(
                        "probe {} got {reason:?} by entry {} {names:?}; A says {:?}, B says {:?}",
                        probe_addr(i),
                        tr.entry,
                        expected(i, false),
                        expected(i, true)
                    ));
                }
                checked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    let started = Instant::now();
    let mut flips = 0;
    while flips < 40 || started.elapsed() < Duration::from_secs(3) {
        let next = if flips % 2 == 0 { &b } else { &a };
        let stats = dp
            .apply_journaled(next, &Clock::now(), &mut record(&ever))
            .expect("flip");
        assert_eq!(stats.customers_changed, 1);
        flips += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for r in runners {
        r.join().unwrap().unwrap();
    }
    let n = checked.load(Ordering::Relaxed);
    println!("{flips} flips, {n} packets checked");
    assert!(n > 20_000, "too little traffic during the flips: {n}");

    // A policy the maps cannot hold is refused, and the last one stays wholly in force.
    let live = flips % 2 != 0;
    let mut huge = policy_json(!live, 99);
    huge = huge.replace(
        "]}]}",
        &format!(
            ",{}]}}]}}",
            (0..60_000u32)
                .map(|i| format!(
                    r#"{{"prefix":"{}/32","action":"drop"}}"#,
                    std::net::Ipv4Addr::from(0xc613_0000u32 + 2 * i)
                ))
                .collect::<Vec<_>>()
                .join(",")
        ),
    );
    let e = dp
        .apply(&Desired::from_policy(&policy(&huge)), &Clock::now())
        .unwrap_err();
    assert!(matches!(e, DataplaneError::Full(_)), "{e}");
    let ever = ever.lock().unwrap();
    for i in (0..PROBES).step_by(97) {
        let (_, tr) = trace_run(&ebpf, &Frame::new(&probe_addr(i), "198.19.7.9").build())
            .unwrap()
            .unwrap();
        let (r, p) = expected(i, live);
        assert_eq!(
            Reason::from_u32(tr.reason).unwrap(),
            r,
            "after the refused apply, probe {i}"
        );
        if let Some(p) = p {
            assert!(
                ever.get(&tr.entry).is_some_and(|n| n.contains(&p)),
                "after the refused apply, probe {i}: entry {}",
                tr.entry
            );
        }
    }
}
