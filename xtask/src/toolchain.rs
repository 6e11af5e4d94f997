//! Finding, and where possible installing, what the eBPF build needs: a Rust
//! compiler that has its library source (for `-Z build-std=core`) and bpf-linker
//! built on an LLVM that reads that compiler's bitcode.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::util::{self, output, which};

pub struct Toolchain {
    /// rustc to build the eBPF crate with (its sysroot has `library/core`).
    pub rustc: PathBuf,
    /// Directory holding `bpf-linker`, put first on PATH for the eBPF build.
    pub bpf_linker_dir: PathBuf,
}

const BPF_LINKER_VERSION: &str = "0.13.0";

fn has_library_source(rustc: &Path) -> bool {
    let Some(sysroot) = output(Command::new(rustc).args(["--print", "sysroot"])) else {
        return false;
    };
    Path::new(&sysroot)
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .is_file()
}

/// Candidates in order of preference: an explicit choice, rustup's nightly, the
/// distribution's rustc, whatever rustc is on PATH.
fn find_rustc() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(explicit) = std::env::var_os("PORTWATCH_EBPF_RUSTC") {
        candidates.push(explicit.into());
    }
    if let Some(nightly) =
        output(Command::new("rustup").args(["which", "rustc", "--toolchain", "nightly"]))
    {
        candidates.push(nightly.into());
    }
    candidates.push("/usr/bin/rustc".into());
    if let Some(on_path) = which("rustc") {
        candidates.push(on_path);
    }
    candidates
        .into_iter()
        .find(|rustc| rustc.is_file() && has_library_source(rustc))
}

fn ensure_rustc() -> Result<PathBuf> {
    if let Some(rustc) = find_rustc() {
        return Ok(rustc);
    }
    eprintln!("xtask: no Rust compiler with its library source found; installing Debian's rustc-web and rust-web-src");
    let installed = util::apt_install(&["rustc-web", "rust-web-src"]);
    match (installed, find_rustc()) {
        (_, Some(rustc)) => Ok(rustc),
        (result, None) => bail!(
            "no Rust compiler with its library source (rust-src) was found{}.\n\
             Fix with one of:\n  rustup toolchain install nightly --component rust-src\n  \
             apt-get install rustc-web rust-web-src   (Debian 12)",
            match result {
                Err(e) => format!(", and installing it failed: {e:#}"),
                Ok(()) => String::new(),
            }
        ),
    }
}

/// The LLVM major version a rustc was built with (`rustc -vV`).
fn llvm_major(rustc: &Path) -> Option<u32> {
    let text = output(Command::new(rustc).arg("-vV"))?;
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))?;
    version.split('.').next()?.trim().parse().ok()
}

fn find_bpf_linker() -> Option<PathBuf> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|h| h.join("bin/bpf-linker"));
    which("bpf-linker")
        .into_iter()
        .chain(cargo_bin)
        .find(|p| p.is_file() && output(Command::new(p).arg("--version")).is_some())
}

fn ensure_bpf_linker(rustc: &Path) -> Result<PathBuf> {
    if let Some(linker) = find_bpf_linker() {
        return Ok(linker);
    }
    let major = llvm_major(rustc)
        .with_context(|| format!("reading the LLVM version of {}", rustc.display()))?;
    let fix = format!(
        "apt-get install llvm-{major}-dev libclang-{major}-dev libpolly-{major}-dev zlib1g-dev libzstd-dev && \
         LLVM_PREFIX=/usr/lib/llvm-{major} cargo install bpf-linker --version {BPF_LINKER_VERSION} --no-default-features --features llvm-{major}"
    );
    eprintln!("xtask: bpf-linker not found; building it against LLVM {major} (about a minute)");
    let llvm = [
        format!("llvm-{major}-dev"),
        format!("libclang-{major}-dev"),
        format!("libpolly-{major}-dev"),
        "zlib1g-dev".into(),
        "libzstd-dev".into(),
    ];
    let llvm: Vec<&str> = llvm.iter().map(String::as_str).collect();
    util::apt_install(&llvm)
        .with_context(|| format!("installing LLVM {major}; to fix by hand: {fix}"))?;
    util::run(
        util::cargo()
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            .env("LLVM_PREFIX", format!("/usr/lib/llvm-{major}")),
    )
    .with_context(|| format!("building bpf-linker; to fix by hand: {fix}"))?;
    find_bpf_linker()
        .with_context(|| format!("bpf-linker still not found after installing it; fix: {fix}"))
}

/// Find or install everything the eBPF build needs.
pub fn ensure() -> Result<Toolchain> {
    let rustc = ensure_rustc()?;
    let linker = ensure_bpf_linker(&rustc)?;
    Ok(Toolchain {
        rustc,
        bpf_linker_dir: linker.parent().unwrap_or(Path::new("/")).to_path_buf(),
    })
}

pub fn ensure_or_exit() -> Toolchain {
    match ensure() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::exit(1);
        }
    }
}
