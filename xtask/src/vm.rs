//! `cargo xtask vm-test`: the integration suite on other real kernels, booted
//! under QEMU (software emulation: KVM is not usable everywhere this runs) from a
//! busybox initramfs. Kernels come from Debian's archive and are cached outside the
//! repository.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{
    build, report,
    results::Suite,
    util::{self, which, workspace_root},
};

#[derive(clap::Args, Clone)]
pub struct VmOptions {
    /// Kernel packages to boot (default: the newest Debian 12 cloud kernels of the
    /// 6.1 and 6.12 series, before and after inet_csk_accept changed signature).
    #[arg(long = "kernel")]
    pub kernels: Vec<String>,
}

/// A kernel series: the newest package whose name matches, as (prefix, suffix)
/// around a version number.
const SERIES: [(&str, &str); 2] = [
    ("linux-image-6.1.0-", "-cloud-amd64-unsigned"),
    ("linux-image-6.12.", "+deb12-cloud-amd64-unsigned"),
];

fn cache_dir() -> PathBuf {
    std::env::var_os("PORTWATCH_KERNEL_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("portwatch/kernels"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/portwatch/kernels"))
        })
        .unwrap_or_else(|| PathBuf::from("/var/cache/portwatch/kernels"))
}

/// The newest package of each series that the archive lists.
fn default_kernels() -> Result<Vec<String>> {
    let names = util::output(Command::new("apt-cache").args(["pkgnames", "linux-image-6"]))
        .unwrap_or_default();
    let mut chosen = Vec::new();
    for (prefix, suffix) in SERIES {
        let newest = names
            .lines()
            .filter_map(|n| {
                let v = n.strip_prefix(prefix)?.strip_suffix(suffix)?;
                v.parse::<u32>().ok().map(|v| (v, n.to_string()))
            })
            .max();
        match newest {
            Some((_, name)) => chosen.push(name),
            None => bail!("no package {prefix}N{suffix} in the package lists: run `apt-get update`, or name kernels with --kernel"),
        }
    }
    Ok(chosen)
}

