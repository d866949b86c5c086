//! CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy rule checks, after Cilium's `Rule.Sanitize` and
//! the CRD schema: subject selector, L3 peer kinds (mutually exclusive per rule), CIDRs, entities,
//! removed `fromRequires`/`toRequires`, ports, ICMP, L7 and authentication.
//!
//! In: a typed policy. Out: diagnostics via the [`Reporter`].
use super::net::{ExceptRule, check_cidr, check_except};
use super::other::check_selector;
use super::ports::check_cilium_port;
use super::report::Reporter;
use super::{enforced, l7};
use crate::frontend::diagnostic::{Severity, codes};
use crate::frontend::model::{
    Authentication, CidrRule, CiliumNetworkPolicy, EgressDenyRule, EgressRule, Entity,
    FqdnSelector, Groups, IcmpRule, IngressDenyRule, IngressRule, IntOrString, LabelSelector,
    PortProtocol, PortRule, Rule, ServiceRef,
};
use crate::frontend::path::{FieldPath, Target};

/// Traffic direction of a rule section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    /// Field name of a peer kind in this direction (`fromCIDR` / `toCIDR`).
    fn field(self, base: &str) -> String {
        match self {
            Dir::Ingress => format!("from{base}"),
            Dir::Egress => format!("to{base}"),
        }
    }
}

/// The four rule section types seen through one shape, so each check is written once.
pub(super) struct RuleView<'a> {
    pub dir: Dir,
    pub endpoints: Option<&'a Vec<LabelSelector>>,
    pub requires: Option<&'a Vec<LabelSelector>>,
    pub cidr: Option<&'a Vec<String>>,
    pub cidr_set: Option<&'a Vec<CidrRule>>,
    pub entities: Option<&'a Vec<String>>,
    pub groups: Option<&'a Vec<Groups>>,
    pub nodes: Option<&'a Vec<LabelSelector>>,
    pub services: Option<&'a Vec<ServiceRef>>,
    pub fqdns: Option<&'a Vec<FqdnSelector>>,
    /// `toPorts[i].ports` of allow and deny rules alike.
    pub port_lists: Vec<Option<&'a Vec<PortProtocol>>>,
    /// Full port rules (allow sections only).
    pub port_rules: Option<&'a Vec<PortRule>>,
    pub icmps: Option<&'a Vec<IcmpRule>>,
    pub authentication: Option<&'a Authentication>,
}

impl<'a> RuleView<'a> {
    fn ingress(r: &'a IngressRule) -> Self {
        RuleView {
            dir: Dir::Ingress,
            endpoints: r.from_endpoints.as_ref(),
            requires: r.from_requires.as_ref(),
            cidr: r.from_cidr.as_ref(),
            cidr_set: r.from_cidr_set.as_ref(),
            entities: r.from_entities.as_ref(),
            groups: r.from_groups.as_ref(),
            nodes: r.from_nodes.as_ref(),
            services: None,
            fqdns: None,
            port_lists: r
                .to_ports
                .iter()
                .flatten()
                .map(|p| p.ports.as_ref())
                .collect(),
            port_rules: r.to_ports.as_ref(),
            icmps: r.icmps.as_ref(),
            authentication: r.authentication.as_ref(),
        }
    }

    fn ingress_deny(r: &'a IngressDenyRule) -> Self {
        RuleView {
            dir: Dir::Ingress,
            endpoints: r.from_endpoints.as_ref(),
            requires: r.from_requires.as_ref(),
            cidr: r.from_cidr.as_ref(),
            cidr_set: r.from_cidr_set.as_ref(),
            entities: r.from_entities.as_ref(),
            groups: r.from_groups.as_ref(),
            nodes: r.from_nodes.as_ref(),
            services: None,
            fqdns: None,
            port_lists: r
                .to_ports
                .iter()
                .flatten()
                .map(|p| p.ports.as_ref())
                .collect(),
            port_rules: None,
            icmps: r.icmps.as_ref(),
            authentication: None,
        }
    }

    fn egress(r: &'a EgressRule) -> Self {
        RuleView {
            dir: Dir::Egress,
            endpoints: r.to_endpoints.as_ref(),
            requires: r.to_requires.as_ref(),
            cidr: r.to_cidr.as_ref(),
            cidr_set: r.to_cidr_set.as_ref(),
            entities: r.to_entities.as_ref(),
            groups: r.to_groups.as_ref(),
            nodes: r.to_nodes.as_ref(),
            services: r.to_services.as_ref(),
            fqdns: r.to_fqdns.as_ref(),
            port_lists: r
                .to_ports
                .iter()
                .flatten()
                .map(|p| p.ports.as_ref())
                .collect(),
            port_rules: r.to_ports.as_ref(),
            icmps: r.icmps.as_ref(),
            authentication: r.authentication.as_ref(),
        }
    }

