//! Counting what the kernel side could not do (`portwatch_common::Counter`), so
//! that userspace reports it instead of losing it silently.
use portwatch_common::Counter;

use crate::maps::COUNTERS;

/// `*counter += n` as one BPF atomic instruction (`lock xadd`).
///
/// # Safety
/// `counter` must point to a live, 8-byte aligned u64 in a map value.
#[inline(always)]
unsafe fn atomic_add(counter: *mut u64, n: u64) {
    #[cfg(target_arch = "bpf")]
    unsafe {
        core::arch::asm!("lock *(u64 *)({0} + 0) += {1}", in(reg) counter, in(reg) n);
    }
    #[cfg(not(target_arch = "bpf"))]
    unsafe {
        *counter += n;
    }
}

/// Count one more of `counter` on this CPU.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(value) = COUNTERS.get_ptr_mut(counter as u32) {
        // Atomic: on this CPU a softirq may run another portwatch program in the
        // middle of this one, and a plain increment could lose a count.
        // SAFETY: the map value is a live, aligned u64 for this CPU.
        unsafe { atomic_add(value, 1) };
    }
}
