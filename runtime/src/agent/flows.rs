//! Flows: ring-buffer events named with the manifest, kept in a bounded ring, filtered and
//! printed the way hubble does.
//!
//! In: [`FlowEvent`]s and the running generation's manifest. Out: [`Flow`] records (JSON),
//! [`FlowStore`] (last N, counters, rate), [`FlowFilter`] and the table printer. [`ring`] reads
//! the per-CPU event rings and the lost-events counter.

pub mod ring;

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use ciliumc_ir::manifest::{Manifest, ManifestRule};
use serde::{Deserialize, Serialize};

use crate::events::FlowEvent;

/// One side of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowPeer {
    pub ip: Option<String>,
    pub port: u16,
    pub identity: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

impl FlowPeer {
    /// `ns/pod:port`, or `ip:port` for addresses outside the cluster.
    pub fn display(&self, proto: &str) -> String {
        let base = match (&self.namespace, &self.pod) {
            (Some(n), Some(p)) => format!("{n}/{p}"),
            _ => self.ip.clone().unwrap_or_else(|| "?".into()),
        };
        if matches!(proto, "TCP" | "UDP" | "SCTP") {
            format!("{base}:{}", self.port)
        } else {
            base
        }
    }
}

/// A flow as `observe` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// FORWARDED or DROPPED.
    pub verdict: String,
    pub drop_reason: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_reason_desc: Option<String>,
    /// `policy-verdict` or `drop`.
    pub event_type: String,
    /// INGRESS or EGRESS (the endpoint's policy direction).
    pub traffic_direction: String,
    pub protocol: String,
    pub source: FlowPeer,
    pub destination: FlowPeer,
    /// The endpoint whose program decided.
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<ManifestRule>,
    pub rule_id: u32,
    pub summary: String,
}

/// Names for events, built from one manifest.
#[derive(Debug, Clone, Default)]
pub struct Names {
    by_addr: BTreeMap<IpAddr, (String, String)>,
    labels: BTreeMap<u32, Vec<String>>,
    rules: BTreeMap<u32, ManifestRule>,
}

pub fn proto_name(p: u8) -> String {
    match p {
        1 => "ICMPv4".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "ICMPv6".into(),
        132 => "SCTP".into(),
        n => format!("proto-{n}"),
    }
}

pub fn drop_reason_desc(code: u8) -> String {
    match code {
        133 => "POLICY_DENIED".into(),
        181 => "POLICY_DENY".into(),
        134 => "INVALID_PACKET".into(),
        135 => "CT_TRUNCATED_OR_INVALID_HEADER".into(),
        175 => "FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND".into(),
        139 => "UNSUPPORTED_L3_PROTOCOL".into(),
        140 => "MISSED_TAIL_CALL".into(),
        142 => "UNKNOWN_L4_PROTOCOL".into(),
        171 => "INVALID_IDENTITY".into(),
        n => format!("DROP_REASON_{n}"),
    }
}

impl Names {
    pub fn new(m: &Manifest) -> Names {
        let mut by_addr = BTreeMap::new();
        for ep in &m.endpoints {
            for a in ep.ipv4.iter().chain(ep.ipv6.iter()) {
                if let Ok(ip) = a.parse::<IpAddr>() {
                    by_addr.insert(ip, (ep.namespace.clone(), ep.pod.clone()));
                }
            }
        }
        Names {
            by_addr,
            labels: m
                .identities
                .iter()
                .map(|i| (i.id, i.labels.clone()))
                .collect(),
            rules: m.rules.iter().map(|r| (r.id, r.clone())).collect(),
        }
    }

    fn peer(&self, addr: Option<IpAddr>, port: u16, identity: u32) -> FlowPeer {
        let named = addr.and_then(|a| self.by_addr.get(&a));
        FlowPeer {
            ip: addr.map(|a| a.to_string()),
            port,
            identity,
            namespace: named.map(|n| n.0.clone()),
            pod: named.map(|n| n.1.clone()),
            labels: self.labels.get(&identity).cloned().unwrap_or_default(),
        }
    }

