//! The tracers of a UDP bench run: starting portwatch (or the floor), reading
//! what it printed, and noticing another tracer's programs on the same hooks.
use std::{
    fs,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// Start portwatch with its stdout in `out`; its stderr lines.
pub(super) fn start(
    portwatch: &Path,
    args: &[&str],
    out: &Path,
) -> Result<(Child, mpsc::Receiver<String>)> {
    let mut child = Command::new(portwatch)
        .arg("--no-snapshot")
        .args(args)
        .stdout(fs::File::create(out)?)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting portwatch")?;
    let (tx, rx) = mpsc::channel();
    let err = BufReader::new(child.stderr.take().context("stderr")?);
    std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .context("portwatch did not attach")?;
        if line.contains("attached") {
            return Ok((child, rx));
        }
    }
}

/// From `portwatch: detached; N events, L lost, S skipped, ...`: L and S.
pub(super) fn lost_skipped(said: &[String]) -> Option<(u64, u64)> {
    let line = said.iter().find(|l| l.contains("detached;"))?;
    let words: Vec<&str> = line
        .split([' ', ',', ';'])
        .filter(|w| !w.is_empty())
        .collect();
    let before = |word: &str| -> Option<u64> {
        let i = words.iter().position(|w| *w == word)?;
        words.get(i.checked_sub(1)?)?.parse().ok()
    };
    Some((before("lost")?, before("skipped")?))
}

/// The UDP events of `pid` in portwatch's output: connects, closes, others.
pub(super) fn count_events(out: &Path, pid: u64) -> Result<[u64; 3]> {
    let mut counts = [0; 3];
    for line in fs::read_to_string(out)?.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["proto"] == "udp" && v["pid"].as_u64() == Some(pid) {
            counts[match v["event"].as_str() {
                Some("connect") => 0,
                Some("close") => 1,
                _ => 2,
            }] += 1;
        }
    }
    Ok(counts)
}

/// The classic tracepoint programs loaded on this host, by id, through the
/// `bpf()` syscall (`bpftool perf list` walks every descriptor of every process
/// and takes a second). Another tracer's programs on the syscall tracepoints put
/// every syscall on the slow path and run in the load generator's sends: a run
/// they overlap is measured again.
pub(super) fn tracepoint_programs() -> Vec<u32> {
    const PROG_GET_NEXT_ID: libc::c_long = 11;
    const PROG_GET_FD_BY_ID: libc::c_long = 13;
    const OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const PROG_TYPE_TRACEPOINT: u32 = 5;
    let bpf = |cmd: libc::c_long, attr: *mut u32, size: usize| {
        // SAFETY: `attr` points at `size` bytes laid out as the command expects.
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size) }
    };
    let (mut ids, mut id) = (Vec::new(), 0u32);
    loop {
        // start_id, next_id, open_flags.
        let mut attr = [id, 0, 0];
        if bpf(PROG_GET_NEXT_ID, attr.as_mut_ptr(), 12) != 0 {
            return ids;
        }
        id = attr[1];
        let mut attr = [id, 0, 0];
        let fd = bpf(PROG_GET_FD_BY_ID, attr.as_mut_ptr(), 12);
        if fd < 0 {
            continue;
        }
        // The info's first fields: type, id.
        let mut info = [0u32; 2];
        let ptr = info.as_mut_ptr() as u64;
        // bpf_fd, info_len, info (a u64 pointer).
        let mut attr = [fd as u32, 8, ptr as u32, (ptr >> 32) as u32];
        let got = bpf(OBJ_GET_INFO_BY_FD, attr.as_mut_ptr(), 16);
        // SAFETY: the descriptor just opened.
        unsafe { libc::close(fd as i32) };
        if got == 0 && info[0] == PROG_TYPE_TRACEPOINT {
            ids.push(id);
        }
    }
}

/// Wait until no other tracer's tracepoint programs are loaded (at most 30
/// minutes: then measure anyway, and say so).
pub(super) fn wait_quiet() {
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut said = false;
    while !tracepoint_programs().is_empty() && Instant::now() < deadline {
        if !std::mem::replace(&mut said, true) {
            eprintln!("xtask: bench: UDP: waiting for another tracer's tracepoint programs to go");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn closing_line() {
        let said = [
            "portwatch: attached (mode tracepoint): ...".to_string(),
            "portwatch: detached; 1000 events, 3 lost, 2 skipped, 1005 received from the kernel"
                .to_string(),
        ];
        assert_eq!(super::lost_skipped(&said), Some((3, 2)));
        assert_eq!(super::lost_skipped(&said[..1]), None);
    }
}
