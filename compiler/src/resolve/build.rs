//! Identities and the per-endpoint policy IR.
//!
//! In: the inventory (endpoints with labels) and the translated subject rules. Out: the identity
//! table (reserved ids, one cluster identity per distinct label set, one CIDR identity per prefix
//! that any rule mentions) and, per endpoint, an [`EndpointPolicy`]: enforcement per direction from
//! the selecting rules, allow/deny rules with peer identity sets and resolved ports.
//!
//! Named ports: ingress names resolve on the local endpoint (undefined → the rule matches nothing);
//! egress names resolve per destination identity (the union over that identity's endpoints), so a
//! rule with named egress ports becomes one IR rule per destination identity.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ciliumc_ir::identity::{RESERVED_IDENTITIES, reserved_labels};
use ciliumc_ir::labels::{LABEL_CLUSTER, LABEL_POD_NAMESPACE, SOURCE_CIDR, SOURCE_K8S};
use ciliumc_ir::stable_id::allocate_stable_ids;
use ciliumc_ir::{
    Cidr, Direction, DirectionPolicy, Endpoint, EndpointKind, EndpointPolicy, IdentityInfo,
    IdentityKind, L4Match, Label, LabelSelector, LabelSet, NumericIdentity, PeerSet, Protocol,
    Rule, RuleId,
};

use super::policies::{PeerSpec, PortSpec, SubjectRule};
use super::{ResolveError, ResolveOptions};

/// `cidr:` label value for a prefix (IPv6 `:` written as `-`, as Cilium does).
pub fn cidr_label(c: &Cidr) -> Label {
    Label::new(SOURCE_CIDR, &c.to_string().replace(':', "-"), "")
}

/// Allocates identities and sets `identity` on every endpoint that carries a pod identity.
pub fn allocate_identities(
    endpoints: &mut [Endpoint],
    cidrs: &BTreeSet<Cidr>,
    opts: &ResolveOptions,
) -> Result<(Vec<IdentityInfo>, BTreeMap<Cidr, NumericIdentity>), ResolveError> {
    let mut table = Vec::new();
    for (id, _) in RESERVED_IDENTITIES {
        if let Some(labels) = reserved_labels(*id) {
            table.push(IdentityInfo {
                id: *id,
                labels,
                kind: IdentityKind::Reserved,
            });
        }
    }
    let mut by_key: BTreeMap<String, LabelSet> = BTreeMap::new();
    for ep in endpoints
        .iter()
        .filter(|e| e.kind != EndpointKind::HostNetwork)
    {
        by_key.insert(ep.labels.to_string(), ep.labels.clone());
    }
    let keys: BTreeSet<String> = by_key.keys().cloned().collect();
    let ids = allocate_stable_ids(
        &keys,
        NumericIdentity::MIN_CLUSTER,
        NumericIdentity::MAX_CLUSTER,
        &opts.previous_identities,
    )?;
    for ep in endpoints
        .iter_mut()
        .filter(|e| e.kind != EndpointKind::HostNetwork)
    {
        if let Some(id) = ids.get(&ep.labels.to_string()) {
            ep.identity = NumericIdentity(*id);
        }
    }
    for (key, labels) in by_key {
        if let Some(id) = ids.get(&key) {
            table.push(IdentityInfo {
                id: NumericIdentity(*id),
                labels,
                kind: IdentityKind::Cluster,
            });
        }
    }
    // /0 prefixes are the world identities themselves.
    let cidr_keys: BTreeSet<String> = cidrs
        .iter()
        .filter(|c| c.prefix_len() > 0)
        .map(|c| c.to_string())
        .collect();
    let cidr_ids = allocate_stable_ids(
        &cidr_keys,
        NumericIdentity::MIN_CIDR,
        NumericIdentity::MAX_CIDR,
        &BTreeMap::new(),
    )?;
    let mut cidr_map = BTreeMap::new();
    for c in cidrs {
        let id = if c.prefix_len() == 0 {
            if c.is_ipv4() {
                NumericIdentity::WORLD_IPV4
            } else {
                NumericIdentity::WORLD_IPV6
            }
        } else {
            match cidr_ids.get(&c.to_string()) {
                Some(id) => NumericIdentity(*id),
                None => continue,
            }
        };
        cidr_map.insert(*c, id);
        if c.prefix_len() > 0 {
            let mut labels = LabelSet::new();
            labels.insert(cidr_label(c));
            labels.insert(Label::reserved(if c.is_ipv4() {
                "world-ipv4"
            } else {
                "world-ipv6"
            }));
            table.push(IdentityInfo {
                id,
                labels,
                kind: IdentityKind::Cidr { cidr: *c },
            });
        }
    }
    table.sort_by_key(|i| i.id);
    Ok((table, cidr_map))
}

