//! Numbers and addresses written into text without `core::fmt`: a proxy
//! writes its address, ports and received parameters into every message,
//! and the formatting machinery costs ~1,300 instructions for an IPv4
//! address where these loops take a few dozen. The output is exactly what
//! `Display` writes. Bytes in hex likewise: the `hex` crate's `encode`
//! collects one `char` at a time, ~680 instructions for 8 bytes, and wisp
//! writes hex tags into every reply it makes and every stateless branch.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// `n` in decimal, written at the end of `buf` (no allocation).
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).unwrap_or("0")
}

/// "00" to "99" side by side: the text of a number below 100 is a slice of
/// it, a `&'static str` that a header line keeps without an allocation.
static TWO_DIGITS: [u8; 200] = {
    let mut digits = [0u8; 200];
    let mut n = 0;
    while n < 100 {
        digits[2 * n] = b'0' + (n / 10) as u8;
        digits[2 * n + 1] = b'0' + (n % 10) as u8;
        n += 1;
    }
    digits
};

/// `n` in decimal as static text, for `n` below 100 (a Max-Forwards); none
/// for larger numbers.
pub fn small_decimal(n: u32) -> Option<&'static str> {
    let at = usize::try_from(n).ok().filter(|&n| n < 100)? * 2;
    let digits = if n < 10 {
        &TWO_DIGITS[at + 1..at + 2]
    } else {
        &TWO_DIGITS[at..at + 2]
    };
    std::str::from_utf8(digits).ok()
}

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut String, n: u64) {
    out.push_str(decimal(n, &mut [0u8; 20]));
}

/// `bytes` in lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

/// Appends an IPv4 address as dotted decimal.
pub fn push_ipv4(out: &mut String, ip: Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
}

/// Appends an IP address as `Display` writes it (IPv6 without brackets;
/// IPv6 is rare enough to go through `fmt`, whose compression rules
/// are worth not repeating).
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => push_ipv4(out, v4),
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends an IP address as a SIP host: IPv6 in brackets (RFC 3261 §25.1,
/// RFC 5118 §4.5 for the received parameter).
pub fn push_ip_host(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => push_ipv4(out, v4),
        IpAddr::V6(v6) => {
            let _ = write!(out, "[{v6}]");
        }
    }
}

/// Appends a socket address as `Display` writes it: `ip:port`, `[ip]:port`
/// for IPv6 (scope ids included, through `fmt`).
pub fn push_socket_addr(out: &mut String, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            push_ipv4(out, *v4.ip());
            out.push(':');
            push_decimal(out, u64::from(v4.port()));
        }
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(f: impl FnOnce(&mut String)) -> String {
        let mut out = String::from(">");
        f(&mut out);
        out
    }

    #[test]
    fn numbers_as_display_writes_them() {
        for n in [
            0u64,
            7,
            10,
            99,
            255,
            5060,
            65535,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            assert_eq!(written(|o| push_decimal(o, n)), format!(">{n}"));
        }
    }

    #[test]
    fn small_numbers_as_static_text() {
        for n in 0..100u32 {
            assert_eq!(small_decimal(n), Some(n.to_string().as_str()));
        }
        for n in [100, 101, 999, u32::MAX] {
            assert_eq!(small_decimal(n), None);
        }
    }

    #[test]
    fn hex_as_the_hex_crate_writes_it() {
        let all: Vec<u8> = (0..=255).collect();
        for bytes in [
            &[][..],
            &[0],
            &[0x0f, 0xf0],
            &[0xde, 0xad, 0xbe, 0xef],
            &all,
        ] {
            assert_eq!(hex(bytes), ::hex::encode(bytes));
        }
    }

    #[test]
    fn addresses_as_display_writes_them() {
        let ips: [IpAddr; 7] = [
            "0.0.0.0".parse().unwrap(),
            "9.10.99.100".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
            "10.200.3.45".parse().unwrap(),
            "255.255.255.255".parse().unwrap(),
            "::1".parse().unwrap(),
            "2001:db8::5:0:1".parse().unwrap(),
        ];
        for ip in ips {
            assert_eq!(written(|o| push_ip(o, ip)), format!(">{ip}"));
            let host = match ip {
                IpAddr::V4(_) => format!(">{ip}"),
                IpAddr::V6(_) => format!(">[{ip}]"),
            };
            assert_eq!(written(|o| push_ip_host(o, ip)), host);
            for port in [0u16, 5060, 65535] {
                let addr = SocketAddr::new(ip, port);
                assert_eq!(written(|o| push_socket_addr(o, addr)), format!(">{addr}"));
            }
        }
        let scoped: SocketAddr = "[fe80::1%2]:5060".parse().unwrap();
        assert_eq!(
            written(|o| push_socket_addr(o, scoped)),
            format!(">{scoped}")
        );
    }
}
