//! The filters the kernel side applies before an event is reserved: filtered-out
//! traffic never crosses the ring buffer.
use portwatch_common::{Config, AF_INET, AF_INET6, FILTER_MAX};

/// Kernel-side filters; an empty list lets everything through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelFilter {
    pub pids: Vec<u32>,
    pub uids: Vec<u32>,
    /// Either end of a connection.
    pub ports: Vec<u16>,
    /// Only this address family as it crosses the wire (IPv4-mapped is IPv4).
    pub family: Option<KernelFamily>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFamily {
    Ipv4,
    Ipv6,
}

fn fill<T: Copy + Into<u32>>(values: &[T], slots: &mut [u32; FILTER_MAX], count: &mut u32) {
    for (slot, v) in slots.iter_mut().zip(values) {
        *slot = (*v).into();
    }
    *count = values.len().min(FILTER_MAX) as u32;
}

impl KernelFilter {
    /// Write the filter into the load-time configuration.
    pub fn write_to(&self, c: &mut Config) {
        fill(&self.pids, &mut c.filter_pids, &mut c.filter_pid_count);
        fill(&self.uids, &mut c.filter_uids, &mut c.filter_uid_count);
        fill(&self.ports, &mut c.filter_ports, &mut c.filter_port_count);
        c.filter_family = match self.family {
            None => 0,
            Some(KernelFamily::Ipv4) => AF_INET as u32,
            Some(KernelFamily::Ipv6) => AF_INET6 as u32,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_to_the_config() {
        let f = KernelFilter {
            pids: vec![7, 8],
            uids: vec![1000],
            ports: vec![80, 443, 8080],
            family: Some(KernelFamily::Ipv6),
        };
        let mut c = Config::default();
        f.write_to(&mut c);
        assert_eq!(
            (c.filter_pid_count, c.filter_pids[0], c.filter_pids[1]),
            (2, 7, 8)
        );
        assert_eq!((c.filter_uid_count, c.filter_uids[0]), (1, 1000));
        assert_eq!(c.filter_port_count, 3);
        assert_eq!(&c.filter_ports[..3], &[80, 443, 8080]);
        assert_eq!(c.filter_family, AF_INET6 as u32);
        let mut none = Config::default();
        KernelFilter::default().write_to(&mut none);
        assert_eq!(none, Config::default());
    }
}