/// Resolves peer specs and named ports against the identity table.
pub struct PolicyBuilder<'a> {
    /// Identities a selector may match: reserved and cluster (CIDR identities are matched by address).
    selectable: Vec<&'a IdentityInfo>,
    /// The same, by `k8s:io.kubernetes.pod.namespace` (most selectors name one namespace).
    selectable_by_ns: HashMap<String, Vec<&'a IdentityInfo>>,
    cache: HashMap<LabelSelector, BTreeSet<NumericIdentity>>,
    /// Named ports per identity: the union over that identity's endpoints.
    named_ports: BTreeMap<NumericIdentity, BTreeSet<(String, Protocol, u16)>>,
    all_cluster_ids: BTreeSet<NumericIdentity>,
}

impl<'a> PolicyBuilder<'a> {
    pub fn new(identities: &'a [IdentityInfo], endpoints: &[Endpoint], cluster_name: &str) -> Self {
        let selectable: Vec<&IdentityInfo> = identities
            .iter()
            .filter(|i| !matches!(i.kind, IdentityKind::Cidr { .. }))
            .collect();
        let mut selectable_by_ns: HashMap<String, Vec<&IdentityInfo>> = HashMap::new();
        for i in &selectable {
            if let Some(ns) = i.labels.get(SOURCE_K8S, LABEL_POD_NAMESPACE) {
                selectable_by_ns.entry(ns.to_string()).or_default().push(i);
            }
        }
        let mut named_ports: BTreeMap<NumericIdentity, BTreeSet<(String, Protocol, u16)>> =
            BTreeMap::new();
        for ep in endpoints
            .iter()
            .filter(|e| e.kind != EndpointKind::HostNetwork)
        {
            let entry = named_ports.entry(ep.identity).or_default();
            entry.extend(
                ep.named_ports
                    .iter()
                    .map(|p| (p.name.clone(), p.protocol, p.port)),
            );
        }
        let all_cluster_ids = identities
            .iter()
            .filter(|i| {
                i.kind == IdentityKind::Cluster
                    && i.labels.get(SOURCE_K8S, LABEL_CLUSTER) == Some(cluster_name)
            })
            .map(|i| i.id)
            .collect();
        PolicyBuilder {
            selectable,
            selectable_by_ns,
            cache: HashMap::new(),
            named_ports,
            all_cluster_ids,
        }
    }

    fn select(&mut self, sel: &LabelSelector) -> BTreeSet<NumericIdentity> {
        if let Some(hit) = self.cache.get(sel) {
            return hit.clone();
        }
        let candidates: &[&IdentityInfo] = match sel.required_namespace() {
            Some(ns) => self
                .selectable_by_ns
                .get(ns)
                .map(Vec::as_slice)
                .unwrap_or(&[]),
            None => &self.selectable,
        };
        let ids: BTreeSet<NumericIdentity> = candidates
            .iter()
            .filter(|i| sel.matches(&i.labels))
            .map(|i| i.id)
            .collect();
        self.cache.insert(sel.clone(), ids.clone());
        ids
    }

