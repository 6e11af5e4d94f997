//! For each attach mode, the hooks it attaches on a given kernel: decided
//! from what was learnt about the kernel, before anything is loaded.
use std::path::Path;

use portwatch_common::{
    names::{
        fexit_accept_program, KFUNC_INET_CSK_ACCEPT, LSM_SOCK_GRAFT, PROG_BTF_INET_SOCK_SET_STATE,
        PROG_BTF_INET_SOCK_SET_STATE_NESTED, PROG_INET_SOCK_SET_STATE,
        PROG_KRETPROBE_INET_CSK_ACCEPT, PROG_LSM_SOCK_GRAFT, PROG_SYS_EXIT_ACCEPT,
        TP_CATEGORY_SOCK, TP_CATEGORY_SYSCALLS, TP_INET_SOCK_SET_STATE, TP_SYS_EXIT_ACCEPT,
        TP_SYS_EXIT_ACCEPT4,
    },
    Config, ConfigFlag,
};

pub use super::hooks::{AttachChoice, AttachMode, Floor, Hook};
use super::{
    bpf_sys::{self, Trampoline, KPROBE_PMU},
    error::ModeError,
    inspect::KernelInfo,
    plan_udp::udp_hooks,
    store::SocketStore,
};

/// The fexit program for the running kernel's prototype of `inet_csk_accept`
/// (see `portwatch_common::names::fexit_accept_program`).
fn accept_fexit_program(nargs: Option<u32>) -> Result<&'static str, ModeError> {
    match nargs {
        None | Some(0) => Err(ModeError::AcceptPrototypeUnknown),
        Some(n) => fexit_accept_program(n).ok_or(ModeError::AcceptPrototype(n)),
    }
}

/// One way of tracing to try: the attach mode, where owners are kept, and (in
/// tracepoint mode) whether the BPF LSM accept hook is tried before the accept
/// syscall tracepoints.
#[derive(Clone, Copy, Debug)]
pub struct Attempt {
    pub mode: AttachMode,
    pub store: SocketStore,
    pub lsm: bool,
}

/// What an attempt attaches: its hooks, the kernel's config with the flags that
/// tell the kernel side which of its paths they replace, and the warnings.
pub struct Plan {
    pub hooks: Vec<Hook>,
    pub config: Config,
    pub warnings: Vec<String>,
}

/// The plan of `attempt` on this kernel. Err: why this kernel cannot do it.
pub fn plan(attempt: Attempt, kernel: &KernelInfo) -> Result<Plan, ModeError> {
    attempt.store.possible(kernel)?;
    let mut plan = Plan {
        hooks: Vec::new(),
        config: kernel.config,
        warnings: kernel.warnings.clone(),
    };
    if kernel.trace_tcp {
        tcp_hooks(attempt, kernel, &mut plan)?;
    }
    if kernel.trace_udp {
        match udp_hooks(attempt.mode, kernel, &mut plan.config) {
            Ok(udp) => plan.hooks.extend(udp),
            Err(why) if kernel.trace_tcp => plan.warnings.push(why),
            Err(why) => return Err(ModeError::NothingToTrace(why)),
        }
    }
    Ok(plan)
}

/// TCP's hooks: the accept program of `mode`, then the state tracepoint.
fn tcp_hooks(attempt: Attempt, kernel: &KernelInfo, plan: &mut Plan) -> Result<(), ModeError> {
    let sock_fields = ConfigFlag::SockFields.is_set(plan.config.flags);
    let storage = attempt.store == SocketStore::Storage;
    match attempt.mode {
        AttachMode::Fentry => {
            if !kernel.has_btf {
                return Err(ModeError::NoBtf);
            }
            if !sock_fields {
                return Err(ModeError::NoSockFields);
            }
            plan.hooks.push(Hook::Fexit {
                program: accept_fexit_program(kernel.accept_nargs)?,
                function: KFUNC_INET_CSK_ACCEPT,
            });
            plan.config.flags |= ConfigFlag::AcceptHooked.bit();
        }
        AttachMode::Kprobe => {
            if !sock_fields {
                return Err(ModeError::NoSockFields);
            }
            plan.hooks.push(Hook::Kretprobe {
                program: PROG_KRETPROBE_INET_CSK_ACCEPT,
                function: KFUNC_INET_CSK_ACCEPT,
            });
            plan.config.flags |= ConfigFlag::AcceptHooked.bit();
        }
        AttachMode::Tracepoint if attempt.lsm && sock_fields && kernel.accept_syscalls => {
            kernel.accept_lsm.as_ref().map_err(|_| ModeError::NoLsm)?;
            plan.hooks.push(Hook::Lsm {
                program: PROG_LSM_SOCK_GRAFT,
                hook: LSM_SOCK_GRAFT,
            });
            plan.config.flags |= ConfigFlag::AcceptHooked.bit();
        }
        AttachMode::Tracepoint => plan_accept_syscalls(kernel, plan),
    }
    if storage {
        plan.config.flags |= ConfigFlag::SockStorage.bit();
        // fexit and the LSM program may write socket storage; a kretprobe and the
        // syscall tracepoints leave owners for the state program to move in.
        let writes_storage = matches!(
            plan.hooks.first(),
            Some(Hook::Fexit { .. } | Hook::Lsm { .. })
        );
        if !writes_storage && ConfigFlag::AcceptHooked.is_set(plan.config.flags) {
            plan.config.flags |= ConfigFlag::AcceptsPending.bit();
        }
        // The twin catches what the first misses while it runs on a CPU.
        for program in [
            PROG_BTF_INET_SOCK_SET_STATE,
            PROG_BTF_INET_SOCK_SET_STATE_NESTED,
        ] {
            plan.hooks.push(Hook::BtfTracepoint {
                program,
                name: TP_INET_SOCK_SET_STATE,
            });
        }
    } else {
        plan.hooks.push(Hook::Tracepoint {
            program: PROG_INET_SOCK_SET_STATE,
            category: TP_CATEGORY_SOCK,
            name: TP_INET_SOCK_SET_STATE,
        });
    }
    Ok(())
}

/// Tracepoint mode names the accepting process from the accept syscalls, where the
/// user allows it and the kernel gives what the fd-to-sock walk needs.
fn plan_accept_syscalls(kernel: &KernelInfo, plan: &mut Plan) {
    let Plan {
        hooks,
        config,
        warnings,
    } = plan;
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