    /// Names `ev`; `time_ns` is its wall-clock time.
    pub fn enrich(&self, ev: &FlowEvent, time_ns: u64) -> Flow {
        let local = self.peer(ev.endpoint_addr, ev.endpoint_port, ev.local_identity);
        let remote = self.peer(ev.peer_addr, ev.peer_port, ev.remote_identity);
        let ingress = ev.direction == 1;
        let endpoint = local
            .namespace
            .as_ref()
            .zip(local.pod.as_ref())
            .map(|(n, p)| format!("{n}/{p}"));
        let (source, destination) = if ingress {
            (remote, local)
        } else {
            (local, remote)
        };
        let protocol = proto_name(ev.proto);
        let rule = self.rules.get(&ev.rule_id).cloned();
        let verdict = if ev.dropped { "DROPPED" } else { "FORWARDED" };
        let mut summary = format!(
            "{protocol} {} -> {}",
            source.display(&protocol),
            destination.display(&protocol)
        );
        match &rule {
            Some(r) => {
                let ns = r
                    .namespace
                    .as_deref()
                    .map(|n| format!("{n}/"))
                    .unwrap_or_default();
                summary.push_str(&format!(
                    " by {} {ns}{} {}[{}]",
                    r.policy_kind, r.name, r.section, r.rule_index
                ));
                if let Some(src) = &r.source {
                    summary.push_str(&format!(" ({src})"));
                }
            }
            None if ev.dropped => summary.push_str(" (default deny)"),
            None => {}
        }
        Flow {
            time_ns,
            verdict: verdict.into(),
            drop_reason: ev.reason,
            drop_reason_desc: ev.dropped.then(|| drop_reason_desc(ev.reason)),
            event_type: if ev.kind == 1 {
                "drop".into()
            } else {
                "policy-verdict".into()
            },
            traffic_direction: if ingress {
                "INGRESS".into()
            } else {
                "EGRESS".into()
            },
            protocol,
            source,
            destination,
            endpoint,
            rule,
            rule_id: ev.rule_id,
            summary,
        }
    }
}

/// One event as stored: decoded but not yet named (naming costs allocations, and most stored
/// events are never asked for), with the names of the generation it was seen under.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub event: FlowEvent,
    pub time_ns: u64,
    pub names: Arc<Names>,
}

impl StoredEvent {
    pub fn flow(&self) -> Flow {
        self.names.enrich(&self.event, self.time_ns)
    }
}

/// The last N flows and counters.
#[derive(Debug, Clone)]
pub struct FlowStore {
    ring: VecDeque<StoredEvent>,
    capacity: usize,
    pub seen: u64,
    /// Arrivals per second of the last minute, for the rate: (second, count).
    recent: VecDeque<(u64, u64)>,
}

impl FlowStore {
    pub fn new(capacity: usize) -> FlowStore {
        FlowStore {
            ring: VecDeque::with_capacity(capacity.min(65536)),
            capacity,
            seen: 0,
            recent: VecDeque::new(),
        }
    }

    pub fn push(&mut self, e: StoredEvent, now_s: f64) {
        self.seen += 1;
        let sec = now_s as u64;
        match self.recent.back_mut() {
            Some((s, n)) if *s == sec => *n += 1,
            _ => self.recent.push_back((sec, 1)),
        }
        while self
            .recent
            .front()
            .is_some_and(|(s, _)| sec.saturating_sub(*s) >= 60)
        {
            self.recent.pop_front();
        }
        if self.capacity == 0 {
            return;
        }
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.ring.push_back(e);
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Flows per second over the last minute (or since the first flow, if sooner).
    pub fn rate(&self, now_s: f64) -> f64 {
        let sec = now_s as u64;
        let recent: Vec<&(u64, u64)> = self
            .recent
            .iter()
            .filter(|(s, _)| sec.saturating_sub(*s) < 60)
            .collect();
        let n: u64 = recent.iter().map(|(_, n)| n).sum();
        match recent.first() {
            Some((first, _)) => n as f64 / (now_s - *first as f64).clamp(1.0, 60.0),
            None => 0.0,
        }
    }

    /// The last `n` flows matching `filter`, oldest first.
    pub fn last(&self, n: usize, filter: &FlowFilter) -> Vec<Flow> {
        let mut out: Vec<Flow> = self
            .ring
            .iter()
            .rev()
            .map(StoredEvent::flow)
            .filter(|f| filter.matches(f))
            .take(n)
            .collect();
        out.reverse();
        out
    }
}

/// Filters of `observe`; all given ones must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowFilter {
    pub namespace: Option<String>,
    /// `pod` or `ns/pod`, either side.
    pub pod: Option<String>,
    /// `ns/pod`, `pod` or an IP address.
    pub from: Option<String>,
    pub to: Option<String>,
    /// FORWARDED/ALLOWED or DROPPED/DENIED.
    pub verdict: Option<String>,
    pub port: Option<u16>,
    pub protocol: Option<String>,
}

fn peer_is(p: &FlowPeer, want: &str) -> bool {
    if p.ip.as_deref() == Some(want) {
        return true;
    }
    match (&p.namespace, &p.pod) {
        (Some(n), Some(pod)) => match want.split_once('/') {
            Some((wn, wp)) => wn == n && wp == pod,
            None => want == pod,
        },
        _ => false,
    }
}

impl FlowFilter {
    pub fn matches(&self, f: &Flow) -> bool {
        if let Some(ns) = &self.namespace
            && f.source.namespace.as_ref() != Some(ns)
            && f.destination.namespace.as_ref() != Some(ns)
        {
            return false;
        }
        if let Some(p) = &self.pod
            && !peer_is(&f.source, p)
            && !peer_is(&f.destination, p)
        {
            return false;
        }
        if self.from.as_ref().is_some_and(|w| !peer_is(&f.source, w)) {
            return false;
        }
        if self
            .to
            .as_ref()
            .is_some_and(|w| !peer_is(&f.destination, w))
        {
            return false;
        }
        if let Some(v) = &self.verdict {
            let want = match v.to_ascii_uppercase().as_str() {
                "ALLOWED" | "FORWARDED" => "FORWARDED",
                "DENIED" | "DROPPED" => "DROPPED",
                _ => return false,
            };
            if f.verdict != want {
                return false;
            }
        }
        if let Some(port) = self.port
            && f.source.port != port
            && f.destination.port != port
        {
            return false;
        }
        if let Some(p) = &self.protocol
            && !f.protocol.eq_ignore_ascii_case(p)
        {
            return false;
        }
        true
    }
}

