//! Event filters (`--pid`, `--uid`, `--port`, `-4`/`-6`, `--proto` in the kernel; `--comm`,
//! `--role`, `--class`, `--container`, `--cgroup` here).
use super::model::{ConnEvent, Family, PortClass, Role, Transport};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub pids: Vec<u32>,
    pub uids: Vec<u32>,
    pub ports: Vec<u16>,
    pub family: Option<Family>,
    /// Empty: TCP and UDP.
    pub protos: Vec<Transport>,
    pub comms: Vec<String>,
    pub roles: Vec<Role>,
    pub classes: Vec<PortClass>,
    /// Container id prefixes.
    pub containers: Vec<String>,
    /// cgroup path prefixes.
    pub cgroups: Vec<String>,
}

impl Filter {
    /// The whole filter, in userspace: the kernel part again (harmless, and it
    /// keeps `snapshot`, which does not go through the kernel, filtered too) and
    /// the parts only userspace can judge.
    pub fn matches(&self, e: &ConnEvent) -> bool {
        let owner = e.owner.as_ref();
        let process = e.process.as_ref();
        let any = |list_empty: bool, hit: bool| list_empty || hit;
        any(
            self.pids.is_empty(),
            owner.is_some_and(|o| self.pids.contains(&o.pid)),
        ) && any(
            self.uids.is_empty(),
            owner.is_some_and(|o| self.uids.contains(&o.uid)),
        ) && any(
            self.ports.is_empty(),
            self.ports.contains(&e.local.port) || self.ports.contains(&e.remote.port),
        ) && self.family.is_none_or(|f| f == e.family)
            && any(self.protos.is_empty(), self.protos.contains(&e.proto))
            && any(
                self.comms.is_empty(),
                owner.is_some_and(|o| self.comms.contains(&o.comm)),
            )
            && any(self.roles.is_empty(), self.roles.contains(&e.role))
            && any(
                self.classes.is_empty(),
                self.classes.contains(&e.local.class)
                    || (e.role != Role::Listener && self.classes.contains(&e.remote.class)),
            )
            && any(
                self.containers.is_empty(),
                process
                    .and_then(|p| p.container_id.as_deref())
                    .is_some_and(|id| self.containers.iter().any(|c| id.starts_with(c.as_str()))),
            )
            && any(
                self.cgroups.is_empty(),
                process
                    .and_then(|p| p.cgroup.as_deref())
                    .is_some_and(|path| self.cgroups.iter().any(|c| path.starts_with(c.as_str()))),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode::tests::sample_event, model::ProcessDetails};

    #[test]
    fn empty_filter_passes_everything() {
        assert!(Filter::default().matches(&sample_event()));
    }

    #[test]
    fn each_filter_keeps_and_drops() {
        let e = sample_event(); // pid 4242 uid 1000 curl, client 51031 -> 80, ipv4
        let keep = |f: Filter| assert!(f.matches(&e), "{f:?} should keep");
        let drop = |f: Filter| assert!(!f.matches(&e), "{f:?} should drop");
        keep(Filter {
            pids: vec![1, 4242],
            ..Default::default()
        });
        drop(Filter {
            pids: vec![1],
            ..Default::default()
        });
        keep(Filter {
            uids: vec![1000],
            ..Default::default()
        });
        drop(Filter {
            uids: vec![0],
            ..Default::default()
        });
        keep(Filter {
            ports: vec![80],
            ..Default::default()
        });
        keep(Filter {
            ports: vec![51031],
            ..Default::default()
        });
        drop(Filter {
            ports: vec![443],
            ..Default::default()
        });
        keep(Filter {
            family: Some(Family::Ipv4),
            ..Default::default()
        });
        drop(Filter {
            family: Some(Family::Ipv6),
            ..Default::default()
        });
        keep(Filter {
            comms: vec!["curl".into()],
            ..Default::default()
        });
        drop(Filter {
            comms: vec!["cur".into()],
            ..Default::default()
        });
        keep(Filter {
            roles: vec![Role::Client],
            ..Default::default()
        });
        drop(Filter {
            roles: vec![Role::Server, Role::Listener],
            ..Default::default()
        });
        keep(Filter {
            classes: vec![PortClass::WellKnown],
            ..Default::default()
        });
        drop(Filter {
            classes: vec![PortClass::Registered],
            ..Default::default()
        });
        drop(Filter {
            containers: vec!["abc".into()],
            ..Default::default()
        });
        drop(Filter {
            cgroups: vec!["/docker".into()],
            ..Default::default()
        });
        let mut c = e.clone();
        c.process = Some(std::sync::Arc::new(ProcessDetails {
            cgroup: Some("/system.slice/docker-abcdef.scope".into()),
            container_id: Some("abcdef".into()),
            ..Default::default()
        }));
        assert!(Filter {
            containers: vec!["abc".into()],
            ..Default::default()
        }
        .matches(&c));
        assert!(Filter {
            cgroups: vec!["/system.slice".into()],
            ..Default::default()
        }
        .matches(&c));
        assert!(!Filter {
            cgroups: vec!["/user.slice".into()],
            ..Default::default()
        }
        .matches(&c));
    }
}
