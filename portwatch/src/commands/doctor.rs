//! `portwatch doctor`: what this host allows, and for each attach mode whether it
//! loads here and, if not, why. The first thing to run on a new host.
use std::io::{self, Write};

use serde::Serialize;

use crate::{
    event::classify::EphemeralRange,
    kernel::{
        btf,
        error::one_line,
        inspect::{has_privileges, inspect_kernel},
        load::{self, load_mode, ModeOptions},
        plan::AttachMode,
        store::StoreChoice,
    },
    output::Format,
};

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ModeCheck {
    pub mode: &'static str,
    pub available: bool,
    /// Why not, as a stable code (`no-kprobes`, `fentry-refused`, ...); null when
    /// available.
    pub refusal: Option<&'static str>,
    /// The hooks it attached, or why it cannot work here.
    pub detail: String,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Report {
    pub kernel: String,
    pub btf: Check,
    pub tracefs: Check,
    pub privileges: Check,
    pub ring_buffer: Check,
    /// Whether tracepoint mode can name accepting processes from the BPF LSM hook
    /// `sock_graft` (else: the accept syscall tracepoints).
    pub bpf_lsm: Check,
    /// Parameters of inet_csk_accept (4 before Linux 6.10, 2 since), from BTF.
    pub inet_csk_accept_args: Option<u32>,
    pub ephemeral_range: String,
    pub modes: Vec<ModeCheck>,
    /// What `--attach auto` would choose.
    pub auto: Option<&'static str>,
}

fn check(ok: bool, detail: impl Into<String>) -> Check {
    Check {
        ok,
        detail: detail.into(),
    }
}

fn capabilities() -> String {
    use caps::{CapSet, Capability};
    [
        ("CAP_BPF", Capability::CAP_BPF),
        ("CAP_PERFMON", Capability::CAP_PERFMON),
        ("CAP_SYS_ADMIN", Capability::CAP_SYS_ADMIN),
    ]
    .iter()
    .map(|(name, c)| {
        let has = caps::has_cap(None, CapSet::Effective, *c).unwrap_or(false);
        format!("{name} {}", if has { "yes" } else { "no" })
    })
    .collect::<Vec<_>>()
    .join(", ")
}

/// Probe this host. Loads and detaches each attach mode in turn.
pub fn inspect() -> Report {
    let uname = nix::sys::utsname::uname()
        .map(|u| {
            format!(
                "{} {} {}",
                u.sysname().to_string_lossy(),
                u.release().to_string_lossy(),
                u.machine().to_string_lossy()
            )
        })
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let btf_rs = btf::load_vmlinux();
    let btf = match &btf_rs {
        Ok(_) => check(true, btf::VMLINUX_BTF),
        Err(e) => check(false, e.to_string()),
    };
    let inet_csk_accept_args = btf_rs
        .as_ref()
        .ok()
        .and_then(|b| btf::function_arg_count(b, "inet_csk_accept"));
    let range = EphemeralRange::of_host();
    let privileged = has_privileges();
    let mut report = Report {
        kernel: uname,
        btf,
        tracefs: check(false, "not checked"),
        privileges: check(privileged, capabilities()),
        ring_buffer: check(false, "not checked"),
        bpf_lsm: check(false, "not checked"),
        inet_csk_accept_args,
        ephemeral_range: format!("{}-{}", range.low, range.high),
        modes: Vec::new(),
        auto: None,
    };
    let unchecked = if !load::has_programs() {
        Some((
            "not checked: this build has no eBPF programs (build with `cargo xtask build`)",
            "no-programs",
        ))
    } else if !privileged {
        Some((
            "not checked: needs root, or CAP_BPF and CAP_PERFMON",
            "no-privileges",
        ))
    } else {
        None
    };
    if let Some((why, refusal)) = unchecked {
        report.tracefs = check(false, why);
        report.ring_buffer = check(false, why);
        report.bpf_lsm = check(false, why);
        report.modes = AttachMode::ALL
            .iter()
            .map(|m| ModeCheck {
                mode: m.name(),
                available: false,
                refusal: Some(refusal),
                detail: why.into(),
            })
            .collect();
        return report;
    }
    let kernel = match inspect_kernel() {
        Ok(k) => k,
        Err(e) => {
            report.tracefs = check(false, one_line(&e));
            return report;
        }
    };
    report.tracefs = check(true, kernel.tracefs.display().to_string());
    report.bpf_lsm = match &kernel.accept_lsm {
        Ok(_) => check(true, "sock_graft: tracepoint mode's accept hook"),
        Err(e) => check(
            false,
            format!("{}: tracepoint mode hooks the accept syscalls", one_line(e)),
        ),
    };
    for mode in AttachMode::ALL {
        let options = ModeOptions {
            ringbuf_bytes: portwatch_common::RINGBUF_DEFAULT_BYTES,
            store: StoreChoice::Auto,
            max_sockets: None,
            floor: None,
        };
        let result = load_mode(&kernel, mode, &options);
        let check = match result {
            Ok(tracer) => {
                // The object, with its ring buffer, loaded.
                report.ring_buffer = check(true, "BPF_MAP_TYPE_RINGBUF created");
                report.auto.get_or_insert(mode.name());
                ModeCheck {
                    mode: mode.name(),
                    available: true,
                    refusal: None,
                    // The hooks (TCP's, then UDP's), the owner store, and why UDP
                    // is not traced where it is not.
                    detail: std::iter::once(tracer.attached.join(", "))
                        .chain(std::iter::once(tracer.store.describe()))
                        .chain(
                            tracer
                                .warnings
                                .iter()
                                .filter(|w| w.starts_with("UDP is not traced"))
                                .cloned(),
                        )
                        .collect::<Vec<_>>()
                        .join("; "),
                }
            }
            Err(reason) => ModeCheck {
                mode: mode.name(),
                available: false,
                refusal: Some(reason.code()),
                detail: one_line(&reason),
            },
        };
        report.modes.push(check);
    }
    if !report.ring_buffer.ok {
        report.ring_buffer = check(
            false,
            "no mode loaded, so the ring buffer is unproven (needs Linux 5.8+)",
        );
    }
    report
}

fn yes_no(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "NO "
    }
}

