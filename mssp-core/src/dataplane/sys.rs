//! The few bpf(2) and mmap(2) calls aya 0.14 does not wrap: batched array writes, the RCU
//! barrier, and memory-mapping the `CUR` map for single-store publication.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
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
#[derive(Clone)]
pub struct Barrier {
    outer: std::sync::Arc<OwnedFd>,
    inner: std::sync::Arc<OwnedFd>,
}

impl Barrier {
    pub fn new() -> io::Result<Barrier> {
        let inner = create_map(BPF_MAP_TYPE_ARRAY, 4, None)?;
        let outer = create_map(BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, Some(inner.as_raw_fd()))?;
        Ok(Barrier {
            outer: outer.into(),
            inner: inner.into(),
        })
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
    // As many zeros as the largest call needs: a slot's counters are a few dozen keys, and
    // 10k new customers allocated (and faulted in) 64 KiB each.
    let zeros = vec![0u64; keys.len().min(CHUNK) * stride / 8];
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

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// What `BPF_OBJ_GET_INFO_BY_FD` says of an XDP link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpLinkInfo {
    pub link_type: u32,
    pub id: u32,
    pub prog_id: u32,
    /// 0 once the interface is gone (the link is defunct).
    pub ifindex: u32,
}

pub const BPF_LINK_TYPE_XDP: u32 = 6;

/// `struct bpf_link_info`: type, id, prog_id, then (8-aligned) the per-type union, whose XDP
/// member starts with the ifindex.
pub fn link_info(fd: BorrowedFd<'_>) -> io::Result<XdpLinkInfo> {
    let mut info = [0u32; 32];
    let mut a = Attr([0; 32]);
    a.0[0] = fd.as_raw_fd() as u32;
    a.0[1] = std::mem::size_of_val(&info) as u32;
    set_u64(&mut a, 2, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    Ok(XdpLinkInfo {
        link_type: info[0],
        id: info[1],
        prog_id: info[2],
        ifindex: info[4],
    })
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `path` (which must exist) is on a bpffs.
pub fn is_bpffs(path: &std::path::Path) -> io::Result<bool> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statfs fills the struct it is given.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Mounts a bpffs at `path`.
pub fn mount_bpffs(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: plain mount(2) with valid C strings.
    let r = unsafe {
        libc::mount(
            c"bpffs".as_ptr(),
            c.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

const BPF_OBJ_GET: libc::c_long = 7;

/// Opens a pinned BPF object.
pub fn obj_get(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut a = Attr([0; 32]);
    set_u64(&mut a, 0, c.as_ptr() as u64);
    let fd = bpf(BPF_OBJ_GET, &mut a)?;
    // SAFETY: a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Link info of a pinned link.
pub fn pinned_link_info(path: &std::path::Path) -> io::Result<XdpLinkInfo> {
    let fd = obj_get(path)?;
    link_info(fd.as_fd())
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Reads `count` consecutive per-CPU values from `start` (values of `value_size` bytes on
/// `ncpus` CPUs), as the kernel lays them out: for each key, one slot per CPU.
pub fn percpu_lookup_batch(
    fd: BorrowedFd<'_>,
    start: u32,
    count: u32,
    value_size: usize,
    ncpus: usize,
) -> io::Result<Vec<u8>> {
    let stride = value_size.div_ceil(8) * 8 * ncpus;
    let mut values = vec![0u8; count as usize * stride];
    let mut keys = vec![0u32; count as usize];
    let mut done = 0u32;
    // The batch token of an array is the last key read; reading resumes after it.
    let mut prev: u32 = start.wrapping_sub(1);
    let mut next: u32 = 0;
    while done < count {
        let mut a = Attr([0; 32]);
        if done > 0 || start > 0 {
            set_u64(&mut a, 0, &prev as *const u32 as u64);
        }
        set_u64(&mut a, 2, &mut next as *mut u32 as u64);
        set_u64(&mut a, 4, keys[done as usize..].as_mut_ptr() as u64);
        set_u64(
            &mut a,
            6,
            values[done as usize * stride..].as_mut_ptr() as u64,
        );
        a.0[8] = count - done;
        a.0[9] = fd.as_raw_fd() as u32;
        let r = bpf(BPF_MAP_LOOKUP_BATCH, &mut a);
        let got = a.0[8];
        done += got;
        match r {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => return Err(e),
        }
        if got == 0 {
            break;
        }
        prev = next;
    }
    values.truncate(done as usize * stride);
    Ok(values)
}