/// `TIMESTAMP` as hubble prints it (UTC, `Jan  2 15:04:05.000`).
pub fn format_time(ns: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = ns / 1_000_000_000;
    let ms = (ns / 1_000_000) % 1000;
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    format!(
        "{} {:>2} {:02}:{:02}:{:02}.{:03}",
        MONTHS[(month - 1) as usize],
        day,
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms
    )
}

/// The hubble-like table: `TIMESTAMP SOURCE DESTINATION TYPE VERDICT SUMMARY`.
pub fn table(flows: &[Flow]) -> String {
    let rows: Vec<[String; 6]> = flows
        .iter()
        .map(|f| {
            let ty = if f.event_type == "drop" {
                f.drop_reason_desc.clone().unwrap_or_else(|| "drop".into())
            } else {
                format!("policy-verdict:{}", f.traffic_direction)
            };
            let verdict = if f.verdict == "DROPPED" {
                "DENIED"
            } else {
                "ALLOWED"
            };
            [
                format_time(f.time_ns),
                f.source.display(&f.protocol),
                f.destination.display(&f.protocol),
                ty,
                verdict.to_string(),
                f.summary.clone(),
            ]
        })
        .collect();
    let header = [
        "TIMESTAMP",
        "SOURCE",
        "DESTINATION",
        "TYPE",
        "VERDICT",
        "SUMMARY",
    ]
    .map(String::from);
    let mut widths = [0usize; 6];
    for r in std::iter::once(&header).chain(rows.iter()) {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(rows.iter()) {
        let cells: Vec<String> = r[..5]
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(&format!("{}   {}\n", cells.join("   "), r[5]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_epoch_times_like_hubble() {
        assert_eq!(format_time(0), "Jan  1 00:00:00.000");
        // 2024-02-29T12:34:56.789Z
        assert_eq!(
            format_time(1_709_210_096_789_000_000),
            "Feb 29 12:34:56.789"
        );
    }

    fn flow(verdict: &str, src_pod: &str, dst_port: u16) -> Flow {
        let peer = |pod: &str, port| FlowPeer {
            ip: Some("192.0.2.1".into()),
            port,
            identity: 256,
            namespace: Some("default".into()),
            pod: Some(pod.into()),
            labels: vec![],
        };
        Flow {
            time_ns: 0,
            verdict: verdict.into(),
            drop_reason: 0,
            drop_reason_desc: None,
            event_type: "policy-verdict".into(),
            traffic_direction: "INGRESS".into(),
            protocol: "TCP".into(),
            source: peer(src_pod, 40000),
            destination: peer("deathstar-0", dst_port),
            endpoint: None,
            rule: None,
            rule_id: 0,
            summary: String::new(),
        }
    }

    #[test]
    fn filters_combine_with_and() {
        let f = flow("DROPPED", "xwing", 80);
        let mut filt = FlowFilter {
            verdict: Some("denied".into()),
            ..Default::default()
        };
        assert!(filt.matches(&f));
        filt.from = Some("default/xwing".into());
        assert!(filt.matches(&f));
        filt.port = Some(81);
        assert!(!filt.matches(&f));
        let g = FlowFilter {
            to: Some("xwing".into()),
            ..Default::default()
        };
        assert!(!g.matches(&f));
    }

    #[test]
    fn store_keeps_the_last_n() {
        let mut s = FlowStore::new(3);
        let names = Arc::new(Names::default());
        for p in 0..5u16 {
            let event = FlowEvent {
                timestamp_ns: 0,
                kind: 5,
                reason: 0,
                direction: 1,
                dropped: false,
                rule_id: 0,
                local_identity: 256,
                remote_identity: 257,
                endpoint_addr: Some("192.0.2.10".parse().unwrap()),
                peer_addr: Some("192.0.2.20".parse().unwrap()),
                endpoint_port: p,
                peer_port: 40000,
                proto: 6,
                family: 4,
                policy_port: p,
            };
            s.push(
                StoredEvent {
                    event,
                    time_ns: 0,
                    names: names.clone(),
                },
                p as f64,
            );
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.seen, 5);
        let ports: Vec<u16> = s
            .last(10, &FlowFilter::default())
            .iter()
            .map(|f| f.destination.port)
            .collect();
        assert_eq!(ports, vec![2, 3, 4]);
        assert_eq!(s.last(1, &FlowFilter::default())[0].destination.port, 4);
        assert!(s.rate(4.0) > 0.9);
    }
}
