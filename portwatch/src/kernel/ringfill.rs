//! How full the ring buffer is, for `portwatch_ringbuf_used_ratio`: the kernel's
//! consumer and producer positions, read from a read-only mapping of the ring
//! buffer map's first two pages (the kernel allows any process holding the map
//! to map them so). Reading them costs the kernel side nothing.
use std::{
    io,
    os::fd::BorrowedFd,
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use super::bpf_sys::map_max_entries;

pub struct RingFill {
    pages: NonNull<std::ffi::c_void>,
    page: usize,
    size: u64,
}

impl RingFill {
    /// Map the positions of the ring buffer map `fd`.
    pub fn new(fd: BorrowedFd<'_>) -> io::Result<RingFill> {
        let size = map_max_entries(fd)?;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096) as usize;
        let len = std::num::NonZeroUsize::new(2 * page).expect("two pages");
        // SAFETY: a new shared read-only mapping of the map's first two pages
        // (consumer position, producer position), unmapped on drop.
        let pages = unsafe { mmap(None, len, ProtFlags::PROT_READ, MapFlags::MAP_SHARED, fd, 0) }?;
        Ok(RingFill {
            pages,
            page,
            size: u64::from(size),
        })
    }

    fn position(&self, page: usize) -> u64 {
        // SAFETY: the mapping holds two pages, each beginning with the kernel's
        // 8-byte-aligned position, which the kernel updates atomically.
        let at = unsafe {
            &*(self.pages.as_ptr().cast::<u8>().add(page * self.page) as *const AtomicU64)
        };
        at.load(Ordering::Acquire)
    }

    /// The share of the ring buffer holding records not read yet, 0 to 1.
    pub fn used_ratio(&self) -> f64 {
        let consumer = self.position(0);
        let producer = self.position(1);
        (producer.saturating_sub(consumer) as f64 / self.size.max(1) as f64).min(1.0)
    }
}

impl Drop for RingFill {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new, not used after this.
        let _ = unsafe { munmap(self.pages, 2 * self.page) };
    }
}

// The mapping is only read, through atomics.
unsafe impl Send for RingFill {}
