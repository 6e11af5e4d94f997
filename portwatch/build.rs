//! Points the loader at the eBPF object.
//!
//! - `cargo xtask build` builds the object first and passes its path in
//!   `PORTWATCH_EBPF_OBJECT`: it must exist.
//! - A plain `cargo build --release` finds it where xtask leaves it, and fails with
//!   the command to run when it is not there.
//! - Any other build without it (`cargo check`, `cargo clippy`, `cargo test`,
//!   rust-analyzer) embeds an empty stub and says so: everything but tracing works,
//!   and tracing says plainly that this binary has no eBPF programs.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=PORTWATCH_EBPF_OBJECT");
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let default = manifest.join("../target/ebpf/portwatch.bpf.o");
    println!("cargo:rerun-if-changed={}", default.display());
    let object = match env::var_os("PORTWATCH_EBPF_OBJECT") {
        Some(p) => {
            let p = PathBuf::from(p);
            if !p.is_file() {
                fail(&format!(
                    "PORTWATCH_EBPF_OBJECT names {}, which does not exist",
                    p.display()
                ));
            }
            p
        }
        None if default.is_file() => default,
        None if env::var("PROFILE").as_deref() == Ok("release") => fail(&format!(
            "the eBPF object {} does not exist: build with `cargo xtask build --release` (it builds the eBPF programs first)",
            default.display()
        )),
        None => {
            let stub = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"))
                .join("portwatch-stub.bpf.o");
            fs::write(&stub, b"").expect("writing the stub object to OUT_DIR");
            println!(
                "cargo:warning=no eBPF object at {}: this build embeds an empty stub (fine for check, clippy and unit tests; `cargo xtask build` builds the real one)",
                default.display()
            );
            stub
        }
    };
    println!("cargo:rerun-if-changed={}", object.display());
    println!("cargo:rustc-env=PORTWATCH_EBPF_OBJECT={}", object.display());
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
