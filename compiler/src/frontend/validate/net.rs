//! CIDR and IP address checks.
//!
//! In: CIDR strings from Cilium rules and NetworkPolicy `ipBlock`s. Out: parsed [`Cidr`]s or a reason;
//! diagnostics for malformed prefixes and `except` entries outside their CIDR.
use std::net::IpAddr;

use super::report::Reporter;
use crate::frontend::diagnostic::codes;
use crate::frontend::path::FieldPath;

/// A parsed prefix. Host bits are kept as written (Cilium and Kubernetes accept them and mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    fn max_len(addr: IpAddr) -> u8 {
        if addr.is_ipv4() { 32 } else { 128 }
    }

    /// True when `addr` is inside this prefix (false across address families).
    pub fn contains_addr(&self, addr: IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = if self.prefix_len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix_len))
                };
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = if self.prefix_len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix_len))
                };
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// Parses `addr/len`. With `allow_bare_ip`, a plain address means a host prefix (Cilium's `fromCIDR`).
pub fn parse_cidr(text: &str, allow_bare_ip: bool) -> Result<Cidr, String> {
    let text = text.trim();
    let Some((addr, len)) = text.split_once('/') else {
        return match text.parse::<IpAddr>() {
            Ok(addr) if allow_bare_ip => Ok(Cidr {
                addr,
                prefix_len: Cidr::max_len(addr),
            }),
            Ok(_) => Err("missing prefix length (`/N`)".to_string()),
            Err(_) => Err("not an IP address or CIDR".to_string()),
        };
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not an IPv4 or IPv6 address"))?;
    if len.is_empty()
        || !len.bytes().all(|b| b.is_ascii_digit())
        || (len.len() > 1 && len.starts_with('0'))
    {
        return Err(format!("`{len}` is not a prefix length"));
    }
    let max = Cidr::max_len(addr);
    match len.parse::<u16>() {
        Ok(n) if n <= u16::from(max) => Ok(Cidr {
            addr,
            prefix_len: n as u8,
        }),
        _ => Err(format!("prefix length {len} is larger than {max}")),
    }
}

/// Checks one CIDR field; returns the parsed value when valid.
pub(super) fn check_cidr(
    r: &mut Reporter<'_>,
    path: &FieldPath,
    text: &str,
    allow_bare_ip: bool,
) -> Option<Cidr> {
    match parse_cidr(text, allow_bare_ip) {
        Ok(c) => Some(c),
        Err(reason) => {
            let d = r
                .error(
                    codes::BAD_CIDR,
                    path,
                    format!("invalid CIDR `{text}`: {reason}"),
                )
                .with_found(format!("`{text}`"))
                .with_expected(if allow_bare_ip {
                    "an IP address or CIDR such as `10.0.0.0/8` or `2001:db8::/32`"
                } else {
                    "a CIDR such as `10.0.0.0/8` or `2001:db8::/32`"
                });
            r.push(d);
            None
        }
    }
}

/// How strictly an `except` entry must lie inside its CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ExceptRule {
    /// Cilium (`CIDRRule.Validate`): the except address is inside the CIDR (same family).
    AddressInside,
    /// Kubernetes `ipBlock`: a strict subset (inside and a longer prefix).
    StrictSubset,
}

/// Checks a CIDR with its `except` list: each must parse and lie inside the CIDR.
pub(super) fn check_except(
    r: &mut Reporter<'_>,
    cidr: Option<Cidr>,
    cidr_text: &str,
    path: &FieldPath,
    except: &[String],
    rule: ExceptRule,
) {
    for (i, e) in except.iter().enumerate() {
        let p = path.index(i);
        let Some(ex) = check_cidr(r, &p, e, false) else {
            continue;
        };
        if let Some(c) = cidr
            && (!c.contains_addr(ex.addr)
                || (rule == ExceptRule::StrictSubset && ex.prefix_len <= c.prefix_len))
        {
            let d = r
                .error(
                    codes::EXCEPT_OUTSIDE_CIDR,
                    &p,
                    match rule {
                        ExceptRule::AddressInside => {
                            format!("`except` entry `{e}` is not inside CIDR `{cidr_text}`")
                        }
                        ExceptRule::StrictSubset => format!(
                            "`except` entry `{e}` is not a strict subset of CIDR `{cidr_text}`"
                        ),
                    },
                )
                .with_found(format!("`{e}`"))
                .with_expected(match rule {
                    ExceptRule::AddressInside => format!("a prefix inside `{cidr_text}`"),
                    ExceptRule::StrictSubset => {
                        format!("a strict subset of `{cidr_text}` (a longer prefix inside it)")
                    }
                });
            r.push(d);
        }
    }
}

/// Checks a single IP address field.
pub(super) fn check_ip(r: &mut Reporter<'_>, path: &FieldPath, text: &str) {
    if text.trim().parse::<IpAddr>().is_err() {
        let d = r
            .error(codes::BAD_IP, path, format!("invalid IP address `{text}`"))
            .with_found(format!("`{text}`"))
            .with_expected("an IPv4 or IPv6 address");
        r.push(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing() {
        assert_eq!(parse_cidr("10.0.0.0/8", false).unwrap().prefix_len, 8);
        assert!(
            parse_cidr("10.0.0.0/33", false)
                .unwrap_err()
                .contains("larger than 32")
        );
        assert!(parse_cidr("2001:db8::/129", false).is_err());
        assert!(parse_cidr("10.0.0.1", false).is_err());
        assert_eq!(parse_cidr("10.0.0.1", true).unwrap().prefix_len, 32);
        assert!(parse_cidr("10.0.0/8", false).is_err());
        assert!(parse_cidr("10.0.0.0/", false).is_err());
        assert!(parse_cidr("10.0.0.0/-1", false).is_err());
        let c = parse_cidr("10.0.0.0/8", false).unwrap();
        assert!(c.contains_addr("10.255.0.1".parse().unwrap()));
        assert!(!c.contains_addr("11.0.0.0".parse().unwrap()));
        assert!(!c.contains_addr("::1".parse().unwrap()));
        assert!(
            parse_cidr("0.0.0.0/0", false)
                .unwrap()
                .contains_addr("1.2.3.4".parse().unwrap())
        );
    }
}