    fn egress_deny(r: &'a EgressDenyRule) -> Self {
        RuleView {
            dir: Dir::Egress,
            endpoints: r.to_endpoints.as_ref(),
            requires: r.to_requires.as_ref(),
            cidr: r.to_cidr.as_ref(),
            cidr_set: r.to_cidr_set.as_ref(),
            entities: r.to_entities.as_ref(),
            groups: r.to_groups.as_ref(),
            nodes: r.to_nodes.as_ref(),
            services: r.to_services.as_ref(),
            fqdns: None,
            port_lists: r
                .to_ports
                .iter()
                .flatten()
                .map(|p| p.ports.as_ref())
                .collect(),
            port_rules: None,
            icmps: r.icmps.as_ref(),
            authentication: None,
        }
    }

    /// The L3 peer kinds Cilium treats as mutually exclusive, with how many entries each has.
    fn l3_members(&self) -> Vec<(String, usize)> {
        let mut m = vec![
            (
                self.dir.field("Endpoints"),
                self.endpoints.map_or(0, Vec::len),
            ),
            (self.dir.field("CIDR"), self.cidr.map_or(0, Vec::len)),
            (self.dir.field("CIDRSet"), self.cidr_set.map_or(0, Vec::len)),
            (
                self.dir.field("Entities"),
                self.entities.map_or(0, Vec::len),
            ),
            (self.dir.field("Groups"), self.groups.map_or(0, Vec::len)),
            (self.dir.field("Nodes"), self.nodes.map_or(0, Vec::len)),
        ];
        if self.dir == Dir::Egress {
            m.push(("toServices".to_string(), self.services.map_or(0, Vec::len)));
            m.push(("toFQDNs".to_string(), self.fqdns.map_or(0, Vec::len)));
        }
        m
    }
}

/// Checks a CNP or CCNP.
pub(super) fn check_policy(r: &mut Reporter<'_>, p: &CiliumNetworkPolicy) {
    if p.spec.is_none() && p.specs.is_none() {
        let d = r
            .error(
                codes::MISSING_FIELD,
                &FieldPath::default(),
                "policy has neither `spec` nor `specs`",
            )
            .with_expected("`spec` (one rule) or `specs` (a list of rules)");
        r.push(d);
    }
    for (path, rule) in p.rules() {
        let path = FieldPath::parse(&path).unwrap_or_default();
        check_rule(r, &path, rule);
        enforced::check_rule(r, &path, rule);
    }
}

fn check_rule(r: &mut Reporter<'_>, path: &FieldPath, rule: &Rule) {
    match (&rule.endpoint_selector, &rule.node_selector) {
        (None, None) => {
            let d = r
                .error_key(
                    codes::SUBJECT_SELECTOR,
                    path,
                    "rule has no `endpointSelector` or `nodeSelector`",
                )
                .with_expected("exactly one of `endpointSelector`, `nodeSelector`")
                .with_note("use `endpointSelector: {}` to select every endpoint");
            r.push(d);
        }
        (Some(_), Some(_)) => {
            let d = r
                .error_key(
                    codes::SUBJECT_SELECTOR,
                    &path.key("nodeSelector"),
                    "rule has both `endpointSelector` and `nodeSelector`",
                )
                .with_expected("exactly one of `endpointSelector`, `nodeSelector`");
            r.push(d);
        }
        _ => {}
    }
    if let Some(s) = &rule.endpoint_selector {
        check_selector(r, &path.key("endpointSelector"), s);
    }
    if let Some(s) = &rule.node_selector {
        check_selector(r, &path.key("nodeSelector"), s);
    }
    if rule.ingress.is_none()
        && rule.ingress_deny.is_none()
        && rule.egress.is_none()
        && rule.egress_deny.is_none()
    {
        let d = r
            .at(
                Severity::Warning,
                codes::EMPTY_RULE,
                path,
                Target::Value,
                "rule has no `ingress`, `ingressDeny`, `egress` or `egressDeny` section",
            )
            .with_note(
                "Cilium's CRD requires at least one; the rule selects endpoints but has no effect",
            );
        r.push(d);
    }
    for (i, x) in rule.ingress.iter().flatten().enumerate() {
        check_view(r, &path.key("ingress").index(i), &RuleView::ingress(x));
    }
    for (i, x) in rule.ingress_deny.iter().flatten().enumerate() {
        check_view(
            r,
            &path.key("ingressDeny").index(i),
            &RuleView::ingress_deny(x),
        );
    }
    for (i, x) in rule.egress.iter().flatten().enumerate() {
        check_view(r, &path.key("egress").index(i), &RuleView::egress(x));
    }
    for (i, x) in rule.egress_deny.iter().flatten().enumerate() {
        check_view(
            r,
            &path.key("egressDeny").index(i),
            &RuleView::egress_deny(x),
        );
    }
}

