//! The few bpf(2) and mmap(2) calls aya 0.14 does not wrap: batched array writes, the RCU
//! barrier, and memory-mapping the `CUR` map for single-store publication.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// `union bpf_attr`, as far as these calls use it; the kernel zero-extends a shorter attr.
#[repr(C, align(8))]
struct Attr([u32; 32]);

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, zero-initialised bpf_attr prefix of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr,
            std::mem::size_of::<Attr>() as u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn set_u64(attr: &mut Attr, word: usize, v: u64) {
    attr.0[word] = v as u32;
    attr.0[word + 1] = (v >> 32) as u32;
}

fn create_map(map_type: u32, value_size: u32, inner_fd: Option<i32>) -> io::Result<OwnedFd> {
    let mut a = Attr([0; 32]);
    a.0[0] = map_type;
    a.0[1] = 4; // key_size
    a.0[2] = value_size;
    a.0[3] = 1; // max_entries
    a.0[5] = inner_fd.unwrap_or(0) as u32;
    let fd = bpf(BPF_MAP_CREATE, &mut a)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until no BPF program that could have read the old contents of a published slot is
/// still running. Updating an array-of-maps makes the kernel call `synchronize_rcu()` before
/// returning (`maybe_wait_bpf_programs`), and XDP programs run inside RCU read sections; so
/// after `wait()`, memory that was unpublished before it may be reused.
pub struct Barrier {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl Barrier {
    pub fn new() -> io::Result<Barrier> {
        let inner = create_map(BPF_MAP_TYPE_ARRAY, 4, None)?;
        let outer = create_map(BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, Some(inner.as_raw_fd()))?;
        Ok(Barrier { outer, inner })
    }

    pub fn wait(&self) -> io::Result<()> {
        let key: u32 = 0;
        let value: u32 = self.inner.as_raw_fd() as u32;
        let mut a = Attr([0; 32]);
        a.0[0] = self.outer.as_raw_fd() as u32;
        set_u64(&mut a, 2, &key as *const u32 as u64);
        set_u64(&mut a, 4, &value as *const u32 as u64);
        bpf(BPF_MAP_UPDATE_ELEM, &mut a)?;
        Ok(())
    }
}

/// Writes `values` at consecutive array indices from `first` in one syscall per chunk.
pub fn array_update_batch<V>(fd: BorrowedFd<'_>, first: u32, values: &[V]) -> io::Result<()> {
    const CHUNK: usize = 16_384;
    for (c, chunk) in values.chunks(CHUNK).enumerate() {
        let base = first + (c * CHUNK) as u32;
        let keys: Vec<u32> = (0..chunk.len() as u32).map(|i| base + i).collect();
        let mut a = Attr([0; 32]);
        set_u64(&mut a, 4, keys.as_ptr() as u64); // keys
        set_u64(&mut a, 6, chunk.as_ptr() as u64); // values
        a.0[8] = chunk.len() as u32; // count
        a.0[9] = fd.as_raw_fd() as u32; // map_fd
        bpf(BPF_MAP_UPDATE_BATCH, &mut a)?;
    }
    Ok(())
}

/// A memory-mapped `BPF_F_MMAPABLE` array of `u32`. Array maps store each value in a slot
/// rounded up to 8 bytes, so element `i` sits at byte `8 * i`.
pub struct MappedU32 {
    ptr: NonNull<AtomicU32>,
    len: usize,
    bytes: usize,
}

/// Bytes per array element holding a `u32` value.
const ELEM: usize = 8;

// SAFETY: the mapping is shared memory accessed only through atomics.
unsafe impl Send for MappedU32 {}
unsafe impl Sync for MappedU32 {}

impl MappedU32 {
    pub fn new(fd: BorrowedFd<'_>, len: u32) -> io::Result<MappedU32> {
        let page = 4096usize;
        let bytes = (len as usize * ELEM).div_ceil(page) * page;
        // SAFETY: mapping a bpf array fd; the kernel validates size and flags.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(MappedU32 {
            ptr: NonNull::new(p.cast()).ok_or_else(io::Error::last_os_error)?,
            len: len as usize,
            bytes,
        })
    }

    fn cell(&self, i: u32) -> &AtomicU32 {
        assert!(
            (i as usize) < self.len,
            "index {i} outside mapped array of {}",
            self.len
        );
        // SAFETY: in bounds of a live mapping, 8-byte aligned (page-aligned base).
        unsafe { &*self.ptr.as_ptr().add(i as usize * (ELEM / 4)) }
    }

    pub fn load(&self, i: u32) -> u32 {
        self.cell(i).load(Ordering::Acquire)
    }

    /// One aligned 32-bit store: readers see the old or the new value, never a mix. Release
    /// ordering makes everything written before it visible to a reader that sees it.
    pub fn store(&self, i: u32, v: u32) {
        self.cell(i).store(v, Ordering::Release);
    }
}

impl Drop for MappedU32 {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.bytes);
        }
    }
}

/// Zeroes the per-CPU values of `keys` in a per-CPU array whose values are `value_size`
/// bytes, on `ncpus` possible CPUs.
pub fn percpu_zero_batch(
    fd: BorrowedFd<'_>,
    keys: &[u32],
    value_size: usize,
    ncpus: usize,
) -> io::Result<()> {
    const CHUNK: usize = 4096;
    let stride = value_size.div_ceil(8) * 8 * ncpus;
    let zeros = vec![0u64; CHUNK * stride / 8];
    for chunk in keys.chunks(CHUNK) {
        let mut a = Attr([0; 32]);
        set_u64(&mut a, 4, chunk.as_ptr() as u64);
        set_u64(&mut a, 6, zeros.as_ptr() as u64);
        a.0[8] = chunk.len() as u32;
        a.0[9] = fd.as_raw_fd() as u32;
        bpf(BPF_MAP_UPDATE_BATCH, &mut a)?;
    }
    Ok(())
}
