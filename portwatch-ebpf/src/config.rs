//! The load-time configuration: offsets userspace read from the kernel's tracefs
//! format files and BTF. A read-only global, so the verifier sees constants.
//!
//! Fields are read one at a time with a volatile load (`setting!(name)`): copying the
//! whole struct onto the 512-byte BPF stack in every program would cost more than a
//! hundred bytes of it, and a plain read would let the compiler fold in the zeros
//! below instead of the loader's values.
use portwatch_common::{Config, FILTER_MAX};

#[no_mangle]
pub static PORTWATCH_CONFIG: Config = Config {
    tp_skaddr: 0,
    tp_oldstate: 0,
    tp_newstate: 0,
    tp_sport: 0,
    tp_dport: 0,
    tp_family: 0,
    tp_protocol: 0,
    tp_saddr: 0,
    tp_daddr: 0,
    tp_saddr_v6: 0,
    tp_daddr_v6: 0,
    tp_accept_ret: 0,
    task_files: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_private_data: 0,
    socket_sk: 0,
    sk_err: 0,
    sk_protocol: 0,
    skc_daddr: 0,
    skc_rcv_saddr: 0,
    skc_dport: 0,
    skc_num: 0,
    skc_family: 0,
    skc_state: 0,
    skc_v6_daddr: 0,
    skc_v6_rcv_saddr: 0,
    task_real_parent: 0,
    task_tgid: 0,
    task_start_boottime: 0,
    filter_pids: [0; FILTER_MAX],
    filter_pid_count: 0,
    filter_uids: [0; FILTER_MAX],
    filter_uid_count: 0,
    filter_ports: [0; FILTER_MAX],
    filter_port_count: 0,
    filter_family: 0,
    wakeup_bytes: 0,
    flags: 0,
};

/// A volatile read, so the loader's value is used, not the initializer's.
#[inline(always)]
pub fn read<T: Copy>(field: &T) -> T {
    // SAFETY: a reference is valid for reads.
    unsafe { core::ptr::read_volatile(field) }
}

/// One field of the load-time configuration.
macro_rules! setting {
    ($field:ident) => {
        $crate::config::read(&$crate::config::PORTWATCH_CONFIG.$field)
    };
}
pub(crate) use setting;

/// Whether all of `bits` are set in the configuration's flags.
#[inline(always)]
pub fn has(bits: u32) -> bool {
    setting!(flags) & bits == bits
}