    fn peers(&mut self, spec: &PeerSpec) -> PeerSet {
        if spec.all {
            return PeerSet::All;
        }
        let mut identities = spec.reserved.clone();
        for sel in &spec.selectors {
            identities.extend(self.select(sel));
        }
        if spec.cluster {
            identities.extend(self.all_cluster_ids.iter().copied());
        }
        PeerSet::Selected {
            identities,
            cidrs: spec.cidrs.clone(),
        }
    }

    fn named_for_identity(
        &self,
        id: NumericIdentity,
        name: &str,
        protocols: &[Protocol],
    ) -> Vec<L4Match> {
        self.named_ports
            .get(&id)
            .into_iter()
            .flatten()
            .filter(|(n, p, _)| n == name && protocols.contains(p))
            .map(|(_, p, port)| L4Match::new(*p, ciliumc_ir::PortRange::single(*port)))
            .collect()
    }

    /// The policy of one endpoint given the subject rules that select it.
    pub fn endpoint_policy(
        &mut self,
        ep: &Endpoint,
        selecting: &[&SubjectRule],
        rule_ids: &[RuleId],
    ) -> EndpointPolicy {
        let mut policy = EndpointPolicy::unenforced();
        for direction in [Direction::Ingress, Direction::Egress] {
            let sections: Vec<&&SubjectRule> = selecting
                .iter()
                .filter(|s| match direction {
                    Direction::Ingress => s.ingress_section,
                    Direction::Egress => s.egress_section,
                })
                .collect();
            if sections.is_empty() {
                continue;
            }
            let default_deny = sections.iter().any(|s| match direction {
                Direction::Ingress => s.default_deny_ingress,
                Direction::Egress => s.default_deny_egress,
            });
            let mut rules = Vec::new();
            for s in selecting {
                for r in s.rules.iter().filter(|r| r.direction == direction) {
                    let id = rule_ids[r.origin];
                    let peers = self.peers(&r.peers);
                    let Some(ports) = &r.l4 else {
                        rules.push(Rule {
                            id,
                            kind: r.kind,
                            peers,
                            l4: None,
                        });
                        continue;
                    };
                    let mut fixed = Vec::new();
                    let mut named = Vec::new();
                    for p in ports {
                        match p {
                            PortSpec::Match(m) => fixed.push(*m),
                            PortSpec::Named { name, protocols } => named.push((name, protocols)),
                        }
                    }
                    if direction == Direction::Ingress || named.is_empty() {
                        for (name, protocols) in &named {
                            fixed.extend(protocols.iter().filter_map(|p| {
                                ep.named_port(name, *p).map(|port| {
                                    L4Match::new(*p, ciliumc_ir::PortRange::single(port))
                                })
                            }));
                        }
                        dedup(&mut fixed);
                        rules.push(Rule {
                            id,
                            kind: r.kind,
                            peers,
                            l4: Some(fixed),
                        });
                        continue;
                    }
                    // Egress named ports: per destination identity.
                    if !fixed.is_empty() || named.is_empty() {
                        dedup(&mut fixed);
                        rules.push(Rule {
                            id,
                            kind: r.kind,
                            peers: peers.clone(),
                            l4: Some(fixed),
                        });
                    }
                    let candidates: Vec<NumericIdentity> = match &peers {
                        PeerSet::All => self.named_ports.keys().copied().collect(),
                        PeerSet::Selected { identities, .. } => {
                            identities.iter().copied().collect()
                        }
                    };
                    for dest in candidates {
                        let mut resolved = Vec::new();
                        for (name, protocols) in &named {
                            resolved.extend(self.named_for_identity(dest, name, protocols));
                        }
                        if !resolved.is_empty() {
                            dedup(&mut resolved);
                            rules.push(Rule {
                                id,
                                kind: r.kind,
                                peers: PeerSet::identities([dest]),
                                l4: Some(resolved),
                            });
                        }
                    }
                }
            }
            let dp = policy.direction_mut(direction);
            *dp = DirectionPolicy::enforced(direction, rules);
            dp.default_deny = default_deny;
        }
        policy
    }
}

fn dedup(v: &mut Vec<L4Match>) {
    v.sort();
    v.dedup();
}
