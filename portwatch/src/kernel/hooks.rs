//! What can be attached: the attach modes, the hooks (one program on one kernel
//! hook each), and the bench floors. `plan` decides which hooks a mode uses.
use portwatch_common::names::{
    PROG_BTF_INET_SOCK_SET_STATE_NESTED, PROG_FLOOR_BTF, PROG_FLOOR_CLASSIC,
    PROG_FLOOR_UDP_SYSCALLS, TP_CATEGORY_SOCK, TP_CATEGORY_SYSCALLS, TP_INET_SOCK_SET_STATE,
    TP_UDP_SYSCALLS,
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

/// `--bench-floor` (for `cargo xtask bench`): instead of portwatch's programs, an
/// empty program on the BTF or the classic state tracepoint, or on every UDP
/// syscall tracepoint: the kernel's own cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Floor {
    Btf,
    Classic,
    UdpSyscalls,
}

impl Floor {
    pub fn hooks(self) -> Vec<Hook> {
        match self {
            Floor::Btf => vec![Hook::BtfTracepoint {
                program: PROG_FLOOR_BTF,
                name: TP_INET_SOCK_SET_STATE,
            }],
            Floor::Classic => vec![Hook::Tracepoint {
                program: PROG_FLOOR_CLASSIC,
                category: TP_CATEGORY_SOCK,
                name: TP_INET_SOCK_SET_STATE,
            }],
            Floor::UdpSyscalls => syscall_hooks(
                |s| [s.enter, s.exit],
                |(name, _)| Hook::Tracepoint {
                    program: PROG_FLOOR_UDP_SYSCALLS,
                    category: TP_CATEGORY_SYSCALLS,
                    name,
                },
            ),
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
    Fentry {
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
            | Hook::Fentry { program, .. }
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
            Hook::Fentry { function, .. } => format!("fentry:{function}"),
            Hook::Kprobe { function, .. } => format!("kprobe:{function}"),
            Hook::Kretprobe { function, .. } => format!("kretprobe:{function}"),
            Hook::Lsm { hook, .. } => format!("lsm:{hook}"),
        }
    }
}

/// One hook per tracepoint of the UDP syscalls, from `each`'s picks.
pub fn syscall_hooks(
    each: impl Fn(&portwatch_common::names::UdpSyscall) -> [(&'static str, &'static str); 2],
    hook: impl Fn((&'static str, &'static str)) -> Hook,
) -> Vec<Hook> {
    TP_UDP_SYSCALLS
        .iter()
        .flat_map(|s| each(s).map(&hook))
        .collect()
}
