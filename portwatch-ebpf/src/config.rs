//! The load-time configuration: offsets userspace read from the kernel's tracefs
//! format files and BTF. A read-only global, so the verifier sees constants.
use aya_ebpf::Global;
use portwatch_common::Config;

#[no_mangle]
pub static PORTWATCH_CONFIG: Global<Config> = Global::new(Config {
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
    accept_nargs: 0,
    flags: 0,
});

#[inline(always)]
pub fn config() -> Config {
    PORTWATCH_CONFIG.load()
}
