//! Reading /proc: a process's stat line, command line and executable, which
//! processes hold which socket inodes, and this process's own memory. Every
//! /proc/PID/stat parse in portwatch goes through [`Stat::parse`].
use std::{collections::HashMap, fs};

/// The fields of `/proc/PID/stat` portwatch uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat<'a> {
    /// The task name, between the first '(' and the last ')': a name may itself
    /// hold spaces and parentheses.
    pub comm: &'a str,
    /// Field 4.
    pub ppid: u32,
    /// Field 22, in clock ticks since boot.
    pub start_ticks: u64,
}

impl<'a> Stat<'a> {
    pub fn parse(stat: &'a str) -> Option<Stat<'a>> {
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let comm = stat.get(open + 1..close)?;
        // Fields after the comm start at field 3 (state).
        let mut rest = stat[close + 1..].split_whitespace();
        let ppid = rest.nth(1)?.parse().ok()?;
        // Field 4 was the 2nd after the comm; field 22 is 18 further on.
        let start_ticks = rest.nth(17)?.parse().ok()?;
        Some(Stat {
            comm,
            ppid,
            start_ticks,
        })
    }
}

/// The text of `/proc/PID/stat`; None once the process is gone.
pub fn read_stat(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/stat")).ok()
}

/// The executable path (`/proc/PID/exe`).
pub fn read_exe(pid: u32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// This process's network namespace (`/proc/self/ns/net`), by its inode number
/// (the kernel's `ns.inum`, an unsigned int: what events carry).
pub fn own_netns() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self/ns/net")
        .ok()
        .and_then(|m| u32::try_from(m.ino()).ok())
}

/// The command line (`/proc/PID/cmdline`), one string per argument.
pub fn read_cmdline(pid: u32) -> Option<Vec<String>> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|raw| parse_cmdline(&raw))
}

/// The arguments of a `/proc/PID/cmdline` (NUL-separated).
pub fn parse_cmdline(raw: &[u8]) -> Vec<String> {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Nanoseconds per clock tick (USER_HZ), the unit of /proc/PID/stat's start time.
pub fn ns_per_tick() -> u64 {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as u64;
    1_000_000_000 / ticks
}

/// The processes holding each socket inode, from /proc/PID/fd (lowest pid first).
pub fn socket_holders() -> HashMap<u32, Vec<u32>> {
    let mut holders: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return holders;
    };
    let mut pids: Vec<u32> = procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.filter_map(Result::ok) {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            if let Some(inode) = socket_inode(&target.to_string_lossy()) {
                let list = holders.entry(inode).or_default();
                if !list.contains(&pid) {
                    list.push(pid);
                }
            }
        }
    }
    holders
}

/// The inode of an fd link target `socket:[INODE]`.
fn socket_inode(target: &str) -> Option<u32> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// This process's resident set size in kB, from /proc/self/status.
pub fn own_rss_kb() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_hostile_comm() {
        // A comm may contain spaces and parentheses; the last ')' ends it.
        let stat =
            "4242 (a) b (c) S 77 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(
            Stat::parse(stat),
            Some(Stat {
                comm: "a) b (c",
                ppid: 77,
                start_ticks: 123456
            })
        );
        assert_eq!(Stat::parse("garbage"), None);
        assert_eq!(Stat::parse("1 (x) S 0"), None);
    }

    #[test]
    fn this_process_stat_agrees_with_the_kernel() {
        let stat = read_stat(std::process::id()).unwrap();
        let parsed = Stat::parse(&stat).unwrap();
        assert_eq!(parsed.ppid, std::os::unix::process::parent_id());
        assert!(parsed.start_ticks > 0);
    }

    #[test]
    fn cmdline_arguments() {
        assert_eq!(
            parse_cmdline(b"nc\0-l\0-p\08080\0"),
            vec!["nc", "-l", "-p", "8080"]
        );
        assert_eq!(parse_cmdline(b""), Vec::<String>::new());
        assert_eq!(parse_cmdline(b"a b\0"), vec!["a b"]);
    }

    #[test]
    fn socket_link_targets() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("pipe:[12345]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }
}
