//! Why loading fails: for the whole run ([`LoadError`]) and for one attach mode
//! ([`ModeError`]). `doctor` and `--attach auto` decide on these variants; the
//! text is only for people.
use std::io;

use aya::{maps::MapError, programs::ProgramError, EbpfError};

use super::{bpf_sys::KPROBE_PMU, btf::VMLINUX_BTF, tracefs::TracefsError};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "portwatch needs root, or the capabilities CAP_BPF and CAP_PERFMON (try: sudo portwatch)"
    )]
    Privileges,
    #[error("this portwatch was built without its eBPF programs (a `cargo check`/`cargo test` build): build it with `cargo xtask build`")]
    NoPrograms,
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("attach mode {mode} is not available on this kernel")]
    ModeRefused {
        mode: &'static str,
        #[source]
        reason: Box<ModeError>,
    },
    #[error("no attach mode works on this kernel: {}", list(.0))]
    NoMode(Vec<(&'static str, ModeError)>),
}

fn list(refusals: &[(&'static str, ModeError)]) -> String {
    refusals
        .iter()
        .map(|(mode, why)| format!("{mode}: {}", one_line(why)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why one attach mode cannot work on this kernel.
#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    #[error("the kernel has no BTF ({VMLINUX_BTF})")]
    NoBtf,
    #[error("struct sock offsets were not found in the kernel's BTF")]
    NoSockFields,
    #[error("the kernel's BTF has no inet_sock_set_state BTF tracepoint")]
    NoBtfTracepoint,
    #[error("the prototype of inet_csk_accept was not found in the kernel's BTF")]
    AcceptPrototypeUnknown,
    #[error("inet_csk_accept takes {0} arguments here, a prototype portwatch does not know")]
    AcceptPrototype(u32),
    #[error("kretprobe:inet_csk_accept: {KPROBE_PMU} is missing (this kernel has no kprobe support: built without CONFIG_KPROBES?)")]
    NoKprobes,
    #[error("fexit:inet_csk_accept: the kernel refuses fentry and fexit programs")]
    FentryRefused(#[source] io::Error),
    #[error("the BPF LSM accept hook cannot be used here")]
    NoLsm,
    /// Only UDP was asked for (`--proto udp`), and this mode cannot trace it.
    #[error("{0}")]
    NothingToTrace(String),
    #[error("making the BTF of the attach targets")]
    ReadBtf(#[source] Box<aya::BtfError>),
    #[error("loading the eBPF object")]
    LoadObject(#[source] Box<EbpfError>),
    #[error("program {0} is missing from the eBPF object")]
    ProgramMissing(&'static str),
    #[error("{hook}")]
    Attach {
        hook: String,
        #[source]
        source: ProgramError,
    },
    #[error("map {0} is missing from the eBPF object")]
    MapMissing(&'static str),
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

impl ModeError {
    /// A stable name for the reason (doctor's JSON `refusal`).
    pub fn code(&self) -> &'static str {
        match self {
            ModeError::NoBtf => "no-btf",
            ModeError::NoSockFields => "no-sock-offsets",
            ModeError::NoBtfTracepoint => "no-btf-tracepoint",
            ModeError::AcceptPrototypeUnknown | ModeError::AcceptPrototype(_) => {
                "unknown-accept-prototype"
            }
            ModeError::NoKprobes => "no-kprobes",
            ModeError::FentryRefused(_) => "fentry-refused",
            ModeError::NoLsm => "no-bpf-lsm",
            ModeError::NothingToTrace(_) => "no-udp",
            ModeError::ReadBtf(_) => "btf-unreadable",
            ModeError::LoadObject(_) => "load-failed",
            ModeError::ProgramMissing(_) | ModeError::MapMissing(_) | ModeError::Map { .. } => {
                "object-incomplete"
            }
            ModeError::Attach { .. } => "attach-failed",
        }
    }
}

/// Whether errors keep the kernel's whole verifier log
/// (`PORTWATCH_VERIFIER_LOG=1`): to read why a kernel refused a program.
fn keep_verifier_log() -> bool {
    static KEEP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KEEP.get_or_init(|| std::env::var_os("PORTWATCH_VERIFIER_LOG").is_some_and(|v| v == "1"))
}

/// An error and all of its causes, each whole (verifier logs included).
fn with_verifier_log(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        parts.push(err.to_string());
        next = err.source();
    }
    parts.join(": ")
}

/// An error and its causes on one line, `outer: inner: innermost`, each cut to its
/// first line (aya appends whole verifier logs to its messages), unless
/// `PORTWATCH_VERIFIER_LOG=1` asks for them.
pub fn one_line(e: &dyn std::error::Error) -> String {
    if keep_verifier_log() {
        return with_verifier_log(e);
    }
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        let first = text
            .lines()
            .next()
            .unwrap_or("")
            .trim_end()
            .trim_end_matches("Verifier output:")
            .trim_end()
            .trim_end_matches('.')
            .to_string();
        // Some errors repeat their source's text in their own: say it once.
        if !first.is_empty() && !parts.last().is_some_and(|p| p.contains(&first)) {
            parts.push(first);
        }
        next = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_joins_causes_and_drops_verifier_logs() {
        let refused = LoadError::ModeRefused {
            mode: "fentry",
            reason: Box::new(ModeError::FentryRefused(io::Error::from_raw_os_error(
                libc::EPERM,
            ))),
        };
        let text = one_line(&refused);
        assert!(
            text.starts_with("attach mode fentry is not available on this kernel: fexit:inet_csk_accept: the kernel refuses fentry and fexit programs: "),
            "{text}"
        );
        assert!(!text.contains('\n'));
        let io = io::Error::other("verifier said no.\nVerifier output:\n0: r0 = 0");
        let text = one_line(&ModeError::FentryRefused(io));
        assert!(text.ends_with("programs: verifier said no"), "{text}");
    }
}
