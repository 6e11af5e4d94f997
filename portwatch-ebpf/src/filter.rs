//! Filters set by userspace before load (`--pid`, `--uid`, `--port`, `-4`/`-6`):
//! applied before an event is reserved, so filtered-out traffic never crosses the
//! ring buffer.
use portwatch_common::{SockInfo, AF_INET, AF_INET6, FILTER_MAX};

use crate::{
    config::{read, setting, PORTWATCH_CONFIG},
    emit::Tuple,
};

/// Whether `value` is among the first `count` entries of `list`.
#[inline(always)]
fn listed(list: &[u32; FILTER_MAX], count: u32, value: u32) -> bool {
    let mut i = 0;
    while i < FILTER_MAX {
        if (i as u32) < count && read(&list[i]) == value {
            return true;
        }
        i += 1;
    }
    false
}

/// The family on the wire: an IPv6 socket with IPv4-mapped addresses speaks IPv4.
#[inline(always)]
fn wire_family(tuple: &Tuple) -> u16 {
    let a = &tuple.saddr;
    let mapped = a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff;
    if tuple.family == AF_INET6 && mapped {
        AF_INET
    } else {
        tuple.family
    }
}

#[inline(always)]
pub fn passes(owner: &SockInfo, tuple: &Tuple) -> bool {
    let c = &PORTWATCH_CONFIG;
    let pids = setting!(filter_pid_count);
    if pids > 0 && !listed(&c.filter_pids, pids, owner.pid) {
        return false;
    }
    let uids = setting!(filter_uid_count);
    if uids > 0 && !listed(&c.filter_uids, uids, owner.uid) {
        return false;
    }
    let ports = setting!(filter_port_count);
    if ports > 0
        && !listed(&c.filter_ports, ports, tuple.sport as u32)
        && !listed(&c.filter_ports, ports, tuple.dport as u32)
    {
        return false;
    }
    let family = setting!(filter_family);
    family == 0 || family == wire_family(tuple) as u32
}
