//! One AF_XDP socket on one queue of one interface, with its own UMEM: the lower half of
//! the frames receives, the upper half transmits (mssp's answers to clients).

use std::{ffi::CString, io, num::NonZeroU32, ptr::NonNull};

use xdpilone::{
    BufIdx, DeviceQueue, Errno, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig,
    User,
};

pub const FRAME: u32 = 2048;
const NFRAMES: u32 = 4096;
const RX_FRAMES: u32 = 2048;
const RING: u32 = 2048;

fn ioerr(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.get_raw().abs())
}

struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

impl Area {
    fn new(len: usize) -> io::Result<Area> {
        // SAFETY: an anonymous private mapping, unmapped in Drop.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Area {
            ptr: NonNull::new(p.cast::<u8>()).expect("mmap gave a non-null pointer"),
            len,
        })
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; every ring using it is dropped first.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Rings and UMEM of one socket. Field order is drop order: the rings go before the area.
pub struct Xsk {
    rx: RingRx,
    tx: RingTx,
    dev: DeviceQueue,
    user: User,
    umem: Umem,
    rx_free: Vec<u64>,
    tx_free: Vec<u64>,
    pub zerocopy: bool,
    area: Area,
}

// SAFETY: the UMEM's pointer is to a mapping this value owns; it moves to the inspector's
// thread with everything that uses it.
unsafe impl Send for Xsk {}

struct Rings {
    umem: Umem,
    dev: DeviceQueue,
    user: User,
    rx: RingRx,
    tx: RingTx,
}

fn open_rings(area: &Area, ifname: &str, queue: u32, flags: u16) -> io::Result<Rings> {
    let cfg = UmemConfig {
        fill_size: RING,
        complete_size: RING,
        frame_size: FRAME,
        headroom: 0,
        flags: 0,
    };
    // SAFETY: the area is page-aligned (mmap) and outlives the rings (see `Xsk`).
    let umem = unsafe { Umem::new(cfg, NonNull::slice_from_raw_parts(area.ptr, area.len)) }
        .map_err(ioerr)?;
    let mut info = IfInfo::invalid();
    let name = CString::new(ifname).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    info.from_name(&name).map_err(ioerr)?;
    info.set_queue(queue);
    let sock = Socket::with_shared(&info, &umem).map_err(ioerr)?;
    let dev = umem.fq_cq(&sock).map_err(ioerr)?;
    let user = umem
        .rx_tx(
            &sock,
            &SocketConfig {
                rx_size: NonZeroU32::new(RING),
                tx_size: NonZeroU32::new(RING),
                bind_flags: flags,
            },
        )
        .map_err(ioerr)?;
    let rx = user.map_rx().map_err(ioerr)?;
    let tx = user.map_tx().map_err(ioerr)?;
    umem.bind(&user).map_err(ioerr)?;
    Ok(Rings {
        umem,
        dev,
        user,
        rx,
        tx,
    })
}

impl Xsk {
    /// Binds a socket to `queue` of `ifname`: zero-copy first unless `mode` is "copy",
    /// copy mode where the driver has no zero-copy unless `mode` is "zerocopy".
    pub fn open(ifname: &str, queue: u32, mode: &str) -> io::Result<Xsk> {
        let area = Area::new((FRAME * NFRAMES) as usize)?;
        let nw = SocketConfig::XDP_BIND_NEED_WAKEUP;
        let (rings, zerocopy) = match mode {
            "copy" => (
                open_rings(&area, ifname, queue, SocketConfig::XDP_BIND_COPY | nw)?,
                false,
            ),
            "zerocopy" => (
                open_rings(&area, ifname, queue, SocketConfig::XDP_BIND_ZEROCOPY | nw)?,
                true,
            ),
            _ => match open_rings(&area, ifname, queue, SocketConfig::XDP_BIND_ZEROCOPY | nw) {
                Ok(r) => (r, true),
                Err(e) => {
                    log::info!("{ifname} queue {queue}: no zero-copy ({e}); using copy mode");
                    (
                        open_rings(&area, ifname, queue, SocketConfig::XDP_BIND_COPY | nw)?,
                        false,
                    )
                }
            },
        };
        let Rings {
            umem,
            dev,
            user,
            rx,
            tx,
        } = rings;
        let mut x = Xsk {
            rx,
            tx,
            dev,
            user,
            umem,
            rx_free: (0..RX_FRAMES as u64).map(|i| i * FRAME as u64).collect(),
            tx_free: (RX_FRAMES as u64..NFRAMES as u64)
                .map(|i| i * FRAME as u64)
                .collect(),
            zerocopy,
            area,
        };
        x.refill();
        Ok(x)
    }

    pub fn fd(&self) -> i32 {
        self.user.as_raw_fd()
    }

    fn refill(&mut self) {
        if self.rx_free.is_empty() {
            return;
        }
        {
            let mut w = self.dev.fill(self.rx_free.len() as u32);
            let n = w.capacity() as usize;
            let start = self.rx_free.len() - n;
            w.insert(self.rx_free.drain(start..));
            w.commit();
        }
        if self.dev.needs_wakeup() {
            self.dev.wake();
        }
    }

    /// Calls `f` with every received frame (at most `budget`), then gives the frames back.
    pub fn receive(&mut self, budget: u32, mut f: impl FnMut(&mut [u8])) -> u32 {
        let base = self.area.ptr.as_ptr();
        let mut n = 0;
        {
            let mut r = self.rx.receive(budget);
            while let Some(d) = r.read() {
                let (addr, len) = (d.addr as usize, d.len as usize);
                if addr + len <= self.area.len {
                    // SAFETY: the kernel handed this frame to us; it is ours until refilled.
                    let frame = unsafe { core::slice::from_raw_parts_mut(base.add(addr), len) };
                    f(frame);
                }
                self.rx_free.push(d.addr & !(FRAME as u64 - 1));
                n += 1;
            }
            r.release();
        }
        self.refill();
        n
    }

    /// Queues `frame` for transmission out of this socket's interface and kicks the kernel.
    /// `false` when no TX frame is free (the answer is lost; the client retries).
    pub fn send(&mut self, frame: &[u8]) -> bool {
        self.reap();
        if frame.len() > FRAME as usize {
            return false;
        }
        let Some(addr) = self.tx_free.pop() else {
            return false;
        };
        let Some(chunk) = self.umem.frame(BufIdx((addr / FRAME as u64) as u32)) else {
            return false;
        };
        // SAFETY: a TX frame of our UMEM not owned by the kernel (it is in tx_free).
        let buf: &mut [u8] = unsafe { &mut *chunk.addr.as_ptr() };
        buf[..frame.len()].copy_from_slice(frame);
        let ok = {
            let mut w = self.tx.transmit(1);
            let ok = w.insert_once(chunk.as_xdp_with_len(frame.len() as u32));
            w.commit();
            ok
        };
        if !ok {
            self.tx_free.push(addr);
            return false;
        }
        // Copy mode transmits only on sendto.
        self.tx.wake();
        true
    }

    fn reap(&mut self) {
        let mut c = self.dev.complete(RING);
        while let Some(a) = c.read() {
            self.tx_free.push(a);
        }
        c.release();
    }
}
