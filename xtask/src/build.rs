//! Building the eBPF object and the userspace binaries.
use std::{ffi::OsString, path::PathBuf};

use anyhow::Result;

use crate::{
    toolchain::{self, Toolchain},
    util::{self, workspace_root},
};

#[derive(clap::Args, Default)]
pub struct Options {
    /// Build userspace in release mode.
    #[arg(long)]
    pub release: bool,
}

/// Where the linker leaves the eBPF object.
fn linked_object() -> PathBuf {
    workspace_root().join("target/ebpf/bpfel-unknown-none/release/portwatch")
}

/// The object portwatch embeds: the linked one without its DWARF (BTF stays),
/// a fifth of the size, so loading it needs less memory.
pub fn ebpf_object() -> PathBuf {
    workspace_root().join("target/ebpf/portwatch.bpf.o")
}

/// llvm-objcopy: on PATH, or from the LLVM that bpf-linker was built against.
fn objcopy() -> Option<PathBuf> {
    util::which("llvm-objcopy").or_else(|| {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("llvm-"))
            })
            .collect();
        dirs.sort();
        dirs.into_iter()
            .rev()
            .map(|d| d.join("bin/llvm-objcopy"))
            .find(|p| p.is_file())
    })
}

pub fn build_ebpf(tc: &Toolchain, _options: &Options) -> Result<PathBuf> {
    let root = workspace_root();
    let mut path = OsString::from(&tc.bpf_linker_dir);
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    util::run(
        util::cargo()
            .current_dir(root.join("portwatch-ebpf"))
            .args(["build", "--release", "--target", "bpfel-unknown-none"])
            .args(["-Z", "build-std=core"])
            .env("RUSTC", &tc.rustc)
            // build-std needs nightly features; a distribution rustc has them behind this.
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_TARGET_DIR", root.join("target/ebpf"))
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                [
                    "-Cdebuginfo=2",
                    "-Clink-arg=--btf",
                    // Inline memset too, not only memcpy: with memcpy expanded "in
                    // order" (bpf-linker's default) every memset becomes a call,
                    // and Linux 6.1 counts each call frame as at least 32 bytes
                    // of the 512-byte stack, which pushed the BTF state program
                    // over the limit there.
                    "-Clink-arg=--disable-expand-memcpy-in-order",
                ]
                .join("\x1f"),
            )
            .env_remove("RUSTFLAGS")
            .env_remove("RUSTC_WRAPPER")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env("PATH", path),
    )?;
    let (linked, object) = (linked_object(), ebpf_object());
    match objcopy() {
        Some(objcopy) => util::run(
            std::process::Command::new(objcopy)
                .arg("--strip-debug")
                .arg(&linked)
                .arg(&object),
        )?,
        None => {
            eprintln!(
                "xtask: llvm-objcopy not found: embedding the eBPF object with its debug info"
            );
            std::fs::copy(&linked, &object)?;
        }
    }
    Ok(object)
}

/// A cargo command for userspace with the eBPF object's path set.
pub fn userspace_cargo(object: &std::path::Path) -> std::process::Command {
    let mut cmd = util::cargo();
    cmd.current_dir(workspace_root())
        .env("PORTWATCH_EBPF_OBJECT", object);
    cmd
}

/// Build the eBPF object, then `portwatch`; returns the binary's path.
pub fn build_all(options: &Options) -> Result<PathBuf> {
    let tc = toolchain::ensure()?;
    let object = build_ebpf(&tc, options)?;
    let mut cmd = userspace_cargo(&object);
    cmd.args(["build", "--package", "portwatch"]);
    if options.release {
        cmd.arg("--release");
    }
    util::run(&mut cmd)?;
    let profile = if options.release { "release" } else { "debug" };
    Ok(workspace_root()
        .join("target")
        .join(profile)
        .join("portwatch"))
}
