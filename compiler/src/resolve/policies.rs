//! CNP / CCNP / KNP → subject rules with flat allow/deny peer rules (not yet per endpoint).
//!
//! In: policy objects, the Services/EndpointSlices (for `toServices`). Out: [`SubjectRule`]s: a
//! subject selector, which directions it has sections in (that switches enforcement on), its
//! `enableDefaultDeny`, and [`PeerRule`]s whose peers are still selectors/entities/CIDRs and whose
//! ports may still be named. KNP follows Cilium's `ParseNetworkPolicy`: rules without peers allow
//! every peer, `policyTypes` only adds the empty default-deny section, a port without protocol is
//! TCP, without port all ports.

use std::collections::BTreeSet;

use ciliumc_ir::{
    Cidr, CidrRule, Direction, L4Match, LabelSelector, NumericIdentity, PortRange, Protocol,
    RuleKind, RuleOrigin,
};

use super::names::{entity_peers, icmp_type};
use super::selectors;
use super::{ResolveWarning, SourceObject};
use crate::frontend::model::{self, Entity, IntOrString, L4Protocol, Object, PortValue};

/// A port of a rule: a resolved range, or a name resolved later per endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    Match(L4Match),
    Named {
        name: String,
        protocols: Vec<Protocol>,
    },
}

/// The peers of one rule before identities are known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerSpec {
    pub all: bool,
    pub selectors: Vec<LabelSelector>,
    pub reserved: BTreeSet<NumericIdentity>,
    pub cidrs: Vec<CidrRule>,
    /// Entity `cluster`: every cluster identity plus the reserved in-cluster ones.
    pub cluster: bool,
}

#[derive(Debug, Clone)]
pub struct PeerRule {
    /// Index into the origin list; becomes a [`ciliumc_ir::RuleId`] once ids are allocated.
    pub origin: usize,
    pub direction: Direction,
    pub kind: RuleKind,
    pub peers: PeerSpec,
    pub l4: Option<Vec<PortSpec>>,
}

#[derive(Debug, Clone)]
pub struct SubjectRule {
    pub subject: LabelSelector,
    pub ingress_section: bool,
    pub egress_section: bool,
    pub default_deny_ingress: bool,
    pub default_deny_egress: bool,
    pub rules: Vec<PeerRule>,
}

#[derive(Default)]
pub struct Translated {
    pub subjects: Vec<SubjectRule>,
    pub origins: Vec<(String, RuleOrigin)>,
}

struct Ctx<'a, O> {
    obj: &'a O,
    kind: &'static str,
    namespace: Option<String>,
    name: String,
    services: &'a [ServiceInfo],
    warnings: &'a mut Vec<ResolveWarning>,
    out: &'a mut Translated,
}

/// What `toServices` needs of a Service.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    pub namespace: String,
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub selector: Option<std::collections::BTreeMap<String, String>>,
    pub backend_ips: Vec<std::net::IpAddr>,
}

impl<O: SourceObject> Ctx<'_, O> {
    fn object_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }

    fn warn(&mut self, msg: impl Into<String>) {
        let w = ResolveWarning::new(&self.object_name(), msg);
        self.warnings.push(w);
    }

    /// Registers the origin of a rule at `path` (`spec.ingress[0]`), returns its index.
    fn origin(&mut self, section: &str, index: usize, path: &str) -> usize {
        let key = format!(
            "{}/{}/{}/{section}[{index}]",
            self.kind,
            self.namespace.as_deref().unwrap_or(""),
            self.name
        );
        let origin = RuleOrigin {
            policy_kind: self.kind.to_string(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            section: section.to_string(),
            rule_index: index,
            source: self.obj.location_of(path),
        };
        self.out.origins.push((key, origin));
        self.out.origins.len() - 1
    }

    fn cidr(&mut self, text: &str) -> Option<Cidr> {
        match text.parse::<Cidr>() {
            Ok(c) => Some(c),
            Err(e) => {
                self.warn(format!("skipping CIDR: {e}"));
                None
            }
        }
    }

    fn cidr_rule(&mut self, cidr: &str, except: &[String]) -> Option<CidrRule> {
        let cidr = self.cidr(cidr)?;
        let except = except.iter().filter_map(|e| self.cidr(e)).collect();
        Some(CidrRule::with_except(cidr, except))
    }
}

