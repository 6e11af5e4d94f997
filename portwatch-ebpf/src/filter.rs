//! Filters set by userspace before load (`--pid`, `--uid`, `--port`, `-4`/`-6`):
//! applied before an event is reserved, so filtered-out traffic never crosses the
//! ring buffer.
use portwatch_common::{SockInfo, FILTER_MAX};

use crate::{
    config::{read, setting, PORTWATCH_CONFIG},
    tuple::Tuple,
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

/// Whether an event of `owner` on `tuple` gets through every filter.
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
    family == 0 || family == tuple.wire_family() as u32
}
