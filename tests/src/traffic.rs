//! Real traffic for end-to-end tests: UDP datagrams and ICMP echo, sent and counted through
//! the kernel's own sockets inside test namespaces.

use std::{
    collections::HashMap,
    mem::MaybeUninit,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::Netns;

/// Counts UDP datagrams per source address until stopped.
pub struct UdpSink {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<HashMap<IpAddr, u64>>,
}

impl UdpSink {
    pub fn start(ns: &Netns, bind: SocketAddr) -> UdpSink {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = ns.spawn(move || {
            let sock = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut counts: HashMap<IpAddr, u64> = HashMap::new();
            let mut buf = [0u8; 2048];
            while !s2.load(Ordering::Relaxed) {
                if let Ok((_, from)) = sock.recv_from(&mut buf) {
                    *counts.entry(from.ip()).or_default() += 1;
                }
            }
            // Drain what is queued.
            while let Ok((_, from)) = sock.recv_from(&mut buf) {
                *counts.entry(from.ip()).or_default() += 1;
            }
            counts
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("sink ready");
        UdpSink { stop, handle }
    }

    /// Waits `settle` for stragglers, then returns the counts.
    pub fn finish(self, settle: Duration) -> HashMap<IpAddr, u64> {
        std::thread::sleep(settle);
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("sink thread")
    }
}

/// Sends `n` datagrams from `src` to `dst`, spaced by `gap`.
pub fn udp_send(ns: &Netns, src: SocketAddr, dst: SocketAddr, n: u64, gap: Duration) {
    ns.run(move || {
        let sock = UdpSocket::bind(src).unwrap_or_else(|e| panic!("bind {src}: {e}"));
        for i in 0..n {
            sock.send_to(&i.to_be_bytes(), dst)
                .unwrap_or_else(|e| panic!("send {src} -> {dst}: {e}"));
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
        }
    });
}

fn icmp_echo(id: u16, seq: u16, v6: bool) -> Vec<u8> {
    let mut b = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    b.extend(id.to_be_bytes());
    b.extend(seq.to_be_bytes());
    b.extend([0x5a; 24]);
    if !v6 {
        // The kernel computes ICMPv6 checksums on raw sockets; ICMPv4 is ours to fill in.
        let mut sum = 0u32;
        for c in b.chunks(2) {
            sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let ck = !(sum as u16);
        b[2..4].copy_from_slice(&ck.to_be_bytes());
    }
    b
}

/// Sends `n` echo requests from `src` to `dst` and returns how many replies came back.
pub fn ping(ns: &Netns, src: IpAddr, dst: IpAddr, n: u16, gap: Duration) -> u64 {
    ns.run(move || {
        let v6 = src.is_ipv6();
        let (dom, proto) = if v6 {
            (Domain::IPV6, Protocol::ICMPV6)
        } else {
            (Domain::IPV4, Protocol::ICMPV4)
        };
        let sock = Socket::new(dom, Type::RAW, Some(proto)).expect("raw icmp socket");
        sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))
            .expect("bind icmp");
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let id = (std::process::id() & 0xffff) as u16 ^ 0x4d53;
        let to = SockAddr::from(SocketAddr::new(dst, 0));
        let mut replies = 0u64;
        let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
        let mut drain = |replies: &mut u64, until: Instant| {
            while Instant::now() < until {
                let Ok((len, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                // SAFETY: recv_from initialised the first `len` bytes.
                let data: Vec<u8> = buf[..len]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                let from_ip = from.as_socket().map(|s| s.ip());
                if from_ip != Some(dst) {
                    continue;
                }
                // IPv4 raw sockets include the IP header; IPv6 ones do not.
                let icmp = if v6 {
                    &data[..]
                } else {
                    &data[((data[0] & 0xf) as usize) * 4..]
                };
                let reply_type = if v6 { 129 } else { 0 };
                if icmp.len() >= 8
                    && icmp[0] == reply_type
                    && u16::from_be_bytes([icmp[4], icmp[5]]) == id
                {
                    *replies += 1;
                }
            }
        };
        for seq in 0..n {
            sock.send_to(&icmp_echo(id, seq, v6), &to)
                .expect("send echo");
            drain(&mut replies, Instant::now() + gap);
        }
        drain(&mut replies, Instant::now() + Duration::from_millis(300));
        replies
    })
}
