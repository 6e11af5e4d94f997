//! What portwatch tells about a process: its details (exe, command line, user,
//! parent, cgroup, container) and its name, however hostile.
use std::{io::Read, path::PathBuf, thread, time::Duration};

use anyhow::Result;
use serde_json::json;

use super::one_client;
use crate::{
    expect,
    harness::{
        helpers::{Client, Hold, Server, ServerSpec, LOOPBACK},
        launch::Launch,
        tracer::Tracer,
    },
    sock,
};

/// A cgroup named like a Docker container's, removed when dropped.
struct ContainerCgroup {
    dir: PathBuf,
    /// Its path as portwatch shows it (below the cgroup2 root).
    relative: String,
    container_id: String,
}

impl ContainerCgroup {
    /// None (and why, on stdout) when cgroup v2 is not there to make one in.
    fn create() -> Option<ContainerCgroup> {
        let me = std::process::id();
        let container_id = format!("{:064x}", 0xfeed_0000_0000u64 + me as u64);
        let relative = format!("/portwatch-test-{me}/docker-{container_id}.scope");
        let Some(root) = cgroup2_root() else {
            println!("# cgroup part not checked: cgroup v2 is not mounted");
            return None;
        };
        let dir = root.join(relative.trim_start_matches('/'));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            println!(
                "# cgroup part not checked: cannot create {}: {e}",
                dir.display()
            );
            return None;
        }
        Some(ContainerCgroup {
            dir,
            relative,
            container_id,
        })
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    })
}

/// A client in a cgroup named like a Docker container's, with a known command line.
pub fn process_details(tracer: &Tracer) -> Result<Vec<String>> {
    let cgroup = ContainerCgroup::create();
    let server = Server::spawn(&ServerSpec::new(LOOPBACK))?;
    let listener = server.listener.clone();
    let mut client = Client::spawn_in(
        listener.socket_addr(),
        "pw-detailed",
        Hold::Ms(300),
        cgroup.as_ref().map(|c| c.dir.as_path()),
    )?;
    let client_end = client.connected()?;
    let cmdline = client.cmdline();
    client.finish()?;
    server.finish()?;
    let uid = client_end.proc.uid;
    let user = nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name);
    let mut expected = expect::connect(&client_end, &listener)
        .with(
            json!({"exe": std::env::current_exe()?.to_string_lossy(), "cmdline": cmdline,
                     "user": user, "ppid": std::process::id(), "process_missing": null}),
        )
        .named("connect by a client with known details");
    if let Some(cgroup) = &cgroup {
        expected =
            expected.with(json!({"cgroup": cgroup.relative, "container_id": cgroup.container_id}));
    }
    Ok(expect::check(tracer, &[expected]))
}

/// A process named with an escape sequence: the table shows it escaped (no raw
/// control byte reaches the terminal), JSON carries it exactly and stays valid.
pub fn hostile_name(tracer: &Tracer, portwatch: &str, mode: &str) -> Result<Vec<String>> {
    let hostile = "pw\x1b[31mevil\x07";
    let server_port = sock::unused_port(LOOPBACK)?;
    let table = Launch::trace(portwatch, mode)
        .args(["--format", "table", "--no-snapshot", "--color", "never"])
        .args(["--port", &server_port.to_string()])
        .start(|mut stdout| {
            let mut bytes = Vec::new();
            let _ = stdout.read_to_end(&mut bytes);
            bytes
        })?;
    let (listener, client) = one_client(LOOPBACK, server_port, hostile)?;
    let expected = expect::connect(&client, &listener).named("connect by a hostile name, JSON");
    let mut failures = expect::check(tracer, &[expected]);
    failures.extend(
        tracer
            .not_json()
            .into_iter()
            .map(|l| format!("not JSON: {l}")),
    );
    thread::sleep(Duration::from_millis(300));
    let bytes = table.stop()?.stdout;
    let text = String::from_utf8_lossy(&bytes);
    if bytes.iter().any(|b| *b == 0x1b || *b == 0x07) {
        failures.push("a raw control byte reached the table output".into());
    }
    if !text.contains(&format!("{}/pw\\x1b[31mevil\\x07", client.proc.pid)) {
        failures.push(format!("the escaped name is not in the table:\n{text}"));
    }
    Ok(failures)
}