fn cilium_ports<O: SourceObject>(
    ctx: &mut Ctx<'_, O>,
    ports: &[model::PortProtocol],
    out: &mut Vec<PortSpec>,
) {
    for p in ports {
        let protocols: Vec<Protocol> =
            match L4Protocol::parse_cilium(p.protocol.as_deref().unwrap_or("")) {
                Some(L4Protocol::Tcp) => vec![Protocol::Tcp],
                Some(L4Protocol::Udp) => vec![Protocol::Udp],
                Some(L4Protocol::Sctp) => vec![Protocol::Sctp],
                Some(L4Protocol::Any) => Protocol::ANY.to_vec(),
                other => {
                    ctx.warn(format!(
                        "protocol {other:?} is not enforced; the port entry matches nothing"
                    ));
                    continue;
                }
            };
        let end = p.end_port.and_then(|e| u16::try_from(e).ok());
        match model::parse_port(p.port.as_deref().unwrap_or("0")) {
            Some(PortValue::Number(n)) => {
                let range = PortRange::from_port_end(n, end);
                out.extend(
                    protocols
                        .into_iter()
                        .map(|proto| PortSpec::Match(L4Match::new(proto, range))),
                );
            }
            Some(PortValue::Named(name)) => out.push(PortSpec::Named { name, protocols }),
            None => ctx.warn(format!("invalid port {:?} skipped", p.port)),
        }
    }
}

fn cilium_l4<O: SourceObject>(
    ctx: &mut Ctx<'_, O>,
    port_lists: &[&[model::PortProtocol]],
    has_to_ports: bool,
    icmps: Option<&Vec<model::IcmpRule>>,
) -> Option<Vec<PortSpec>> {
    let icmp_fields: Vec<&model::IcmpField> = icmps
        .iter()
        .flat_map(|v| v.iter())
        .flat_map(|r| r.fields.iter().flatten())
        .collect();
    if !has_to_ports && icmp_fields.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for ports in port_lists {
        cilium_ports(ctx, ports, &mut out);
    }
    for f in icmp_fields {
        let v6 = f
            .family
            .as_deref()
            .is_some_and(|fam| fam.eq_ignore_ascii_case("IPv6"));
        let proto = if v6 { Protocol::Icmpv6 } else { Protocol::Icmp };
        match icmp_type(v6, &f.icmp_type) {
            Some(t) => out.push(PortSpec::Match(L4Match::icmp(proto, Some(t)))),
            None => ctx.warn(format!("unknown ICMP type {} skipped", f.icmp_type)),
        }
    }
    Some(out)
}

/// Fields of one Cilium ingress/egress (allow or deny) rule, direction-agnostic.
struct CiliumPeerFields<'a> {
    endpoints: Option<&'a Vec<model::LabelSelector>>,
    cidr: Option<&'a Vec<String>>,
    cidr_set: Option<&'a Vec<model::CidrRule>>,
    entities: Option<&'a Vec<String>>,
    services: Option<&'a Vec<model::ServiceRef>>,
    /// L3 fields ciliumc does not enforce (nodes, groups, FQDNs): present = this rule selects nothing.
    unsupported_l3: bool,
    ports: Vec<&'a [model::PortProtocol]>,
    has_to_ports: bool,
    icmps: Option<&'a Vec<model::IcmpRule>>,
}

