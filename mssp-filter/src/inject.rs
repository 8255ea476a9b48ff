//! The exception path allowed packets take back into the kernel: a TAP device. A frame
//! written to it is *received* by the kernel as if it had arrived on that device, so it
//! is routed, filtered (netfilter FORWARD) and forwarded exactly like a packet that never
//! left the kernel: TTL, ICMP errors, neighbour resolution and the egress interface are
//! the kernel's, with no second copy of the routing table in mssp.

use std::{
    ffi::CString,
    fs::{File, OpenOptions},
    io::{self, Write},
    os::fd::AsRawFd,
};

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: [u8; 24],
}

fn ifreq(name: &str) -> IfReq {
    let mut r = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: [0; 24],
    };
    for (d, s) in r.name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *d = s as libc::c_char;
    }
    r
}

pub struct Injector {
    tap: File,
    pub name: String,
    mac: [u8; 6],
}

fn sysctl(path: &str, value: &str) {
    if let Err(e) = std::fs::write(path, value) {
        log::warn!("cannot set {path} = {value}: {e}");
    }
}

impl Injector {
    /// Creates the TAP device `name` (it goes away with this process), brings it up and
    /// lets it forward what it receives.
    pub fn open(name: &str) -> io::Result<Injector> {
        let tap = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        let mut r = ifreq(name);
        r.data[..2].copy_from_slice(&(IFF_TAP | IFF_NO_PI).to_ne_bytes());
        // SAFETY: TUNSETIFF reads and writes an ifreq we own.
        if unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETIFF, &mut r) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let res = (|| {
            let mut r = ifreq(name);
            // SAFETY: both ioctls take an ifreq we own.
            if unsafe { libc::ioctl(sock, libc::SIOCGIFHWADDR, &mut r) } < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&r.data[2..8]);
            let mut r = ifreq(name);
            if unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut r) } < 0 {
                return Err(io::Error::last_os_error());
            }
            let flags = i16::from_ne_bytes([r.data[0], r.data[1]]) | libc::IFF_UP as i16;
            r.data[..2].copy_from_slice(&flags.to_ne_bytes());
            if unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &mut r) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(mac)
        })();
        unsafe { libc::close(sock) };
        let mac = res?;
        // Sources arriving here belong to other interfaces' routes: no reverse-path check,
        // and IPv6 forwards what it receives here as the router does elsewhere.
        let _ = CString::new(name);
        sysctl(&format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"), "0");
        sysctl(&format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "0");
        if let Ok(all) = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding") {
            sysctl(
                &format!("/proc/sys/net/ipv6/conf/{name}/forwarding"),
                all.trim(),
            );
        }
        Ok(Injector {
            tap,
            name: name.to_string(),
            mac,
        })
    }

    /// Hands `frame` to the kernel as received (its destination MAC becomes the device's).
    pub fn inject(&mut self, frame: &mut [u8]) -> io::Result<()> {
        if frame.len() < 14 {
            return Ok(());
        }
        frame[..6].copy_from_slice(&self.mac);
        self.tap.write_all(frame)
    }
}
