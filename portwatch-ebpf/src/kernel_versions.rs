//! Where kernel versions differ, in one place (as bcc's
//! `libbpf-tools/core_fixes.bpf.h` does for its tools): each difference, the
//! version where it changed, why it matters here and how portwatch copes.
//!
//! Struct layouts in general are not differences to handle here: userspace reads
//! every member offset from the running kernel's BTF and every tracepoint field
//! offset from tracefs (the list in `portwatch_common::offsets`), so a moved member
//! needs nothing. What is left is what an offset cannot express:
//!
//! | difference | changed in | how portwatch copes |
//! | --- | --- | --- |
//! | `inet_csk_accept(sk, flags, err, kern)` became `inet_csk_accept(sk, arg)` (commit 92ef0fd55ac8, "net: change proto and proto_ops accept type") | 6.10 | fexit reads the returned sock as the argument after the parameters, at a context offset the verifier needs constant: one program per prototype ([`ACCEPT_RET_ARG_4ARGS`], [`ACCEPT_RET_ARG_2ARGS`]); userspace counts the parameters in BTF and loads the matching one (`names::fexit_accept_program`). The kretprobe gets the return value from a register and needs neither |
//! | `bpf_get_func_ret()` (aya's `FExitContext::ret`) | 5.17 | not used, for the same reason: reading the return after the arguments works wherever fexit does (5.5) |
//! | `sock.sk_protocol` was a bitfield; a whole u16 since (commit bf9765145b85, "sock: Make sk_protocol a 16-bit value", for MPTCP) | 5.6 | BTF gives no byte offset for a bitfield, so userspace leaves `ConfigFlag::SkProtocol` off and [`sock_is_tcp`] trusts the family check alone (`inet_csk_accept` also serves DCCP, which then is not told apart) |
//! | `task_struct.real_start_time` renamed `start_boottime` (same meaning, ns since boot) | 5.5 | looked up as `start_boottime` only: before 5.5 `ConfigFlag::TaskFields` stays off, so events carry no parent pid and no process start time (a `real_start_time` fallback in userspace would restore them) |
//! | BPF ring buffer (`bpf_ringbuf_reserve/submit/query`) | 5.8 | required: the floor for the whole kernel side (some distribution kernels, RHEL 8.2+, have it backported to older versions, so the differences below 5.8 in this table can still meet portwatch) |
//! | fentry/fexit (BPF trampolines), `bpf_probe_read_kernel` | 5.5 | mode `fentry` needs them; `--attach auto` falls back to kprobes, then tracepoints |
//! | BTF tracepoints (`tp_btf`) | 5.5 | the BTF `inet_sock_set_state` program; without them, the classic tracepoint (its fields copied into a record first) and the LRU socket map |
//! | socket storage from tracing programs (`bpf_sk_storage_get` in `BPF_PROG_TYPE_TRACING`) | 5.11 | owners in socket storage; without it, the LRU socket map |
//! | `bpf_get_socket_cookie` from tracing programs | 5.12 | socket ids from the kernel's cookie; the BTF program needs it, so socket storage is used from 5.12 (userspace falls back when the program does not load) |
//! | `sock:inet_sock_set_state` tracepoint | 4.16 | below the ring buffer's floor: always there |
//! | UDP's functions: `inet_bind`, `inet6_bind` `(sock, uaddr, len)`, `inet_dgram_connect` `(sock, uaddr, len, flags)`, `udp_sendmsg`, `udpv6_sendmsg` `(sk, msg, len)`, `inet_release(sock)` | unchanged since before 5.8 | one fexit program each, the return read after the arguments at a constant offset (`probes::udp_hooks`); a kernel whose BTF lacks one of them gets no UDP in mode fentry (a warning says which), the other modes are unaffected |
//! | `udpv6_sendmsg` hands an IPv4-mapped destination to `udp_sendmsg` | always | both are hooked, so such a datagram is seen twice: the flow table reports it once, and the peer is written IPv4-mapped either way |
//! | UDP without `sock.sk_protocol` (a bitfield before 5.6) | 5.6 | UDP cannot be told from other datagram sockets: `ConfigFlag::UdpFields` needs `SkProtocol`, so UDP stays off there |
//!
//! Not versions but kernel configuration, with the same effect of switching a
//! feature off through a missing offset: `sock_common.skc_v6_*` exist only with
//! `CONFIG_IPV6` (else `ConfigFlag::SockFields` is off and accepts are attributed
//! to the listener's owner), the syscall tracepoints need `CONFIG_FTRACE_SYSCALLS`,
//! and kprobes need `CONFIG_KPROBES`.
use portwatch_common::{ConfigFlag, AF_INET, AF_INET6, IPPROTO_TCP};

use crate::{
    config::{has, setting},
    kernel,
};

/// fexit `inet_csk_accept` before Linux 6.10: four parameters, so the returned
/// sock is argument 4.
pub const ACCEPT_RET_ARG_4ARGS: usize = 4;
/// fexit `inet_csk_accept` since Linux 6.10: two parameters, the returned sock is
/// argument 2.
pub const ACCEPT_RET_ARG_2ARGS: usize = 2;

/// Whether `sk`, of address family `family`, is an IPv4 or IPv6 TCP socket (the BTF
/// tracepoint sees every protocol that uses `inet_sock_set_state`: TCP, DCCP,
/// SCTP, MPTCP's subflows are TCP).
#[inline(always)]
pub fn sock_is_inet_tcp(sk: u64, family: u16) -> Result<bool, i64> {
    if family != AF_INET && family != AF_INET6 {
        return Ok(false);
    }
    sock_is_tcp(sk)
}

/// Whether the (inet, connection-oriented) sock `sk` is TCP: by `sk_protocol`
/// where it is a plain member (Linux 5.6+); before, assumed.
#[inline(always)]
pub fn sock_is_tcp(sk: u64) -> Result<bool, i64> {
    if !has(ConfigFlag::SkProtocol) {
        return Ok(true);
    }
    // SAFETY: a kernel read of an integer.
    let protocol: u16 = unsafe { kernel::read(sk, setting!(offsets.sk_protocol)) }?;
    Ok(protocol == IPPROTO_TCP)
}
