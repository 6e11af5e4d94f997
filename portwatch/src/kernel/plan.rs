//! Attach modes, and for each the hooks it attaches on a given kernel: decided
//! from what was learnt about the kernel, before anything is loaded.
use std::path::Path;

use portwatch_common::{
    names::{
        fexit_accept_program, KFUNC_INET_CSK_ACCEPT, LSM_SOCK_GRAFT, PROG_BTF_INET_SOCK_SET_STATE,
        PROG_BTF_INET_SOCK_SET_STATE_NESTED, PROG_FLOOR_BTF, PROG_FLOOR_CLASSIC,
        PROG_INET_SOCK_SET_STATE, PROG_KRETPROBE_INET_CSK_ACCEPT, PROG_LSM_SOCK_GRAFT,
        PROG_SYS_EXIT_ACCEPT, TP_CATEGORY_SOCK, TP_CATEGORY_SYSCALLS, TP_INET_SOCK_SET_STATE,
        TP_SYS_EXIT_ACCEPT, TP_SYS_EXIT_ACCEPT4,
    },
    Config, ConfigFlag,
};

use super::{
    bpf_sys::{self, Trampoline, KPROBE_PMU},
    error::ModeError,
    inspect::KernelInfo,
    store::SocketStore,
};

/// How the programs are attached (`--attach`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// fexit inet_csk_accept, and the tracepoint.
    Fentry,
    /// kretprobe inet_csk_accept, and the tracepoint.
    Kprobe,
    /// sock:inet_sock_set_state, and the BPF LSM hook sock_graft where the kernel
    /// runs BPF LSM programs, else syscalls:sys_exit_accept{,4}.
    Tracepoint,
}

impl AttachMode {
    /// The order `--attach auto` tries them in: cheapest and most exact first.
    pub const ALL: [AttachMode; 3] = [
        AttachMode::Fentry,
        AttachMode::Kprobe,
        AttachMode::Tracepoint,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Fentry => "fentry",
            AttachMode::Kprobe => "kprobe",
            AttachMode::Tracepoint => "tracepoint",
        }
    }
}

/// `--attach`: a mode, or the first that works.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachChoice {
    Auto,
    Fentry,
    Kprobe,
    Tracepoint,
}

impl AttachChoice {
    pub fn modes(self) -> &'static [AttachMode] {
        match self {
            AttachChoice::Auto => &AttachMode::ALL,
            AttachChoice::Fentry => &[AttachMode::Fentry],
            AttachChoice::Kprobe => &[AttachMode::Kprobe],
            AttachChoice::Tracepoint => &[AttachMode::Tracepoint],
        }
    }
}

/// `--bench-floor` (for `cargo xtask bench`): instead of portwatch's programs, one
/// empty program on the BTF or the classic tracepoint, the kernel's own cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Floor {
    Btf,
    Classic,
}

impl Floor {
    pub fn hook(self) -> Hook {
        match self {
            Floor::Btf => Hook::BtfTracepoint {
                program: PROG_FLOOR_BTF,
                name: TP_INET_SOCK_SET_STATE,
            },
            Floor::Classic => Hook::Tracepoint {
                program: PROG_FLOOR_CLASSIC,
                category: TP_CATEGORY_SOCK,
                name: TP_INET_SOCK_SET_STATE,
            },
        }
    }
}

/// One program attached to one kernel hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Tracepoint {
        program: &'static str,
        category: &'static str,
        name: &'static str,
    },
    /// A BTF tracepoint (`tp_btf`): the program gets the tracepoint's arguments
    /// themselves, nothing copied first.
    BtfTracepoint {
        program: &'static str,
        name: &'static str,
    },
    Fexit {
        program: &'static str,
        function: &'static str,
    },
    Kprobe {
        program: &'static str,
        function: &'static str,
    },
    Kretprobe {
        program: &'static str,
        function: &'static str,
    },
    /// A BPF LSM program on `hook` (attached to the kernel's `bpf_lsm_<hook>`).
    Lsm {
        program: &'static str,
        hook: &'static str,
    },
}

