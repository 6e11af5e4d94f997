//! The load-time configuration userspace fills in before loading: kernel offsets,
//! kernel-side filters, wakeup batching and feature flags. A read-only global
//! ([`crate::names::GLOBAL_CONFIG`]) in the eBPF object.
use crate::offsets::KernelOffsets;

/// How many values each kernel-side filter takes.
pub const FILTER_MAX: usize = 8;

/// What the kernel side needs but cannot know by itself, set by userspace before
/// loading.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Tracepoint field and kernel struct member offsets (see [`crate::Offset`]).
    pub offsets: KernelOffsets,
    /// `syscalls:sys_exit_accept{,4}` offset of `ret`. Not in [`KernelOffsets`]:
    /// it comes from two tracepoints whose offsets must agree (one program serves
    /// both), and only tracepoint mode with exact accepts sets it.
    pub tp_accept_ret: u32,
    /// The UDP syscall tracepoints (mode `tracepoint`): the offset of the first
    /// argument in every `syscalls:sys_enter_*` record used, and of `ret` in every
    /// `syscalls:sys_exit_*` one (userspace checks that each record agrees, the
    /// arguments 8 bytes apart). 0: not attached.
    pub tp_syscall_args: u32,
    pub tp_syscall_ret: u32,
    /// Filters applied before an event is reserved: only events of these processes,
    /// users, ports (either end) and family get through. A count of 0 means no filter.
    pub filter_pids: [u32; FILTER_MAX],
    pub filter_pid_count: u32,
    pub filter_uids: [u32; FILTER_MAX],
    pub filter_uid_count: u32,
    /// Ports, widened to u32 to keep the layout free of padding.
    pub filter_ports: [u32; FILTER_MAX],
    pub filter_port_count: u32,
    /// 0 (any), `AF_INET` or `AF_INET6`, as seen on the wire (IPv4-mapped is IPv4).
    pub filter_family: u32,
    /// Wake the reader only once this many bytes wait in the ring buffer (0: the
    /// kernel's own rule, a wakeup whenever the reader had caught up). The reader
    /// also drains on a short timer, so a lone event is never held back long.
    pub wakeup_bytes: u32,
    /// Bits of [`crate::ConfigFlag`].
    pub flags: u32,
}

impl Config {
    /// Everything 0 (the same as `Default`, but usable in a `static` initializer):
    /// the eBPF object's value, which the loader overwrites.
    pub const fn zeroed() -> Config {
        Config {
            offsets: KernelOffsets::zeroed(),
            tp_accept_ret: 0,
            tp_syscall_args: 0,
            tp_syscall_ret: 0,
            filter_pids: [0; FILTER_MAX],
            filter_pid_count: 0,
            filter_uids: [0; FILTER_MAX],
            filter_uid_count: 0,
            filter_ports: [0; FILTER_MAX],
            filter_port_count: 0,
            filter_family: 0,
            wakeup_bytes: 0,
            flags: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;
    use crate::Offset;

    #[test]
    fn layout_has_no_hidden_padding() {
        // All u32: the offsets, the 3 tracepoint offsets, 3 filter lists with their counts,
        // filter_family, wakeup_bytes, flags.
        let words = Offset::ALL.len() + 3 + 3 * (FILTER_MAX + 1) + 3;
        assert_eq!(size_of::<Config>(), words * 4);
        assert_eq!(size_of::<Config>(), 280);
        assert_eq!(Config::zeroed(), Config::default());
    }
}