fn cilium_peers<O: SourceObject>(
    ctx: &mut Ctx<'_, O>,
    f: &CiliumPeerFields<'_>,
    clusterwide: bool,
) -> PeerSpec {
    let mut peers = PeerSpec::default();
    let has_l3 = f.endpoints.is_some()
        || f.cidr.is_some()
        || f.cidr_set.is_some()
        || f.entities.is_some()
        || f.services.is_some()
        || f.unsupported_l3;
    if !has_l3 {
        // An L4-only rule applies to every peer; a rule with neither L3 nor L4 selects nothing.
        let has_l4 = f.has_to_ports || f.icmps.is_some_and(|i| !i.is_empty());
        peers.all = has_l4;
        return peers;
    }
    let ns = ctx.namespace.clone().unwrap_or_default();
    for sel in f.endpoints.into_iter().flatten() {
        peers.selectors.push(if clusterwide {
            selectors::ccnp_peer(sel)
        } else {
            selectors::cnp_peer(sel, &ns)
        });
    }
    for c in f.cidr.into_iter().flatten() {
        if let Some(r) = ctx.cidr_rule(c, &[]) {
            peers.cidrs.push(r);
        }
    }
    for c in f.cidr_set.into_iter().flatten() {
        match &c.cidr {
            Some(cidr) => {
                let except = c.except.clone().unwrap_or_default();
                if let Some(r) = ctx.cidr_rule(cidr, &except) {
                    peers.cidrs.push(r);
                }
            }
            None => ctx.warn("cidrGroupRef/cidrGroupSelector is not enforced; it selects nothing"),
        }
    }
    for e in f.entities.into_iter().flatten() {
        match Entity::parse(e) {
            Some(entity) => entity_peers(entity, &mut peers),
            None => ctx.warn(format!("unknown entity {e:?} selects nothing")),
        }
    }
    for s in f.services.into_iter().flatten() {
        service_peers(ctx, s, &mut peers);
    }
    peers
}

fn service_peers<O: SourceObject>(
    ctx: &mut Ctx<'_, O>,
    s: &model::ServiceRef,
    peers: &mut PeerSpec,
) {
    let matched: Vec<ServiceInfo> = ctx
        .services
        .iter()
        .filter(|svc| {
            if let Some(by_name) = &s.k8s_service {
                let ns_ok = by_name
                    .namespace
                    .as_deref()
                    .is_none_or(|n| n.is_empty() || n == svc.namespace);
                return ns_ok && by_name.service_name.as_deref() == Some(svc.name.as_str());
            }
            if let Some(by_sel) = &s.k8s_service_selector {
                let ns_ok = by_sel
                    .namespace
                    .as_deref()
                    .is_none_or(|n| n.is_empty() || n == svc.namespace);
                let labels = svc
                    .labels
                    .iter()
                    .map(|(k, v)| ciliumc_ir::Label::k8s(k, v))
                    .collect();
                return ns_ok && selectors::convert(&by_sel.selector).matches(&labels);
            }
            false
        })
        .cloned()
        .collect();
    if matched.is_empty() {
        ctx.warn("toServices matches no Service of the input; it selects nothing");
    }
    for svc in matched {
        match &svc.selector {
            Some(sel) => peers
                .selectors
                .push(selectors::service_backends(sel, &svc.namespace)),
            None => peers.cidrs.extend(
                svc.backend_ips
                    .iter()
                    .map(|ip| CidrRule::new(Cidr::host(*ip))),
            ),
        }
    }
}

/// Which section of a Cilium rule an entry comes from, and what it means.
struct RuleSection {
    /// `ingress`, `ingressDeny`, `egress` or `egressDeny`.
    name: &'static str,
    direction: Direction,
    kind: RuleKind,
}

/// Adds entry `i` of `section` (peers and ports already picked from the model) to `subject`.
/// `at` is the rule's (origin prefix, field path), e.g. (`specs[1].`, `specs[1]`).
fn add_cilium_rule<O: SourceObject>(
    ctx: &mut Ctx<'_, O>,
    subject: &mut SubjectRule,
    at: (&str, &str),
    section: &RuleSection,
    i: usize,
    f: &CiliumPeerFields<'_>,
    clusterwide: bool,
) {
    let (prefix, path) = at;
    let name = section.name;
    let origin = ctx.origin(
        &format!("{prefix}{name}"),
        i,
        &format!("{path}.{name}[{i}]"),
    );
    let peers = cilium_peers(ctx, f, clusterwide);
    let l4 = cilium_l4(ctx, &f.ports, f.has_to_ports, f.icmps);
    push_rule(subject, origin, section.direction, section.kind, peers, l4);
}

fn push_rule(
    subject: &mut SubjectRule,
    origin: usize,
    direction: Direction,
    kind: RuleKind,
    peers: PeerSpec,
    l4: Option<Vec<PortSpec>>,
) {
    subject.rules.push(PeerRule {
        origin,
        direction,
        kind,
        peers,
        l4,
    });
}