impl Hook {
    /// The program's name in the eBPF object.
    pub fn program(&self) -> &'static str {
        match self {
            Hook::Tracepoint { program, .. }
            | Hook::BtfTracepoint { program, .. }
            | Hook::Fexit { program, .. }
            | Hook::Kprobe { program, .. }
            | Hook::Kretprobe { program, .. }
            | Hook::Lsm { program, .. } => program,
        }
    }

    /// What users read, e.g. `fexit:inet_csk_accept`, `tp_btf:inet_sock_set_state`.
    pub fn label(&self) -> String {
        match self {
            Hook::Tracepoint { category, name, .. } => format!("{category}:{name}"),
            Hook::BtfTracepoint { name, program }
                if *program == PROG_BTF_INET_SOCK_SET_STATE_NESTED =>
            {
                format!("tp_btf:{name} (nested)")
            }
            Hook::BtfTracepoint { name, .. } => format!("tp_btf:{name}"),
            Hook::Fexit { function, .. } => format!("fexit:{function}"),
            Hook::Kprobe { function, .. } => format!("kprobe:{function}"),
            Hook::Kretprobe { function, .. } => format!("kretprobe:{function}"),
            Hook::Lsm { hook, .. } => format!("lsm:{hook}"),
        }
    }
}

/// The fexit program for the running kernel's prototype of `inet_csk_accept`
/// (see `portwatch_common::names::fexit_accept_program`).
fn accept_fexit_program(nargs: Option<u32>) -> Result<&'static str, ModeError> {
    match nargs {
        None | Some(0) => Err(ModeError::AcceptPrototypeUnknown),
        Some(n) => fexit_accept_program(n).ok_or(ModeError::AcceptPrototype(n)),
    }
}

/// The hooks of `mode` with owners in `store`, and the config flags that tell the
/// kernel side which of its paths they replace. Err: why this kernel cannot do it.
/// `lsm`: tracepoint mode may use the BPF LSM accept hook (tried first; the
/// syscall tracepoints where the kernel refuses it).
pub fn plan(
    mode: AttachMode,
    store: SocketStore,
    lsm: bool,
    kernel: &KernelInfo,
    config: &mut Config,
    warnings: &mut Vec<String>,
) -> Result<Vec<Hook>, ModeError> {
    store.possible(kernel)?;
    let sock_fields = ConfigFlag::SockFields.is_set(config.flags);
    let storage = store == SocketStore::Storage;
    let mut hooks = Vec::new();
    match mode {
        AttachMode::Fentry => {
            if !kernel.has_btf {
                return Err(ModeError::NoBtf);
            }
            if !sock_fields {
                return Err(ModeError::NoSockFields);
            }
            hooks.push(Hook::Fexit {
                program: accept_fexit_program(kernel.accept_nargs)?,
                function: KFUNC_INET_CSK_ACCEPT,
            });
            config.flags |= ConfigFlag::AcceptHooked.bit();
        }
        AttachMode::Kprobe => {
            if !sock_fields {
                return Err(ModeError::NoSockFields);
            }
            hooks.push(Hook::Kretprobe {
                program: PROG_KRETPROBE_INET_CSK_ACCEPT,
                function: KFUNC_INET_CSK_ACCEPT,
            });
            config.flags |= ConfigFlag::AcceptHooked.bit();
        }
        AttachMode::Tracepoint if lsm && sock_fields && kernel.accept_syscalls => {
            kernel.accept_lsm.as_ref().map_err(|_| ModeError::NoLsm)?;
            hooks.push(Hook::Lsm {
                program: PROG_LSM_SOCK_GRAFT,
                hook: LSM_SOCK_GRAFT,
            });
            config.flags |= ConfigFlag::AcceptHooked.bit();
        }
        AttachMode::Tracepoint => plan_accept_syscalls(kernel, config, warnings, &mut hooks),
    }
    if storage {
        config.flags |= ConfigFlag::SockStorage.bit();
        // fexit and the LSM program may write socket storage; a kretprobe and the
        // syscall tracepoints leave owners for the state program to move in.
        let writes_storage = matches!(hooks.first(), Some(Hook::Fexit { .. } | Hook::Lsm { .. }));
        if !writes_storage && ConfigFlag::AcceptHooked.is_set(config.flags) {
            config.flags |= ConfigFlag::AcceptsPending.bit();
        }
        // The twin catches what the first misses while it runs on a CPU.
        for program in [
            PROG_BTF_INET_SOCK_SET_STATE,
            PROG_BTF_INET_SOCK_SET_STATE_NESTED,
        ] {
            hooks.push(Hook::BtfTracepoint {
                program,
                name: TP_INET_SOCK_SET_STATE,
            });
        }
    } else {
        hooks.push(Hook::Tracepoint {
            program: PROG_INET_SOCK_SET_STATE,
            category: TP_CATEGORY_SOCK,
            name: TP_INET_SOCK_SET_STATE,
        });
    }
    Ok(hooks)
}

