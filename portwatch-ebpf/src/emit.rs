//! Putting events in the ring buffer: reserve, fill, submit with batched wakeups;
//! counting what does not fit.
use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use portwatch_common::{Counter, Event, EventKind, SockInfo, IPPROTO_TCP};

use crate::{
    config::setting,
    counters::count,
    filter,
    kernel::{self, now_ns},
    maps::EVENTS,
    tuple::Tuple,
};

/// What an event says beyond its endpoints and owner.
pub struct Detail {
    pub kind: EventKind,
    /// The `struct sock` address.
    pub sock_id: u64,
    /// The socket's cookie, 0 where not known.
    pub cookie: u64,
    /// Raw TCP states, as the kernel gave them.
    pub old_state: u8,
    pub new_state: u8,
    pub duration_ns: u64,
    pub error: i32,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    /// UDP: the socket's inode number.
    pub sock_ino: u32,
}

impl Detail {
    /// An event of `kind` on `sk`, no duration, no error.
    #[inline(always)]
    pub fn new(kind: EventKind, sk: u64, old_state: u8, new_state: u8) -> Detail {
        Detail {
            kind,
            sock_id: sk,
            cookie: 0,
            old_state,
            new_state,
            duration_ns: 0,
            error: 0,
            proto: IPPROTO_TCP as u8,
            sock_ino: 0,
        }
    }
}

/// Batch notifications: under load the reader is woken once per `wakeup_bytes`
/// rather than per event; it also drains on a timer, so a lone event still shows
/// promptly.
#[inline(always)]
fn wakeup_flags() -> u64 {
    let batch = setting!(wakeup_bytes) as u64;
    if batch == 0 {
        return 0;
    }
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) + Event::SIZE as u64 >= batch {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Reserve, fill and submit one event, unless the kernel-side filters drop it;
/// count it as lost when the buffer is full.
#[inline(always)]
pub fn emit(tuple: &Tuple, owner: &SockInfo, detail: &Detail) {
    if !filter::passes(owner, tuple) {
        return;
    }
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            // Filled in place: building the event on the stack first would cost
            // another 128 of the 512 bytes BPF programs have.
            let e = entry.as_mut_ptr();
            // SAFETY: `e` points to a reserved, writable Event-sized record; every
            // field is written before it is submitted.
            unsafe {
                (*e).ts_ns = now_ns();
                (*e).sock_id = detail.sock_id;
                (*e).sock_born_ns = owner.born_ns;
                (*e).sock_cookie = detail.cookie;
                (*e).duration_ns = detail.duration_ns;
                (*e).pid = owner.pid;
                (*e).tid = owner.tid;
                (*e).uid = owner.uid;
                (*e).error = detail.error;
                (*e).sport = tuple.sport;
                (*e).dport = tuple.dport;
                (*e).family = tuple.family;
                (*e).kind = detail.kind as u8;
                (*e).origin = owner.origin;
                (*e).old_state = detail.old_state;
                (*e).new_state = detail.new_state;
                (*e).flags = owner.flags;
                (*e).proto = detail.proto;
                (*e).saddr = tuple.saddr;
                (*e).daddr = tuple.daddr;
                (*e).comm = owner.comm;
                (*e).ppid = owner.ppid;
                (*e).sock_ino = detail.sock_ino;
                // task_start_ns is the scratch space, written after.
                kernel::sock_netns_into(detail.sock_id, &mut (*e).netns, &mut (*e).task_start_ns);
                (*e).cgroup_id = owner.cgroup_id;
                (*e).task_start_ns = owner.task_start_ns;
            }
            entry.submit(wakeup_flags());
        }
        None => {
            count(Counter::Lost);
        }
    }
}
