//! Where a socket's owner is kept between its state changes, behind one interface
//! so the lifecycle in `probes::state` is written once:
//!
//! - [`SkStore`]: socket storage (`SK_OWNERS`), for tracing programs (the BTF
//!   tracepoint, fexit) on kernels that allow it (5.12+ with the socket cookie). No
//!   cap, nothing to evict or delete: the storage lives as long as the socket.
//! - [`MapStore`]: the `SOCKS` LRU hash, where socket storage cannot be used (no
//!   BTF, older kernels, or `--socket-store lru`).
//! - [`PendingStore`]: an accept program that cannot write socket storage (kretprobe,
//!   syscall tracepoint) leaves the exact owner in `ACCEPTED`; [`SkStore::get`]
//!   moves it into the socket's storage at its next state change.
use core::{ffi::c_void, ptr};

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_SK_STORAGE_GET_F_CREATE},
    helpers::generated::{bpf_get_socket_cookie, bpf_sk_storage_get},
};
use portwatch_common::{ConfigFlag, Counter, Origin, OwnerFlag, SockInfo};

use crate::{
    config::{has, setting},
    counters::count,
    kernel,
    maps::{ACCEPTED, SK_OWNERS, SOCKS},
};

/// One socket's owner record, wherever it is kept.
pub trait OwnerStore {
    /// The `struct sock` address.
    fn sk(&self) -> u64;
    /// The socket's cookie (unique for the boot), or 0 where this store cannot get
    /// it: userspace then names the socket by its address and first sighting.
    fn cookie(&self) -> u64;
    /// What was recorded about the socket, if anything.
    fn get(&self) -> Option<SockInfo>;
    /// Record the owner, replacing what was there.
    fn set(&self, info: &SockInfo);
    /// Record the owner unless one is recorded already.
    fn set_if_new(&self, info: &SockInfo);
    /// The socket closed.
    fn forget(&self);
}

/// Socket storage. Only tracing programs (BTF tracepoint, fentry/fexit) may use it,
/// with the `struct sock` pointer exactly as the kernel passed it.
pub struct SkStore {
    sk: *mut c_void,
}

impl SkStore {
    #[inline(always)]
    pub fn new(sk: *mut c_void) -> SkStore {
        SkStore { sk }
    }

    /// The socket's storage, created (zeroed) when `create` and absent.
    #[inline(always)]
    fn slot(&self, create: bool) -> *mut SockInfo {
        let flags = if create {
            BPF_SK_STORAGE_GET_F_CREATE as u64
        } else {
            0
        };
        let map = ptr::from_ref(&SK_OWNERS).cast_mut().cast();
        // SAFETY: `map` is the socket storage map (the loader relocates its
        // address), `sk` the kernel's own sock pointer; the helper checks both.
        unsafe { bpf_sk_storage_get(map, self.sk, ptr::null_mut(), flags) }.cast()
    }

    /// The exact owner an accept program left in `ACCEPTED`, moved into `slot`
    /// (keeping the socket's age and identity), if there is one.
    #[inline(always)]
    fn take_pending(&self, slot: *mut SockInfo, info: SockInfo) -> SockInfo {
        if !has(ConfigFlag::AcceptsPending)
            || info.origin != Origin::Server as u8
            || OwnerFlag::PidExact.is_set(info.flags)
        {
            return info;
        }
        let sk = self.sk as u64;
        // SAFETY: copied out at once.
        let Some(mut accepted) = (unsafe { ACCEPTED.get(sk) }).copied() else {
            return info;
        };
        accepted.start_ns = info.start_ns;
        accepted.born_ns = info.born_ns;
        // SAFETY: `slot` is this socket's live storage.
        unsafe { *slot = accepted };
        let _ = ACCEPTED.remove(sk);
        accepted
    }
}

impl OwnerStore for SkStore {
    #[inline(always)]
    fn sk(&self) -> u64 {
        self.sk as u64
    }

