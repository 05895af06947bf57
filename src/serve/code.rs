//! The one-time pairing code: what a relative reads out or pastes to the sender.
//!
//! It carries everything the sender needs and nothing a thief could use later: the
//! receiver's address, the first 10 bytes (80 bits) of its certificate's SHA-256 (the
//! sender refuses any other certificate before it sends the token) and a random 64-bit
//! token that the receiver accepts once, within 15 minutes. Encoded in lower-case base32
//! (no letters that look alike in a chat message), in groups of five.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Bytes of the certificate fingerprint the code carries.
pub const PIN_PREFIX: usize = 10;
/// Bytes of the one-time token.
pub const TOKEN: usize = 8;
const VERSION: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairCode {
    pub host: Host,
    pub port: u16,
    pub pin_prefix: [u8; PIN_PREFIX],
    pub token: [u8; TOKEN],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(a) => write!(f, "{a}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

impl Host {
    pub fn parse(s: &str) -> Result<Host, String> {
        let bare = s.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        if s.is_empty()
            || s.len() > 200
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(format!("{s:?} is not a host name or IP address"));
        }
        Ok(Host::Name(s.to_ascii_lowercase()))
    }
}

impl PairCode {
    /// The receiver's base URL.
    pub fn endpoint(&self) -> String {
        format!("https://{}:{}", self.host, self.port)
    }

    pub fn encode(&self) -> String {
        let mut b = vec![VERSION];
        b.extend_from_slice(&self.pin_prefix);
        b.extend_from_slice(&self.token);
        b.extend_from_slice(&self.port.to_be_bytes());
        match &self.host {
            Host::Ip(IpAddr::V4(a)) => {
                b.push(4);
                b.extend_from_slice(&a.octets());
            }
            Host::Ip(IpAddr::V6(a)) => {
                b.push(6);
                b.extend_from_slice(&a.octets());
            }
            Host::Name(n) => {
                b.push(b'n');
                b.extend_from_slice(n.as_bytes());
            }
        }
        let text = base32(&b);
        text.as_bytes()
            .chunks(5)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("-")
    }

    pub fn decode(code: &str) -> Result<PairCode, String> {
        const BAD: &str = "is not a pairing code: copy it again from the receiver (`lomob serve pair` prints it), all of it";
        let bytes = unbase32(code).ok_or_else(|| format!("{code:?} {BAD}"))?;
        let fixed = 1 + PIN_PREFIX + TOKEN + 2 + 1;
        if bytes.len() < fixed || bytes[0] != VERSION {
            return Err(format!("{code:?} {BAD}"));
        }
        let mut pin_prefix = [0u8; PIN_PREFIX];
        pin_prefix.copy_from_slice(&bytes[1..1 + PIN_PREFIX]);
        let mut token = [0u8; TOKEN];
        token.copy_from_slice(&bytes[1 + PIN_PREFIX..1 + PIN_PREFIX + TOKEN]);
        let at = 1 + PIN_PREFIX + TOKEN;
        let port = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
        let rest = &bytes[fixed..];
        let host = match (bytes[fixed - 1], rest.len()) {
            (4, 4) => Host::Ip(IpAddr::V4(Ipv4Addr::new(
                rest[0], rest[1], rest[2], rest[3],
            ))),
            (6, 16) => {
                let mut o = [0u8; 16];
                o.copy_from_slice(rest);
                Host::Ip(IpAddr::V6(Ipv6Addr::from(o)))
            }
            (b'n', 1..) => {
                Host::parse(std::str::from_utf8(rest).map_err(|_| format!("{code:?} {BAD}"))?)
                    .map_err(|_| format!("{code:?} {BAD}"))?
            }
            _ => return Err(format!("{code:?} {BAD}")),
        };
        if port == 0 {
            return Err(format!("{code:?} {BAD}"));
        }
        Ok(PairCode {
            host,
            port,
            pin_prefix,
            token,
        })
    }
}

const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

fn base32(data: &[u8]) -> String {
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Reads base32 back, ignoring dashes and spaces and case; `l` and `o` are read as the `i`
/// and `0`... that the alphabet leaves out would be: they are refused instead.
fn unbase32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.chars().filter(|c| !matches!(c, '-' | ' ')) {
        let c = c.to_ascii_lowercase() as u8;
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(host: Host) -> PairCode {
        PairCode {
            host,
            port: 8443,
            pin_prefix: [7; PIN_PREFIX],
            token: [9, 8, 7, 6, 5, 4, 3, 2],
        }
    }

    #[test]
    fn codes_read_back_for_every_kind_of_address() {
        for host in [
            Host::Ip("192.168.1.20".parse().unwrap()),
            Host::Ip("fe80::1".parse().unwrap()),
            Host::Name("parents.example.org".into()),
        ] {
            let c = code(host);
            let text = c.encode();
            assert_eq!(PairCode::decode(&text).unwrap(), c, "{text}");
            assert_eq!(
                PairCode::decode(&text.to_uppercase().replace('-', " ")).unwrap(),
                c
            );
        }
        // An IPv4 code stays short enough to read out.
        assert!(
            code(Host::Ip("192.168.1.20".parse().unwrap()))
                .encode()
                .len()
                <= 52
        );
    }

    #[test]
    fn damaged_codes_are_refused() {
        let text = code(Host::Ip("10.0.0.1".parse().unwrap())).encode();
        assert!(PairCode::decode(&text[..text.len() - 6]).is_err());
        assert!(PairCode::decode("hello").is_err());
        assert!(PairCode::decode(&text.replace('a', "l")).is_err() || !text.contains('a'));
    }
}