fn translate_cilium<O: SourceObject>(
    ctx: &mut Ctx<'_, O>,
    cnp: &model::CiliumNetworkPolicy,
    clusterwide: bool,
) {
    let ns = ctx.namespace.clone().unwrap_or_default();
    for (path, rule) in cnp.rules() {
        let Some(sel) = &rule.endpoint_selector else {
            if rule.node_selector.is_some() {
                ctx.warn(format!(
                    "{path}: nodeSelector (host firewall) is not enforced"
                ));
            }
            continue;
        };
        let subject_sel = if clusterwide {
            selectors::convert(sel)
        } else {
            selectors::cnp_subject(sel, &ns)
        };
        let dd = rule.enable_default_deny.clone().unwrap_or_default();
        let mut subject = SubjectRule {
            subject: subject_sel,
            ingress_section: rule.ingress.as_ref().is_some_and(|v| !v.is_empty())
                || rule.ingress_deny.as_ref().is_some_and(|v| !v.is_empty()),
            egress_section: rule.egress.as_ref().is_some_and(|v| !v.is_empty())
                || rule.egress_deny.as_ref().is_some_and(|v| !v.is_empty()),
            default_deny_ingress: dd.ingress.unwrap_or(true),
            default_deny_egress: dd.egress.unwrap_or(true),
            rules: Vec::new(),
        };
        let prefix = if path == "spec" {
            String::new()
        } else {
            format!("{path}.")
        };
        for (i, r) in rule.ingress.iter().flatten().enumerate() {
            let f = CiliumPeerFields {
                endpoints: r.from_endpoints.as_ref(),
                cidr: r.from_cidr.as_ref(),
                cidr_set: r.from_cidr_set.as_ref(),
                entities: r.from_entities.as_ref(),
                services: None,
                unsupported_l3: r.from_nodes.is_some() || r.from_groups.is_some(),
                ports: r
                    .to_ports
                    .iter()
                    .flatten()
                    .filter_map(|p| p.ports.as_deref())
                    .collect(),
                has_to_ports: r.to_ports.as_ref().is_some_and(|p| !p.is_empty()),
                icmps: r.icmps.as_ref(),
            };
            let section = RuleSection {
                name: "ingress",
                direction: Direction::Ingress,
                kind: RuleKind::Allow,
            };
            add_cilium_rule(
                ctx,
                &mut subject,
                (&prefix, &path),
                &section,
                i,
                &f,
                clusterwide,
            );
        }
        for (i, r) in rule.ingress_deny.iter().flatten().enumerate() {
            let f = CiliumPeerFields {
                endpoints: r.from_endpoints.as_ref(),
                cidr: r.from_cidr.as_ref(),
                cidr_set: r.from_cidr_set.as_ref(),
                entities: r.from_entities.as_ref(),
                services: None,
                unsupported_l3: r.from_nodes.is_some() || r.from_groups.is_some(),
                ports: r
                    .to_ports
                    .iter()
                    .flatten()
                    .filter_map(|p| p.ports.as_deref())
                    .collect(),
                has_to_ports: r.to_ports.as_ref().is_some_and(|p| !p.is_empty()),
                icmps: r.icmps.as_ref(),
            };
            let section = RuleSection {
                name: "ingressDeny",
                direction: Direction::Ingress,
                kind: RuleKind::Deny,
            };
            add_cilium_rule(
                ctx,
                &mut subject,
                (&prefix, &path),
                &section,
                i,
                &f,
                clusterwide,
            );
        }
        for (i, r) in rule.egress.iter().flatten().enumerate() {
            let f = CiliumPeerFields {
                endpoints: r.to_endpoints.as_ref(),
                cidr: r.to_cidr.as_ref(),
                cidr_set: r.to_cidr_set.as_ref(),
                entities: r.to_entities.as_ref(),
                services: r.to_services.as_ref(),
                unsupported_l3: r.to_nodes.is_some()
                    || r.to_groups.is_some()
                    || r.to_fqdns.is_some(),
                ports: r
                    .to_ports
                    .iter()
                    .flatten()
                    .filter_map(|p| p.ports.as_deref())
                    .collect(),
                has_to_ports: r.to_ports.as_ref().is_some_and(|p| !p.is_empty()),
                icmps: r.icmps.as_ref(),
            };
            let section = RuleSection {
                name: "egress",
                direction: Direction::Egress,
                kind: RuleKind::Allow,
            };
            add_cilium_rule(
                ctx,
                &mut subject,
                (&prefix, &path),
                &section,
                i,
                &f,
                clusterwide,
            );
        }
        for (i, r) in rule.egress_deny.iter().flatten().enumerate() {
            let f = CiliumPeerFields {
                endpoints: r.to_endpoints.as_ref(),
                cidr: r.to_cidr.as_ref(),
                cidr_set: r.to_cidr_set.as_ref(),
                entities: r.to_entities.as_ref(),
                services: r.to_services.as_ref(),
                unsupported_l3: r.to_nodes.is_some() || r.to_groups.is_some(),
                ports: r
                    .to_ports
                    .iter()
                    .flatten()
                    .filter_map(|p| p.ports.as_deref())
                    .collect(),
                has_to_ports: r.to_ports.as_ref().is_some_and(|p| !p.is_empty()),
                icmps: r.icmps.as_ref(),
            };
            let section = RuleSection {
                name: "egressDeny",
                direction: Direction::Egress,
                kind: RuleKind::Deny,
            };
            add_cilium_rule(
                ctx,
                &mut subject,
                (&prefix, &path),
                &section,
                i,
                &f,
                clusterwide,
            );
        }
        ctx.out.subjects.push(subject);
    }
}