/// Download and unpack a kernel package once; the path of its vmlinuz.
fn kernel_image(package: &str) -> Result<PathBuf> {
    let dir = cache_dir().join(package);
    let find = |dir: &Path| -> Option<PathBuf> {
        fs::read_dir(dir.join("root/boot"))
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
    };
    if let Some(image) = find(&dir) {
        return Ok(image);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("xtask: downloading {package} into {}", dir.display());
    util::run(
        Command::new("apt-get")
            .current_dir(&dir)
            .args(["download", package]),
    )?;
    let deb = util::file_with_extension(&dir, "deb").context("apt-get download left no .deb")?;
    util::run(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(dir.join("root")),
    )?;
    let _ = fs::remove_file(&deb);
    find(&dir).with_context(|| format!("{package} has no boot/vmlinuz-*"))
}

fn ensure_host_tools() -> Result<()> {
    let busybox_static = Path::new("/bin/busybox").is_file()
        && util::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", "busybox-static"]))
            .is_some_and(|s| s.contains("installed"));
    if which("qemu-system-x86_64").is_none() || which("cpio").is_none() || !busybox_static {
        eprintln!("xtask: installing qemu-system-x86, busybox-static and cpio");
        util::apt_install(&["qemu-system-x86", "busybox-static", "cpio"])?;
    }
    Ok(())
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
mkdir -p /etc
echo 'root:x:0:0:root:/:/bin/sh' > /etc/passwd
echo 'nobody:x:65534:65534:nobody:/:/bin/false' >> /etc/passwd
echo 'root:x:0:' > /etc/group
echo 'nogroup:x:65534:' >> /etc/group
echo "PORTWATCH-VM-START $(uname -r)"
PW_ONLY="$(cat /pw_only 2>/dev/null)" /integration-test --portwatch /portwatch RESULTS_ARG /results.jsonl
code=$?
# The results go back on the second serial port, which QEMU writes to a file on
# the host; closing the port waits until every byte is out.
stty -F /dev/ttyS1 raw -echo
cat /results.jsonl > /dev/ttyS1
echo "PORTWATCH-VM-EXIT $code"
poweroff -f
"#;

/// Static binaries (glibc links statically) that run in a bare initramfs.
fn static_binaries(object: &Path) -> Result<(PathBuf, PathBuf)> {
    let target = "x86_64-unknown-linux-gnu";
    util::run(
        build::userspace_cargo(object)
            .args([
                "build",
                "--package",
                "portwatch",
                "--package",
                "integration-test",
            ])
            .args(["--target", target])
            // With --target, RUSTFLAGS reach only the target, not build scripts.
            .env("RUSTFLAGS", "-C target-feature=+crt-static"),
    )?;
    let dir = workspace_root().join("target").join(target).join("debug");
    Ok((dir.join("portwatch"), dir.join("integration-test")))
}

fn initramfs(portwatch: &Path, integration: &Path) -> Result<PathBuf> {
    let root = workspace_root().join("target/vm");
    let staging = root.join("initramfs");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(staging.join("bin"))?;
    fs::copy("/bin/busybox", staging.join("bin/busybox"))?;
    // Without their debug info: the guest's root file system is its RAM.
    for (binary, name) in [(portwatch, "portwatch"), (integration, "integration-test")] {
        util::run(
            Command::new("objcopy")
                .arg("--strip-debug")
                .arg(binary)
                .arg(staging.join(name)),
        )
        .with_context(|| format!("stripping {name} for the guest (objcopy, from binutils)"))?;
    }
    fs::write(
        staging.join("init"),
        INIT.replace("RESULTS_ARG", report::RESULTS_ARG),
    )?;
    if let Some(only) = std::env::var_os("PW_ONLY") {
        fs::write(staging.join("pw_only"), only.as_encoded_bytes())?;
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(staging.join("init"), fs::Permissions::from_mode(0o755))?;
    let image = root.join("initramfs.cpio");
    util::run(
        Command::new("sh")
            .current_dir(&staging)
            .arg("-c")
            .arg(format!(
                "find . | cpio --quiet -o -H newc > '{}'",
                image.display()
            )),
    )
    .context("building the initramfs with cpio")?;
    Ok(image)
}

/// Boot `kernel_image` with the suite in `initrd`, its console echoed on stderr
/// after `label`; the guest's results arrive in `results` (its second serial
/// port). Whether the suite exited with success.
fn boot(kernel_image: &Path, initrd: &Path, results: &Path, label: &str) -> Result<bool> {
    let mut serial_file = std::ffi::OsString::from("file:");
    serial_file.push(results);
    let (status, lines) = util::run_streaming(
        Command::new("timeout")
            .arg("1200")
            .arg("qemu-system-x86_64")
            .args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1024"])
            .arg("-kernel")
            .arg(kernel_image)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", "console=ttyS0 panic=-1 quiet"])
            .args([
                "-nographic",
                "-no-reboot",
                "-monitor",
                "none",
                "-serial",
                "stdio",
                "-serial",
            ])
            .arg(serial_file)
            .stdin(std::process::Stdio::null()),
        label,
    )?;
    let exit = lines.iter().find_map(|l| {
        l.trim()
            .strip_prefix("PORTWATCH-VM-EXIT ")
            .map(|c| c.trim().to_string())
    });
    match exit {
        Some(code) => Ok(code == "0"),
        None => bail!("the guest did not finish the suite (qemu: {status})"),
    }
}

/// The suite on each kernel; a kernel that does not boot or finish is a failed
/// suite.
pub fn vm_test(options: &VmOptions, object: &Path) -> Result<Vec<Suite>> {
    ensure_host_tools()?;
    let kernels = if options.kernels.is_empty() {
        default_kernels()?
    } else {
        options.kernels.clone()
    };
    let (portwatch, integration) = static_binaries(object)?;
    let initrd = initramfs(&portwatch, &integration)?;
    let images = kernels
        .iter()
        .map(|package| kernel_image(package))
        .collect::<Result<Vec<_>>>()?;
    // The guests run at once: much of each suite waits (timeouts, inferred
    // closes, the history's flushes), so emulated kernels side by side take
    // little longer than one.
    let initrd = initrd.as_path();
    Ok(std::thread::scope(|scope| {
        let guests: Vec<_> = kernels
            .iter()
            .zip(&images)
            .map(|(package, image)| {
                scope.spawn(move || {
                    let results = initrd.with_file_name(format!("results-{package}.jsonl"));
                    let _ = fs::remove_file(&results);
                    eprintln!("xtask: booting {package} under QEMU (TCG)");
                    match boot(image, initrd, &results, &console_label(package)) {
                        Ok(exited_ok) => Suite::read(package.clone(), &results, exited_ok),
                        Err(e) => {
                            eprintln!("xtask: error: {package}: {e:#}");
                            Suite::failed(package.clone())
                        }
                    }
                })
            })
            .collect();
        kernels
            .iter()
            .zip(guests)
            .map(|(package, guest)| {
                guest
                    .join()
                    .unwrap_or_else(|_| Suite::failed(package.clone()))
            })
            .collect()
    }))
}

/// `[6.1.0-57] `: what tells one guest's console lines from another's.
fn console_label(package: &str) -> String {
    let version = package.strip_prefix("linux-image-").unwrap_or(package);
    let version = version
        .split(['+', '-'])
        .take(2)
        .filter(|part| part.starts_with(|c: char| c.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join("-");
    format!(
        "[{}] ",
        if version.is_empty() {
            package
        } else {
            &version
        }
    )
}

#[cfg(test)]
mod tests {
    use super::console_label;

    #[test]
    fn each_guest_is_labelled_by_its_kernel_version() {
        assert_eq!(
            console_label("linux-image-6.1.0-57-cloud-amd64-unsigned"),
            "[6.1.0-57] "
        );
        assert_eq!(
            console_label("linux-image-6.12.118+deb12-cloud-amd64-unsigned"),
            "[6.12.118] "
        );
        assert_eq!(console_label("custom"), "[custom] ");
    }
}
