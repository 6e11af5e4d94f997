//! A connection's endpoints, read from the tracepoint's record or from a sock.
use aya_ebpf::programs::TracePointContext;
use portwatch_common::{AF_INET, AF_INET6};

use crate::{
    config::setting,
    kernel::{self, tp_field},
};

/// A connection's endpoints as the kernel side read them.
#[derive(Clone, Copy)]
pub struct Tuple {
    pub family: u16,
    /// Host byte order.
    pub sport: u16,
    /// Host byte order.
    pub dport: u16,
    /// IPv4 in the first 4 bytes, or IPv6.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

impl Tuple {
    /// From `sock:inet_sock_set_state`'s record (ports there are host order).
    #[inline(always)]
    pub fn from_tracepoint(ctx: &TracePointContext) -> Result<Tuple, i64> {
        let family: u16 = tp_field(ctx, setting!(offsets.tp_family))?;
        let mut tuple = Tuple {
            family,
            sport: tp_field(ctx, setting!(offsets.tp_sport))?,
            dport: tp_field(ctx, setting!(offsets.tp_dport))?,
            saddr: [0; 16],
            daddr: [0; 16],
        };
        if family == AF_INET {
            let s: [u8; 4] = tp_field(ctx, setting!(offsets.tp_saddr))?;
            let d: [u8; 4] = tp_field(ctx, setting!(offsets.tp_daddr))?;
            tuple.saddr[..4].copy_from_slice(&s);
            tuple.daddr[..4].copy_from_slice(&d);
        } else {
            tuple.saddr = tp_field(ctx, setting!(offsets.tp_saddr_v6))?;
            tuple.daddr = tp_field(ctx, setting!(offsets.tp_daddr_v6))?;
        }
        Ok(tuple)
    }

    /// From the sock (`family` already read from it), the members the tracepoint's
    /// record is made from: `inet_sport`, `inet_saddr` and `sock_common`'s others.
    #[inline(always)]
    pub fn from_sock(sk: u64, family: u16) -> Result<Tuple, i64> {
        // SAFETY: kernel reads through the helper, of integers and byte arrays.
        unsafe {
            let dport_be: u16 = kernel::read(sk, setting!(offsets.skc_dport))?;
            let sport_be: u16 = kernel::read(sk, setting!(offsets.inet_sport))?;
            let mut tuple = Tuple {
                family,
                sport: u16::from_be(sport_be),
                dport: u16::from_be(dport_be),
                saddr: [0; 16],
                daddr: [0; 16],
            };
            if family == AF_INET {
                let s: [u8; 4] = kernel::read(sk, setting!(offsets.inet_saddr))?;
                let d: [u8; 4] = kernel::read(sk, setting!(offsets.skc_daddr))?;
                tuple.saddr[..4].copy_from_slice(&s);
                tuple.daddr[..4].copy_from_slice(&d);
            } else {
                tuple.saddr = kernel::read(sk, setting!(offsets.skc_v6_rcv_saddr))?;
                tuple.daddr = kernel::read(sk, setting!(offsets.skc_v6_daddr))?;
            }
            Ok(tuple)
        }
    }

    /// The family on the wire: an IPv6 socket with IPv4-mapped addresses speaks IPv4.
    #[inline(always)]
    pub fn wire_family(&self) -> u16 {
        let a = &self.saddr;
        let mapped = a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff;
        if self.family == AF_INET6 && mapped {
            AF_INET
        } else {
            self.family
        }
    }
}
