//! IPv4/IPv6 prefixes and CIDR rules with `except`.
//!
//! In: `10.0.0.0/8`-style strings or an address and a length. Out: [`Cidr`] (network address
//! normalized: host bits cleared, as Go's `net.ParseCIDR` does) with containment tests, and
//! [`CidrRule`] = a prefix minus its excepted prefixes.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not a CIDR (expected ADDRESS/LENGTH, e.g. 10.0.0.0/8)")]
    Syntax(String),
    #[error("{0:?}: invalid IP address")]
    Address(String),
    #[error("{input:?}: prefix length {len} exceeds {max}")]
    PrefixLength { input: String, len: u32, max: u8 },
}

/// An IP prefix; the address has its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
#[schemars(with = "String")]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

/// The address as a 128-bit number (IPv4 in the low 32 bits) and its width in bits.
pub fn ip_bits(ip: &IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(a) => (u32::from(*a) as u128, 32),
        IpAddr::V6(a) => (u128::from(*a), 128),
    }
}

fn mask(width: u8, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        let all = if width == 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        let host = if width - len == 128 {
            u128::MAX
        } else {
            (1u128 << (width - len)) - 1
        };
        all & !host
    }
}

impl Cidr {
    /// Builds a prefix, clearing host bits; `None` when the length is too long for the family.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Self> {
        let (bits, width) = ip_bits(&addr);
        if prefix_len > width {
            return None;
        }
        let net = bits & mask(width, prefix_len);
        let addr = match addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(net as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(net)),
        };
        Some(Cidr { addr, prefix_len })
    }

    /// A single address as a /32 or /128.
    pub fn host(addr: IpAddr) -> Self {
        let len = ip_bits(&addr).1;
        Cidr {
            addr,
            prefix_len: len,
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Address width: 32 or 128.
    pub fn width(&self) -> u8 {
        ip_bits(&self.addr).1
    }

    /// First and last address as numbers (IPv4 in the low 32 bits).
    pub fn range(&self) -> (u128, u128) {
        let (net, width) = ip_bits(&self.addr);
        let host = if self.prefix_len == width {
            0
        } else if width - self.prefix_len == 128 {
            u128::MAX
        } else {
            (1u128 << (width - self.prefix_len)) - 1
        };
        (net, net | host)
    }

    pub fn contains_ip(&self, ip: &IpAddr) -> bool {
        if ip.is_ipv4() != self.is_ipv4() {
            return false;
        }
        let (bits, width) = ip_bits(ip);
        bits & mask(width, self.prefix_len) == ip_bits(&self.addr).0
    }

    /// Whether `other` lies entirely inside this prefix.
    pub fn contains(&self, other: &Cidr) -> bool {
        other.prefix_len >= self.prefix_len && self.contains_ip(&other.addr)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| CidrError::Syntax(s.to_string()))?;
        let addr = IpAddr::from_str(addr).map_err(|_| CidrError::Address(s.to_string()))?;
        let len: u32 = len.parse().map_err(|_| CidrError::Syntax(s.to_string()))?;
        let max = ip_bits(&addr).1;
        if len > max as u32 {
            return Err(CidrError::PrefixLength {
                input: s.to_string(),
                len,
                max,
            });
        }
        Cidr::new(addr, len as u8).ok_or_else(|| CidrError::Syntax(s.to_string()))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A CIDR peer: `cidr` minus every prefix in `except`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct CidrRule {
    pub cidr: Cidr,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<Cidr>,
}

impl CidrRule {
    pub fn new(cidr: Cidr) -> Self {
        CidrRule {
            cidr,
            except: Vec::new(),
        }
    }

    pub fn with_except(cidr: Cidr, except: Vec<Cidr>) -> Self {
        CidrRule { cidr, except }
    }

    pub fn matches_ip(&self, ip: &IpAddr) -> bool {
        self.cidr.contains_ip(ip) && !self.except.iter().any(|e| e.contains_ip(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn host_bits_are_cleared_and_errors_are_reported() {
        assert_eq!(c("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(c("2001:db8::1/32").to_string(), "2001:db8::/32");
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::PrefixLength { .. })
        ));
        assert!(matches!(
            "10.0.0.0".parse::<Cidr>(),
            Err(CidrError::Syntax(_))
        ));
        assert!(matches!(
            "10.0.0.300/8".parse::<Cidr>(),
            Err(CidrError::Address(_))
        ));
    }

    #[test]
    fn containment_at_prefix_edges() {
        let n = c("192.0.2.0/24");
        assert!(n.contains_ip(&ip("192.0.2.0")));
        assert!(n.contains_ip(&ip("192.0.2.255")));
        assert!(!n.contains_ip(&ip("192.0.3.0")));
        assert!(!n.contains_ip(&ip("192.0.1.255")));
        assert!(!n.contains_ip(&ip("2001:db8::1")));
        assert!(c("0.0.0.0/0").contains_ip(&ip("255.255.255.255")));
        assert!(c("::/0").contains_ip(&ip("2001:db8::1")));
        assert!(c("10.0.0.0/8").contains(&c("10.1.0.0/16")));
        assert!(!c("10.1.0.0/16").contains(&c("10.0.0.0/8")));
        assert_eq!(c("0.0.0.0/0").range(), (0, u32::MAX as u128));
        assert_eq!(c("::/0").range(), (0, u128::MAX));
        assert_eq!(c("10.0.0.1/32").range().0, c("10.0.0.1/32").range().1);
    }

    #[test]
    fn except_carves_holes() {
        let r = CidrRule::with_except(c("10.0.0.0/8"), vec![c("10.10.0.0/16")]);
        assert!(r.matches_ip(&ip("10.9.255.255")));
        assert!(!r.matches_ip(&ip("10.10.0.0")));
        assert!(!r.matches_ip(&ip("10.10.255.255")));
        assert!(r.matches_ip(&ip("10.11.0.0")));
        assert!(!r.matches_ip(&ip("11.0.0.0")));
    }
}
