//! Process details for events: executable, command line, user name, cgroup and
//! container. Read from /proc as soon as the event arrives, checked against the
//! start time the kernel recorded (so a reused pid never lends another process's
//! details), and cached per (pid, start time) in a bounded LRU, so a process that
//! has exited by its connection's close is still described.
use std::{num::NonZeroUsize, sync::Arc};

use lru::LruCache;

use super::{
    cgroups::{self, CgroupIndex},
    procfs::{self, Stat},
};
use crate::event::model::{ConnEvent, Owner, ProcessDetails, ProcessMissing};

/// Processes remembered at once.
pub const CACHE_PROCESSES: usize = 4096;

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

impl Enricher {
    pub fn new() -> Enricher {
        Enricher {
            processes: LruCache::new(NonZeroUsize::new(CACHE_PROCESSES).unwrap()),
            users: LruCache::new(NonZeroUsize::new(1024).unwrap()),
            cgroups: CgroupIndex::new(),
            ns_per_tick: procfs::ns_per_tick(),
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
    ) -> Result<(), ProcessMissing> {
        let text = procfs::read_stat(pid).ok_or(ProcessMissing::Exited)?;
        let stat = Stat::parse(&text).ok_or(ProcessMissing::Exited)?;
        let same = match start_ns {
            Some(ns) => ns / self.ns_per_tick == stat.start_ticks,
            None => stat.comm == comm,
        };
        if same {
            Ok(())
        } else {
            Err(ProcessMissing::PidReused)
        }
    }

    fn read_process(
        &self,
        pid: u32,
        start_ns: Option<u64>,
        comm: &str,
    ) -> Result<ProcessDetails, ProcessMissing> {
        self.same_process(pid, start_ns, comm)?;
        let exe = procfs::read_exe(pid).map(Into::into);
        let cmdline = procfs::read_cmdline(pid).map(Into::into);
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
    fn this_process_is_described_and_a_wrong_start_time_is_refused() {
        let mut enricher = Enricher::new();
        let pid = std::process::id();
        let text = procfs::read_stat(pid).unwrap();
        let stat = Stat::parse(&text).unwrap();
        let (start_ns, comm) = (stat.start_ticks * enricher.ns_per_tick, stat.comm);
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
            Err(ProcessMissing::PidReused)
        );
        assert!(enricher.user(0).is_some());
    }
}