fn knp_ports<O: SourceObject>(
    ctx: &mut Ctx<'_, O>,
    ports: Option<&Vec<model::NetworkPolicyPort>>,
) -> Option<Vec<PortSpec>> {
    let ports = ports.filter(|p| !p.is_empty())?;
    let mut out = Vec::new();
    for p in ports {
        let proto = match L4Protocol::parse_k8s(p.protocol.as_deref().unwrap_or("TCP")) {
            Some(L4Protocol::Tcp) => Protocol::Tcp,
            Some(L4Protocol::Udp) => Protocol::Udp,
            Some(L4Protocol::Sctp) => Protocol::Sctp,
            _ => {
                ctx.warn(format!(
                    "protocol {:?} is not supported; the port entry matches nothing",
                    p.protocol
                ));
                continue;
            }
        };
        let end = p.end_port.and_then(|e| u16::try_from(e).ok());
        match &p.port {
            None => out.push(PortSpec::Match(L4Match::new(proto, PortRange::ANY))),
            Some(IntOrString::Int(n)) => match u16::try_from(*n) {
                Ok(n) => out.push(PortSpec::Match(L4Match::new(
                    proto,
                    PortRange::from_port_end(n, end),
                ))),
                Err(_) => ctx.warn(format!("port {n} out of range skipped")),
            },
            Some(IntOrString::String(s)) => match model::parse_port(s) {
                Some(PortValue::Number(n)) => out.push(PortSpec::Match(L4Match::new(
                    proto,
                    PortRange::from_port_end(n, end),
                ))),
                Some(PortValue::Named(name)) => out.push(PortSpec::Named {
                    name,
                    protocols: vec![proto],
                }),
                None => ctx.warn(format!("invalid port {s:?} skipped")),
            },
        }
    }
    Some(out)
}

fn knp_peers<O: SourceObject>(
    ctx: &mut Ctx<'_, O>,
    peers_in: Option<&Vec<model::NetworkPolicyPeer>>,
) -> PeerSpec {
    let mut peers = PeerSpec::default();
    let ns = ctx.namespace.clone().unwrap_or_default();
    match peers_in.filter(|p| !p.is_empty()) {
        None => peers.all = true,
        Some(list) => {
            for p in list {
                if let Some(b) = &p.ip_block {
                    let except = b.except.clone().unwrap_or_default();
                    if let Some(r) = ctx.cidr_rule(&b.cidr, &except) {
                        peers.cidrs.push(r);
                    }
                } else {
                    peers.selectors.push(selectors::knp_peer(
                        p.pod_selector.as_ref(),
                        p.namespace_selector.as_ref(),
                        &ns,
                    ));
                }
            }
        }
    }
    peers
}

