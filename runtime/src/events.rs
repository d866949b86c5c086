//! Flow event records as the policy programs write them into the `ciliumc_events` per-CPU rings
//! (64 bytes; the layout is documented in `docs/datapath.md`, the rings in [`crate::event_ring`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const EVENT_SIZE: usize = 64;

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowEvent {
    pub timestamp_ns: u64,
    /// 1 drop, 5 policy verdict.
    pub kind: u8,
    /// Cilium drop reason, 0 when forwarded.
    pub reason: u8,
    /// 1 ingress, 2 egress (the endpoint's policy direction).
    pub direction: u8,
    pub dropped: bool,
    pub rule_id: u32,
    pub local_identity: u32,
    pub remote_identity: u32,
    pub endpoint_addr: Option<IpAddr>,
    pub peer_addr: Option<IpAddr>,
    pub endpoint_port: u16,
    pub peer_port: u16,
    pub proto: u8,
    /// 4, 6, or 0 for a packet dropped before its IP header was read.
    pub family: u8,
    /// Destination port, or the ICMP type.
    pub policy_port: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("flow event of {0} bytes, expected at least {EVENT_SIZE}")]
pub struct ShortEvent(pub usize);

fn addr(family: u8, bytes: &[u8]) -> Option<IpAddr> {
    match family {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&bytes[..16]);
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

impl FlowEvent {
    /// Decodes a whole record (the rings hold nothing shorter).
    pub fn from_record(b: &[u8; EVENT_SIZE]) -> FlowEvent {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[0..8]);
        let family = b[61];
        FlowEvent {
            timestamp_ns: u64::from_le_bytes(ts),
            kind: b[8],
            reason: b[9],
            direction: b[10],
            dropped: b[11] != 0,
            rule_id: u32_at(12),
            local_identity: u32_at(16),
            remote_identity: u32_at(20),
            endpoint_addr: addr(family, &b[24..40]),
            peer_addr: addr(family, &b[40..56]),
            endpoint_port: u16_at(56),
            peer_port: u16_at(58),
            proto: b[60],
            family,
            policy_port: u16_at(62),
        }
    }

    /// Decodes the first [`EVENT_SIZE`] bytes of `b`.
    pub fn decode(b: &[u8]) -> Result<FlowEvent, ShortEvent> {
        let record = b
            .get(..EVENT_SIZE)
            .and_then(|r| <&[u8; EVENT_SIZE]>::try_from(r).ok())
            .ok_or(ShortEvent(b.len()))?;
        Ok(FlowEvent::from_record(record))
    }
}
