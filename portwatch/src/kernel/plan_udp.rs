//! UDP's hooks in each attach mode (the kernel side's `probes::udp_hooks` says
//! what each does), added to the plan when UDP is traced.
use portwatch_common::{
    names::{
        KFUNC_INET6_BIND, KFUNC_INET_BIND, KFUNC_INET_DGRAM_CONNECT, KFUNC_INET_RELEASE,
        KFUNC_UDPV6_SENDMSG, KFUNC_UDP_SENDMSG, PROG_FENTRY_INET_RELEASE, PROG_FEXIT_INET6_BIND,
        PROG_FEXIT_INET_BIND, PROG_FEXIT_INET_DGRAM_CONNECT, PROG_FEXIT_UDPV6_SENDMSG,
        PROG_FEXIT_UDP_SENDMSG, PROG_KPROBE_INET_RELEASE, PROG_KPROBE_UDP_BIND,
        PROG_KPROBE_UDP_CONNECT, PROG_KPROBE_UDP_SENDMSG, PROG_KRETPROBE_UDP_BIND,
        PROG_KRETPROBE_UDP_CONNECT, PROG_KRETPROBE_UDP_SENDMSG, TP_CATEGORY_SYSCALLS,
        UDP_FUNCTIONS,
    },
    Config, ConfigFlag,
};

use super::{
    hooks::{syscall_hooks, AttachMode, Hook},
    inspect::KernelInfo,
};

/// Every flag the UDP programs need.
const NEEDED: [ConfigFlag; 4] = [
    ConfigFlag::UdpFields,
    ConfigFlag::SockFields,
    ConfigFlag::FdWalk,
    ConfigFlag::SkProtocol,
];

/// The UDP hooks of `mode`, or why this kernel (or the user's choice) leaves UDP
/// untraced.
pub fn udp_hooks(
    mode: AttachMode,
    kernel: &KernelInfo,
    config: &mut Config,
) -> Result<Vec<Hook>, String> {
    if let Some(missing) = NEEDED.iter().find(|f| !f.is_set(config.flags)) {
        return Err(format!(
            "UDP is not traced: the kernel's BTF lacks what it needs ({missing:?})"
        ));
    }
    Ok(match mode {
        AttachMode::Fentry => {
            if let Some(missing) = UDP_FUNCTIONS
                .iter()
                .find(|f| kernel.function_id(f).is_none())
            {
                return Err(format!(
                    "UDP is not traced: the kernel's BTF has no function {missing}"
                ));
            }
            let fexit = |program, function| Hook::Fexit { program, function };
            vec![
                fexit(PROG_FEXIT_INET_BIND, KFUNC_INET_BIND),
                fexit(PROG_FEXIT_INET6_BIND, KFUNC_INET6_BIND),
                fexit(PROG_FEXIT_INET_DGRAM_CONNECT, KFUNC_INET_DGRAM_CONNECT),
                fexit(PROG_FEXIT_UDP_SENDMSG, KFUNC_UDP_SENDMSG),
                fexit(PROG_FEXIT_UDPV6_SENDMSG, KFUNC_UDPV6_SENDMSG),
                Hook::Fentry {
                    program: PROG_FENTRY_INET_RELEASE,
                    function: KFUNC_INET_RELEASE,
                },
            ]
        }
        AttachMode::Kprobe => {
            let mut hooks = Vec::new();
            for (entry, exit, function) in [
                (
                    PROG_KPROBE_UDP_BIND,
                    PROG_KRETPROBE_UDP_BIND,
                    KFUNC_INET_BIND,
                ),
                (
                    PROG_KPROBE_UDP_BIND,
                    PROG_KRETPROBE_UDP_BIND,
                    KFUNC_INET6_BIND,
                ),
                (
                    PROG_KPROBE_UDP_CONNECT,
                    PROG_KRETPROBE_UDP_CONNECT,
                    KFUNC_INET_DGRAM_CONNECT,
                ),
                (
                    PROG_KPROBE_UDP_SENDMSG,
                    PROG_KRETPROBE_UDP_SENDMSG,
                    KFUNC_UDP_SENDMSG,
                ),
                (
                    PROG_KPROBE_UDP_SENDMSG,
                    PROG_KRETPROBE_UDP_SENDMSG,
                    KFUNC_UDPV6_SENDMSG,
                ),
            ] {
                hooks.push(Hook::Kprobe {
                    program: entry,
                    function,
                });
                hooks.push(Hook::Kretprobe {
                    program: exit,
                    function,
                });
            }
            hooks.push(Hook::Kprobe {
                program: PROG_KPROBE_INET_RELEASE,
                function: KFUNC_INET_RELEASE,
            });
            hooks
        }
        AttachMode::Tracepoint => {
            if !kernel.accept_syscalls {
                return Err("UDP is not traced: in tracepoint mode it needs the syscall tracepoints, which --inexact-accept declines (--proto tcp says UDP is not wanted)".to_string());
            }
            let (args, ret) = *kernel
                .udp_syscalls
                .as_ref()
                .map_err(|e| format!("UDP is not traced: {e}"))?;
            config.tp_syscall_args = args;
            config.tp_syscall_ret = ret;
            syscall_hooks(
                |s| [s.enter, s.exit],
                |(name, program)| Hook::Tracepoint {
                    program,
                    category: TP_CATEGORY_SYSCALLS,
                    name,
                },
            )
        }
    })
}