fn check_view(r: &mut Reporter<'_>, path: &FieldPath, v: &RuleView<'_>) {
    let present: Vec<String> = v
        .l3_members()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, _)| name)
        .collect();
    if present.len() > 1 {
        let d = r
            .error_key(codes::MIXED_PEERS, &path.key(&present[1]), format!("`{}` and `{}` in one rule", present[0], present[1]))
            .with_found(present.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", "))
            .with_expected("one kind of L3 peer per rule")
            .with_label(r.span(&path.key(&present[0]), Target::Key), "also set here")
            .with_note("Cilium rejects combining peer kinds in one rule; split it into one rule per peer kind");
        r.push(d);
    }
    if let Some(req) = v.requires
        && !req.is_empty()
    {
        let name = v.dir.field("Requires");
        let d = r
            .error_key(codes::REQUIRES_REMOVED, &path.key(&name), format!("`{name}` is no longer supported"))
            .with_found(format!("`{name}`"))
            .with_expected("no requirements (the CRD has `maxItems: 0`)")
            .with_note("deprecated in Cilium 1.17 and removed in 1.19; express the constraint in each selector instead");
        r.push(d);
    }
    for (name, sels) in [
        (v.dir.field("Endpoints"), v.endpoints),
        (v.dir.field("Nodes"), v.nodes),
    ] {
        for (i, s) in sels.iter().copied().flatten().enumerate() {
            check_selector(r, &path.key(&name).index(i), s);
        }
    }
    let cidr_field = v.dir.field("CIDR");
    for (i, c) in v.cidr.iter().copied().flatten().enumerate() {
        check_cidr(r, &path.key(&cidr_field).index(i), c, true);
    }
    let set_field = v.dir.field("CIDRSet");
    for (i, c) in v.cidr_set.iter().copied().flatten().enumerate() {
        check_cidr_rule(r, &path.key(&set_field).index(i), c);
    }
    let ent_field = v.dir.field("Entities");
    for (i, e) in v.entities.iter().copied().flatten().enumerate() {
        if Entity::parse(e).is_none() {
            let d = r
                .error(
                    codes::UNKNOWN_ENTITY,
                    &path.key(&ent_field).index(i),
                    format!("unknown entity `{e}`"),
                )
                .with_found(format!("`{e}`"))
                .with_expected(format!(
                    "one of {}",
                    Entity::ALL
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            r.push(d);
        }
    }
    for (i, f) in v.fqdns.iter().copied().flatten().enumerate() {
        l7::check_fqdn(r, &path.key("toFQDNs").index(i), f);
    }
    for (i, s) in v.services.iter().copied().flatten().enumerate() {
        let p = path.key("toServices").index(i);
        if let Some(sel) = &s.k8s_service_selector {
            check_selector(
                r,
                &p.key("k8sServiceSelector").key("selector"),
                &sel.selector,
            );
        }
        if s.k8s_service.is_none() && s.k8s_service_selector.is_none() {
            let d = r
                .error(codes::ONE_OF, &p, "`toServices` entry names no service")
                .with_expected("`k8sService` or `k8sServiceSelector`");
            r.push(d);
        }
    }
    if v.icmps.is_some_and(|i| !i.is_empty()) && !v.port_lists.is_empty() {
        let d = r
            .error_key(
                codes::BAD_ICMP,
                &path.key("icmps"),
                "`icmps` and `toPorts` in one rule",
            )
            .with_expected("`icmps` in a separate rule from `toPorts`");
        r.push(d);
    }
    for (i, ports) in v.port_lists.iter().enumerate() {
        let rule_path = path.key("toPorts").index(i);
        let port_rule = v.port_rules.and_then(|rules| rules.get(i));
        let has_dns = port_rule
            .and_then(|p| p.rules.as_ref())
            .is_some_and(|l| l.dns.as_ref().is_some_and(|d| !d.is_empty()));
        let mut zero_port = false;
        for (j, pp) in ports.iter().copied().flatten().enumerate() {
            let checked = check_cilium_port(r, &rule_path.key("ports").index(j), pp, has_dns);
            zero_port |= checked.is_zero;
        }
        if let Some(pr) = port_rule {
            l7::check_port_rule(r, &rule_path, pr, v.dir, zero_port);
        }
    }
    for (i, icmp) in v.icmps.iter().copied().flatten().enumerate() {
        check_icmp(r, &path.key("icmps").index(i), icmp);
    }
    if let Some(a) = v.authentication
        && !matches!(
            a.mode.as_str(),
            "disabled" | "required" | "test-always-fail"
        )
    {
        let d = r
            .error(
                codes::BAD_ENUM,
                &path.key("authentication").key("mode"),
                format!("unknown authentication mode `{}`", a.mode),
            )
            .with_found(format!("`{}`", a.mode))
            .with_expected("one of disabled, required, test-always-fail");
        r.push(d);
    }
}

fn check_cidr_rule(r: &mut Reporter<'_>, path: &FieldPath, c: &CidrRule) {
    let set = [
        c.cidr.is_some(),
        c.cidr_group_ref.is_some(),
        c.cidr_group_selector.is_some(),
    ];
    let count = set.iter().filter(|b| **b).count();
    if count != 1 {
        let d = r
            .error(codes::ONE_OF, path, if count == 0 { "CIDR set entry has no `cidr`" } else { "CIDR set entry sets more than one of `cidr`, `cidrGroupRef`, `cidrGroupSelector`" })
            .with_expected("exactly one of `cidr`, `cidrGroupRef`, `cidrGroupSelector`");
        r.push(d);
    }
    if let Some(sel) = &c.cidr_group_selector {
        check_selector(r, &path.key("cidrGroupSelector"), sel);
    }
    if let Some(text) = &c.cidr {
        let parsed = check_cidr(r, &path.key("cidr"), text, false);
        if let Some(except) = &c.except {
            check_except(
                r,
                parsed,
                text,
                &path.key("except"),
                except,
                ExceptRule::AddressInside,
            );
        }
    }
}

/// ICMP type names Cilium accepts (CRD pattern), for IPv4 and IPv6 together.
const ICMP_TYPE_NAMES: &[&str] = &[
    "EchoReply",
    "DestinationUnreachable",
    "Redirect",
    "Echo",
    "EchoRequest",
    "RouterAdvertisement",
    "RouterSelection",
    "TimeExceeded",
    "ParameterProblem",
    "Timestamp",
    "TimestampReply",
    "Photuris",
    "ExtendedEchoRequest",
    "ExtendedEchoReply",
    "PacketTooBig",
    "MulticastListenerQuery",
    "MulticastListenerReport",
    "MulticastListenerDone",
    "RouterSolicitation",
    "NeighborSolicitation",
    "NeighborAdvertisement",
    "RedirectMessage",
    "RouterRenumbering",
    "ICMPNodeInformationQuery",
    "ICMPNodeInformationResponse",
    "InverseNeighborDiscoverySolicitation",
    "InverseNeighborDiscoveryAdvertisement",
    "HomeAgentAddressDiscoveryRequest",
    "HomeAgentAddressDiscoveryReply",
    "MobilePrefixSolicitation",
    "MobilePrefixAdvertisement",
    "DuplicateAddressRequestCodeSuffix",
    "DuplicateAddressConfirmationCodeSuffix",
];

fn check_icmp(r: &mut Reporter<'_>, path: &FieldPath, icmp: &IcmpRule) {
    for (i, f) in icmp.fields.iter().flatten().enumerate() {
        let p = path.key("fields").index(i);
        let family = f.family.as_deref().unwrap_or("");
        if !matches!(family, "" | "IPv4" | "IPv6") {
            let d = r
                .error(
                    codes::BAD_ICMP,
                    &p.key("family"),
                    format!("unknown ICMP family `{family}`"),
                )
                .with_found(format!("`{family}`"))
                .with_expected("IPv4 or IPv6");
            r.push(d);
        }
        let ok = match &f.icmp_type {
            IntOrString::Int(n) => (0..=255).contains(n),
            IntOrString::String(s) => {
                ICMP_TYPE_NAMES.contains(&s.as_str()) || s.parse::<u16>().is_ok_and(|n| n <= 255)
            }
        };
        if !ok {
            let d = r
                .error(
                    codes::BAD_ICMP,
                    &p.key("type"),
                    format!("invalid ICMP type `{}`", f.icmp_type),
                )
                .with_found(format!("`{}`", f.icmp_type))
                .with_expected("a number 0..=255 or an ICMP type name such as EchoRequest");
            r.push(d);
        }
    }
}
