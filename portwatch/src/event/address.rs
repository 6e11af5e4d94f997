//! Addresses as users read them. The one place that knows IPv4-mapped IPv6
//! (`::ffff:a.b.c.d`, on dual-stack sockets) is IPv4 on the wire, and how the
//! kernel side lays out an address of either family in 16 bytes.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use portwatch_common::AF_INET;

use super::model::Family;

/// IPv4-mapped IPv6 shown as the IPv4 address it is; anything else unchanged.
pub fn plain(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    }
}

/// An address as the kernel side writes it: IPv4 in the first 4 bytes, or IPv6.
pub fn from_kernel(family: u16, bytes: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        plain(IpAddr::V6(Ipv6Addr::from(*bytes)))
    }
}

/// The family of what crosses the wire for a [`plain`] address.
pub fn family(addr: IpAddr) -> Family {
    match addr {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    }
}

/// An address and prefix length (`--remote 10.0.0.0/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    pub fn parse(text: &str) -> Result<Prefix, String> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or ADDRESS/PREFIX"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0-{max}"))?,
            None => max,
        };
        Ok(Prefix { addr, len })
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        let (a, b, bits) = match (self.addr, plain(addr)) {
            (IpAddr::V4(p), IpAddr::V4(a)) => (u32::from(p) as u128, u32::from(a) as u128, 32),
            (IpAddr::V6(p), IpAddr::V6(a)) => (u128::from(p), u128::from(a), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.len);
        shift >= bits || (a >> shift) == (b >> shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_are_ipv4() {
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(plain(mapped), "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(family(plain(mapped)), Family::Ipv4);
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(plain(v6), v6);
        assert_eq!(family(v6), Family::Ipv6);
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(
            from_kernel(AF_INET, &raw),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }
    #[test]
    fn prefixes() {
        let p = Prefix::parse("10.0.0.0/8").unwrap();
        assert!(p.contains("10.1.2.3".parse().unwrap()));
        assert!(p.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!p.contains("11.0.0.1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        let one = Prefix::parse("10.0.0.7").unwrap();
        assert!(one.contains("10.0.0.7".parse().unwrap()));
        assert!(!one.contains("10.0.0.8".parse().unwrap()));
        assert!(Prefix::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(Prefix::parse("10.0.0.0/33").is_err());
        assert!(Prefix::parse("ten").is_err());
        let v6 = Prefix::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
    }
}