/// Tracepoint mode names the accepting process from the accept syscalls, where the
/// user allows it and the kernel gives what the fd-to-sock walk needs.
fn plan_accept_syscalls(
    kernel: &KernelInfo,
    config: &mut Config,
    warnings: &mut Vec<String>,
    hooks: &mut Vec<Hook>,
) {
    let walk = ConfigFlag::FdWalk.bit() | ConfigFlag::SockFields.bit();
    match &kernel.accept_ret {
        // Declined by the user: attributed to the listener, no warning.
        _ if !kernel.accept_syscalls => {}
        Ok(offset) if config.flags & walk == walk => {
            config.tp_accept_ret = *offset;
            for name in [TP_SYS_EXIT_ACCEPT, TP_SYS_EXIT_ACCEPT4] {
                hooks.push(Hook::Tracepoint {
                    program: PROG_SYS_EXIT_ACCEPT,
                    category: TP_CATEGORY_SYSCALLS,
                    name,
                });
            }
            config.flags |= ConfigFlag::AcceptHooked.bit();
        }
        Ok(_) => {}
        Err(e) => warnings.push(format!(
            "{e}: accepted connections are attributed to the listener's owner (pid_exact: false)"
        )),
    }
}

/// Refusals found without loading the object: a kernel without kprobe support, or
/// one that refuses every fentry program. Either costs little to find out, while
/// trying the mode for real costs a load of the object (and for fentry, parsing
/// all of the kernel's BTF) before the kernel says no.
pub fn refused_early(mode: AttachMode, kernel: &KernelInfo) -> Result<(), ModeError> {
    match mode {
        AttachMode::Kprobe if !Path::new(KPROBE_PMU).exists() => Err(ModeError::NoKprobes),
        AttachMode::Fentry => match kernel
            .accept_btf_id
            .map(|id| bpf_sys::trampoline_allowed(Trampoline::Fentry, id))
        {
            // Only a refusal on principle is final; anything else is left to the
            // real load to explain.
            Some(Err(e)) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
                Err(ModeError::FentryRefused(e))
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_prototype_picks_the_fexit_program() {
        assert_eq!(
            accept_fexit_program(Some(2)).unwrap(),
            portwatch_common::names::PROG_FEXIT_ACCEPT_2ARGS
        );
        assert_eq!(
            accept_fexit_program(Some(4)).unwrap(),
            portwatch_common::names::PROG_FEXIT_ACCEPT_4ARGS
        );
        assert!(matches!(
            accept_fexit_program(None),
            Err(ModeError::AcceptPrototypeUnknown)
        ));
        assert!(matches!(
            accept_fexit_program(Some(3)),
            Err(ModeError::AcceptPrototype(3))
        ));
    }
}
