//! Process details for events: executable, command line, user name, cgroup and
//! container. Read from /proc as soon as the event arrives, checked against the
//! start time the kernel recorded (so a reused pid never lends another process's
//! details), and cached per (pid, start time) in a bounded LRU, so a process that
//! has exited by its connection's close is still described.
use std::{fs, num::NonZeroUsize, sync::Arc};

use lru::LruCache;

use crate::{
    cgroups::{self, CgroupIndex},
    model::{ConnEvent, Owner, ProcessDetails},
};

/// Processes remembered at once.
pub const CACHE_PROCESSES: usize = 4096;

/// `/proc/PID/stat`'s start time (field 22, in clock ticks since boot) and comm.
pub fn parse_stat(stat: &str) -> Option<(u64, &str)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = &stat[open + 1..close];
    // Fields after the comm start at field 3 (state); start time is field 22.
    let start = stat[close + 1..].split_whitespace().nth(19)?.parse().ok()?;
    Some((start, comm))
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

/// What is known of one process (one pid and start time).
struct KnownProcess {
    /// Its exe and command line, or why they could not be read. Neither changes
    /// for a (pid, start time): a failure is final too.
    read: ProcessDetails,
    /// The details its last event carried, with the uid and cgroup they were made
    /// for: its next events share them while those stay the same.
    last: Option<(u32, Option<u64>, Arc<ProcessDetails>)>,
}

pub struct Enricher {
    processes: LruCache<(u32, u64), KnownProcess>,
    users: LruCache<u32, Option<String>>,
    cgroups: CgroupIndex,
    /// Nanoseconds per clock tick (USER_HZ).
    ns_per_tick: u64,
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

impl Enricher {
    pub fn new() -> Enricher {
        Enricher {
            processes: LruCache::new(NonZeroUsize::new(CACHE_PROCESSES).unwrap()),
            users: LruCache::new(NonZeroUsize::new(1024).unwrap()),
            cgroups: CgroupIndex::new(),
            ns_per_tick: ns_per_tick(),
        }
    }

    fn user(&mut self, uid: u32) -> Option<String> {
        if let Some(u) = self.users.get(&uid) {
            return u.clone();
        }
        let name = nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map(|u| u.name);
        self.users.put(uid, name.clone());
        name
    }

    /// Whether /proc/PID is (still) the process the kernel saw: same start time, or
    /// without one, the same name.
    fn same_process(
        &self,
        pid: u32,
        start_ns: Option<u64>,
        comm: &str,
    ) -> Result<(), &'static str> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|_| "process exited")?;
        let (ticks, proc_comm) = parse_stat(&stat).ok_or("process exited")?;
        let same = match start_ns {
            Some(ns) => ns / self.ns_per_tick == ticks,
            None => proc_comm == comm,
        };
        if same {
            Ok(())
        } else {
            Err("pid reused by another process")
        }
    }

    fn read_process(
        &self,
        pid: u32,
        start_ns: Option<u64>,
        comm: &str,
    ) -> Result<ProcessDetails, &'static str> {
        self.same_process(pid, start_ns, comm)?;
        let exe = fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into());
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .ok()
            .map(|raw| parse_cmdline(&raw).into());
        // Checked again: what was read in between belongs to the same process.
        self.same_process(pid, start_ns, comm)?;
        Ok(ProcessDetails {
            exe,
            cmdline,
            ..ProcessDetails::default()
        })
    }

    /// Processes described in the cache now.
    pub fn cached_processes(&self) -> u64 {
        self.processes.len() as u64
    }

    /// Fill in `event.process` for a known owner.
    pub fn enrich(&mut self, event: &mut ConnEvent) {
        let Some(owner) = &event.owner else { return };
        let Some(start_ns) = owner.start_ns else {
            // Without a start time the pid may name another process by now: read
            // afresh, keep nothing.
            let read = self.read_or_why(owner);
            event.process = Some(Arc::new(self.with_user_and_cgroup(read, owner)));
            return;
        };
        let key = (owner.pid, start_ns);
        let read = match self.processes.get(&key) {
            Some(known) => match &known.last {
                Some((uid, cgroup_id, details))
                    if *uid == owner.uid && *cgroup_id == owner.cgroup_id =>
                {
                    event.process = Some(details.clone());
                    return;
                }
                _ => known.read.clone(),
            },
            None => self.read_or_why(owner),
        };
        let details = Arc::new(self.with_user_and_cgroup(read.clone(), owner));
        self.processes.put(
            key,
            KnownProcess {
                read,
                last: Some((owner.uid, owner.cgroup_id, details.clone())),
            },
        );
        event.process = Some(details);
    }

    /// The owner's exe and command line, or why they could not be read.
    fn read_or_why(&self, owner: &Owner) -> ProcessDetails {
        self.read_process(owner.pid, owner.start_ns, &owner.comm)
            .unwrap_or_else(|why| ProcessDetails {
                missing: Some(why),
                ..ProcessDetails::default()
            })
    }

    /// `read` completed with what belongs to this event's owner: user and cgroup.
    fn with_user_and_cgroup(&mut self, mut read: ProcessDetails, owner: &Owner) -> ProcessDetails {
        read.user = self.user(owner.uid);
        if let Some(id) = owner.cgroup_id {
            read.cgroup = self.cgroups.path_for(id, owner.pid);
            read.container_id = read.cgroup.as_deref().and_then(cgroups::container_id);
        }
        read
    }
}

impl Default for Enricher {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_hostile_comm() {
        // A comm may contain spaces and parentheses; the last ')' ends it.
        let stat =
            "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(parse_stat(stat), Some((123456, "a) b (c")));
        assert_eq!(parse_stat("garbage"), None);
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
    fn this_process_is_described_and_a_wrong_start_time_is_refused() {
        let mut enricher = Enricher::new();
        let pid = std::process::id();
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let (ticks, comm) = parse_stat(&stat).unwrap();
        let start_ns = ticks * enricher.ns_per_tick;
        let details = enricher.read_process(pid, Some(start_ns), comm).unwrap();
        assert_eq!(
            details.exe.as_deref(),
            Some(std::env::current_exe().unwrap().to_str().unwrap())
        );
        assert_eq!(
            details.cmdline.unwrap()[0],
            std::env::args().next().unwrap()
        );
        let later = start_ns + 10 * enricher.ns_per_tick;
        assert_eq!(
            enricher.read_process(pid, Some(later), comm),
            Err("pid reused by another process")
        );
        assert!(enricher.user(0).is_some());
    }
}