    #[inline(always)]
    fn cookie(&self) -> u64 {
        // SAFETY: the kernel's own sock pointer; the helper generates the cookie on
        // first use, so programs without the helper can read it later.
        unsafe { bpf_get_socket_cookie(self.sk) }
    }

    #[inline(always)]
    fn get(&self) -> Option<SockInfo> {
        let slot = self.slot(false);
        if slot.is_null() {
            return None;
        }
        // SAFETY: non-null storage of this socket.
        let info = unsafe { *slot };
        // Zeroed: created but never written (the write failed half-way).
        if info.start_ns == 0 && info.born_ns == 0 {
            return None;
        }
        Some(self.take_pending(slot, info))
    }

    #[inline(always)]
    fn set(&self, info: &SockInfo) {
        let slot = self.slot(true);
        if slot.is_null() {
            count(Counter::OwnerUnstored);
            return;
        }
        // SAFETY: non-null storage of this socket.
        unsafe { *slot = *info };
    }

    #[inline(always)]
    fn set_if_new(&self, info: &SockInfo) {
        if self.get().is_none() {
            self.set(info);
        }
    }

    #[inline(always)]
    fn forget(&self) {
        // Nothing to do: the storage is freed with the socket, and a socket that
        // connects again is recorded anew.
    }
}

/// The `SOCKS` LRU hash.
pub struct MapStore {
    sk: u64,
}

impl MapStore {
    #[inline(always)]
    pub fn new(sk: u64) -> MapStore {
        MapStore { sk }
    }
}

impl OwnerStore for MapStore {
    #[inline(always)]
    fn sk(&self) -> u64 {
        self.sk
    }

    #[inline(always)]
    fn cookie(&self) -> u64 {
        0
    }

    #[inline(always)]
    fn get(&self) -> Option<SockInfo> {
        // SAFETY: the value is copied out at once.
        unsafe { SOCKS.get(self.sk) }.copied()
    }

    #[inline(always)]
    fn set(&self, info: &SockInfo) {
        // An LRU hash evicts rather than fails; a failure is an allocation one.
        if SOCKS.insert(self.sk, info, 0).is_err() {
            count(Counter::OwnerUnstored);
        }
    }

    #[inline(always)]
    fn set_if_new(&self, info: &SockInfo) {
        // Failing because an entry exists is the point.
        let _ = SOCKS.insert(self.sk, info, BPF_NOEXIST as u64);
    }

    #[inline(always)]
    fn forget(&self) {
        let _ = SOCKS.remove(self.sk);
    }
}

/// The `ACCEPTED` map, for accept programs that cannot write socket storage.
pub struct PendingStore {
    sk: u64,
}

impl PendingStore {
    #[inline(always)]
    pub fn new(sk: u64) -> PendingStore {
        PendingStore { sk }
    }
}

impl OwnerStore for PendingStore {
    #[inline(always)]
    fn sk(&self) -> u64 {
        self.sk
    }

    #[inline(always)]
    fn cookie(&self) -> u64 {
        // Generated when the BTF tracepoint program first saw the socket (its
        // creation on the listener).
        // SAFETY: a kernel read of an integer.
        unsafe { kernel::read(self.sk, setting!(offsets.skc_cookie)) }.unwrap_or(0)
    }

    #[inline(always)]
    fn get(&self) -> Option<SockInfo> {
        // The socket's storage (its age and identity) is out of reach here; they
        // are kept when the owner moves in.
        None
    }

    #[inline(always)]
    fn set(&self, info: &SockInfo) {
        if ACCEPTED.insert(self.sk, info, 0).is_err() {
            count(Counter::AcceptUnrecorded);
        }
    }

    #[inline(always)]
    fn set_if_new(&self, info: &SockInfo) {
        self.set(info);
    }

    #[inline(always)]
    fn forget(&self) {
        let _ = ACCEPTED.remove(self.sk);
    }
}
