//! The few BPF syscalls portwatch makes itself, where aya 0.14 has no API: a
//! program's skipped-run counter, and a cheap check that fentry (or a BPF LSM
//! program) is allowed before the whole object is loaded for it.
use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

use aya_obj::generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_insn, bpf_prog_type};

/// What kprobes are attached through (aya 0.14 has no tracefs fallback): where it
/// is missing, the kernel has no kprobe support.
pub const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe/type";

/// `bpf(cmd, attr)`; the attribute's size is passed with it.
///
/// # Safety
/// `attr` must be the attribute `cmd` expects, and every pointer in it valid for
/// what the kernel reads or writes there.
unsafe fn bpf<T>(cmd: bpf_cmd, attr: &mut T) -> io::Result<i64> {
    // SAFETY: forwarded to the caller.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut T,
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Programs the kernel attaches through a BPF trampoline.
#[derive(Clone, Copy, Debug)]
pub enum Trampoline {
    Fentry,
    /// A BPF LSM program.
    Lsm,
}

/// Whether the kernel lets a program of `kind` attach to the kernel function with
/// BTF id `btf_id`: a two-instruction program is loaded and closed at once. Some
/// kernels (lockdown, or a policy) refuse every such program with EPERM; finding
/// that out this way costs a syscall instead of parsing the kernel's BTF and
/// loading the object.
pub fn trampoline_allowed(kind: Trampoline, btf_id: u32) -> io::Result<()> {
    // SAFETY: bpf_insn is plain data; all zeros is `r0 = 0` with no opcode yet.
    let mut insns: [bpf_insn; 2] = unsafe { std::mem::zeroed() };
    insns[0].code = 0xb7; // r0 = 0 (BPF_ALU64 | BPF_MOV | BPF_K)
    insns[1].code = 0x95; // exit (BPF_JMP | BPF_EXIT)
    let license = c"GPL";
    // SAFETY: bpf_attr is plain data; all zeros is a valid value.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: writing the fields of the union's BPF_PROG_LOAD member.
    let load = unsafe { &mut attr.__bindgen_anon_3 };
    let (prog_type, attach_type) = match kind {
        Trampoline::Fentry => (
            bpf_prog_type::BPF_PROG_TYPE_TRACING,
            bpf_attach_type::BPF_TRACE_FENTRY,
        ),
        Trampoline::Lsm => (
            bpf_prog_type::BPF_PROG_TYPE_LSM,
            bpf_attach_type::BPF_LSM_MAC,
        ),
    };
    load.prog_type = prog_type as u32;
    load.expected_attach_type = attach_type as u32;
    load.attach_btf_id = btf_id;
    load.insn_cnt = insns.len() as u32;
    load.insns = insns.as_ptr() as u64;
    load.license = license.as_ptr() as u64;
    // SAFETY: a BPF_PROG_LOAD attribute whose instructions and license outlive the
    // call.
    let fd = unsafe { bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr) }?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) });
    Ok(())
}

/// `BPF_OBJ_GET_INFO_BY_FD`: the kernel's description of a program or map
/// (`T`: `bpf_prog_info` or `bpf_map_info`).
fn object_info<T>(fd: BorrowedFd<'_>) -> io::Result<T> {
    // SAFETY: T is one of the kernel's info structs, plain data for which all
    // zeros is a valid value; so is bpf_attr.
    let mut info: T = unsafe { std::mem::zeroed() };
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: writing the fields of the union's BPF_OBJ_GET_INFO_BY_FD member.
    let get = unsafe { &mut attr.info };
    get.bpf_fd = fd.as_raw_fd() as u32;
    get.info_len = std::mem::size_of::<T>() as u32;
    get.info = &mut info as *mut T as u64;
    // SAFETY: info points to a buffer of info_len bytes that outlives the call.
    unsafe { bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(info)
}

/// `bpf_prog_info.recursion_misses` of a loaded program (0 where the kernel does
/// not report it).
pub fn recursion_misses(fd: BorrowedFd<'_>) -> u64 {
    object_info::<aya_obj::generated::bpf_prog_info>(fd).map_or(0, |i| i.recursion_misses)
}

/// `bpf_map_info.max_entries` of a map: a ring buffer's size in bytes.
pub fn map_max_entries(fd: BorrowedFd<'_>) -> io::Result<u32> {
    Ok(object_info::<aya_obj::generated::bpf_map_info>(fd)?.max_entries)
}