pub fn render_text(r: &Report, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "kernel           {}", r.kernel)?;
    for (name, c) in [
        ("BTF", &r.btf),
        ("tracefs", &r.tracefs),
        ("privileges", &r.privileges),
        ("ring buffer", &r.ring_buffer),
        ("BPF LSM", &r.bpf_lsm),
    ] {
        writeln!(out, "{name:<16} {} {}", yes_no(c.ok), c.detail)?;
    }
    match r.inet_csk_accept_args {
        Some(n) => writeln!(
            out,
            "inet_csk_accept  {n} arguments (fexit reads its return value after them)"
        )?,
        None => writeln!(out, "inet_csk_accept  prototype unknown (no BTF)")?,
    }
    writeln!(out, "ephemeral ports  {}", r.ephemeral_range)?;
    writeln!(out, "attach modes:")?;
    for m in &r.modes {
        writeln!(out, "  {:<11} {} {}", m.mode, yes_no(m.available), m.detail)?;
    }
    match r.auto {
        Some(mode) => writeln!(out, "--attach auto uses: {mode}"),
        None => writeln!(out, "--attach auto: no mode works on this host"),
    }
}

pub fn run(format: Format, out: &mut impl Write) -> io::Result<()> {
    let report = inspect();
    match format {
        Format::Table => render_text(&report, out)?,
        Format::Json => {
            serde_json::to_writer(&mut *out, &report)?;
            writeln!(out)?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::error::ModeError;

    fn sample() -> Report {
        Report {
            kernel: "Linux 6.1.0 x86_64".into(),
            btf: check(true, "/sys/kernel/btf/vmlinux"),
            tracefs: check(true, "/sys/kernel/tracing"),
            privileges: check(true, "CAP_BPF yes"),
            ring_buffer: check(true, "BPF_MAP_TYPE_RINGBUF created"),
            bpf_lsm: check(true, "sock_graft"),
            inet_csk_accept_args: Some(4),
            ephemeral_range: "32768-60999".into(),
            modes: vec![
                ModeCheck {
                    mode: "fentry",
                    available: false,
                    refusal: Some(ModeError::FentryRefused(std::io::Error::other("")).code()),
                    detail: "EPERM".into(),
                },
                ModeCheck {
                    mode: "tracepoint",
                    available: true,
                    refusal: None,
                    detail: "sock:inet_sock_set_state".into(),
                },
            ],
            auto: Some("tracepoint"),
        }
    }

    #[test]
    fn text_names_every_check_and_mode() {
        let mut buf = Vec::new();
        render_text(&sample(), &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("kernel           Linux 6.1.0 x86_64"));
        assert!(text.contains("BTF              yes /sys/kernel/btf/vmlinux"));
        assert!(text.contains("inet_csk_accept  4 arguments"));
        assert!(text.contains("  fentry      NO  EPERM"));
        assert!(text.contains("  tracepoint  yes sock:inet_sock_set_state"));
        assert!(text.contains("--attach auto uses: tracepoint"));
    }

    #[test]
    fn json_has_the_same_facts() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["btf"]["ok"], true);
        assert_eq!(v["inet_csk_accept_args"], 4);
        assert_eq!(v["modes"][0]["mode"], "fentry");
        assert_eq!(v["modes"][0]["available"], false);
        assert_eq!(v["modes"][0]["refusal"], "fentry-refused");
        assert_eq!(v["modes"][1]["refusal"], serde_json::Value::Null);
        assert_eq!(v["auto"], "tracepoint");
    }
}
