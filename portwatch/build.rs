//! Points the loader at the eBPF object. `cargo xtask` builds the object first and
//! passes its path; a plain `cargo build` finds it where xtask leaves it.
use std::{env, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=PORTWATCH_EBPF_OBJECT");
    let object = match env::var_os("PORTWATCH_EBPF_OBJECT") {
        Some(p) => PathBuf::from(p),
        None => {
            let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
            manifest.join("../target/ebpf/portwatch.bpf.o")
        }
    };
    if !object.is_file() {
        panic!(
            "the eBPF object {} does not exist: build with `cargo xtask build` (it builds the eBPF programs first)",
            object.display()
        );
    }
    println!("cargo:rerun-if-changed={}", object.display());
    println!("cargo:rustc-env=PORTWATCH_EBPF_OBJECT={}", object.display());
}