fn translate_knp<O: SourceObject>(ctx: &mut Ctx<'_, O>, np: &model::NetworkPolicy) {
    let ns = ctx.namespace.clone().unwrap_or_default();
    let types = np.spec.policy_types.clone().unwrap_or_default();
    let ingress_rules = np.spec.ingress.clone().unwrap_or_default();
    let egress_rules = np.spec.egress.clone().unwrap_or_default();
    let mut subject = SubjectRule {
        subject: selectors::knp_subject(&np.spec.pod_selector, &ns),
        // Cilium `ParseNetworkPolicy`: rules are taken as written; policyTypes (or its absence, for
        // ingress) only adds an empty rule that switches default deny on.
        ingress_section: !ingress_rules.is_empty()
            || types.is_empty()
            || types.iter().any(|t| t == "Ingress"),
        egress_section: !egress_rules.is_empty() || types.iter().any(|t| t == "Egress"),
        default_deny_ingress: true,
        default_deny_egress: true,
        rules: Vec::new(),
    };
    for (i, r) in ingress_rules.iter().enumerate() {
        let origin = ctx.origin("ingress", i, &format!("spec.ingress[{i}]"));
        let peers = knp_peers(ctx, r.from.as_ref());
        let l4 = knp_ports(ctx, r.ports.as_ref());
        push_rule(
            &mut subject,
            origin,
            Direction::Ingress,
            RuleKind::Allow,
            peers,
            l4,
        );
    }
    for (i, r) in egress_rules.iter().enumerate() {
        let origin = ctx.origin("egress", i, &format!("spec.egress[{i}]"));
        let peers = knp_peers(ctx, r.to.as_ref());
        let l4 = knp_ports(ctx, r.ports.as_ref());
        push_rule(
            &mut subject,
            origin,
            Direction::Egress,
            RuleKind::Allow,
            peers,
            l4,
        );
    }
    ctx.out.subjects.push(subject);
}

/// Services with their backend addresses from EndpointSlices (`kubernetes.io/service-name`).
pub fn collect_services<O: SourceObject>(objects: &[O]) -> Vec<ServiceInfo> {
    let mut out = Vec::new();
    for o in objects {
        let Object::Service(svc) = o.object() else {
            continue;
        };
        let ns = svc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = svc.metadata.name.clone().unwrap_or_default();
        let mut backend_ips = Vec::new();
        for o2 in objects {
            let Object::EndpointSlice(es) = o2.object() else {
                continue;
            };
            let es_ns = es
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let owner = es
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"));
            if es_ns == ns && owner == Some(&name) {
                for ep in es.endpoints.iter().flatten() {
                    backend_ips.extend(
                        ep.addresses
                            .iter()
                            .filter_map(|a| a.parse::<std::net::IpAddr>().ok()),
                    );
                }
            }
        }
        backend_ips.sort();
        backend_ips.dedup();
        out.push(ServiceInfo {
            namespace: ns,
            name,
            labels: svc.metadata.labels.clone().unwrap_or_default(),
            selector: svc.spec.selector.clone().filter(|s| !s.is_empty()),
            backend_ips,
        });
    }
    out
}

/// Translates every policy object.
pub fn translate_policies<O: SourceObject>(
    objects: &[O],
    services: &[ServiceInfo],
    warnings: &mut Vec<ResolveWarning>,
) -> Translated {
    let mut out = Translated::default();
    for o in objects {
        let (kind, clusterwide) = match o.object() {
            Object::NetworkPolicy(_) => ("NetworkPolicy", false),
            Object::CiliumNetworkPolicy(_) => ("CiliumNetworkPolicy", false),
            Object::CiliumClusterwideNetworkPolicy(_) => ("CiliumClusterwideNetworkPolicy", true),
            _ => continue,
        };
        let meta = o.object().metadata();
        let namespace = if clusterwide {
            None
        } else {
            Some(
                meta.namespace
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "default".into()),
            )
        };
        let mut ctx = Ctx {
            obj: o,
            kind,
            namespace,
            name: meta.name.clone().unwrap_or_default(),
            services,
            warnings,
            out: &mut out,
        };
        match o.object() {
            Object::NetworkPolicy(np) => translate_knp(&mut ctx, np),
            Object::CiliumNetworkPolicy(p) | Object::CiliumClusterwideNetworkPolicy(p) => {
                translate_cilium(&mut ctx, p, clusterwide)
            }
            _ => {}
        }
    }
    out
}
