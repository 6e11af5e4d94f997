//! Numbers and addresses appended to an output line without going through
//! `core::fmt`, which dominates the cost of a line in a connection storm.
use std::net::IpAddr;

/// A decimal integer.
pub fn decimal(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// An address as `Display` writes it: dotted quad, or RFC 5952 IPv6.
pub fn ip(out: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                decimal(out, octet);
            }
        }
        // Rare enough, and RFC 5952's rules are worth not repeating.
        IpAddr::V6(v6) => {
            use std::io::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// `n` as 16 lower-case hex digits.
pub fn hex16(out: &mut Vec<u8>, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(DIGITS[((n >> (shift * 4)) & 0xf) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn same_text_as_display() {
        for a in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "10.0.200.9",
            "::1",
            "fe80::1:2",
            "2001:db8::ff00:42:8329",
        ] {
            let addr: IpAddr = a.parse().unwrap();
            assert_eq!(text(|v| ip(v, addr)), addr.to_string());
        }
        for n in [0u64, 1, 0xdead_beef, u64::MAX] {
            assert_eq!(text(|v| hex16(v, n)), format!("{n:016x}"));
        }
        assert_eq!(text(|v| decimal(v, 65535u16)), "65535");
        assert_eq!(text(|v| decimal(v, -3i32)), "-3");
    }
}
