//! Kubernetes NetworkPolicy checks, after the API server's validation: policy types, peers (`ipBlock`
//! alone or selectors), CIDRs with `except`, ports.
//!
//! In: a typed NetworkPolicy. Out: diagnostics via the [`Reporter`].
use super::net::{ExceptRule, check_cidr, check_except};
use super::other::check_selector;
use super::ports::check_k8s_port;
use super::report::Reporter;
use crate::frontend::diagnostic::codes;
use crate::frontend::model::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use crate::frontend::path::FieldPath;

pub(super) fn check_network_policy(r: &mut Reporter<'_>, p: &NetworkPolicy) {
    let spec = FieldPath::default().key("spec");
    check_selector(r, &spec.key("podSelector"), &p.spec.pod_selector);
    for (i, t) in p.spec.policy_types.iter().flatten().enumerate() {
        if !matches!(t.as_str(), "Ingress" | "Egress") {
            let d = r
                .error(
                    codes::BAD_ENUM,
                    &spec.key("policyTypes").index(i),
                    format!("unknown policy type `{t}`"),
                )
                .with_found(format!("`{t}`"))
                .with_expected("Ingress or Egress");
            r.push(d);
        }
    }
    for (i, rule) in p.spec.ingress.iter().flatten().enumerate() {
        let rp = spec.key("ingress").index(i);
        check_peers(r, &rp.key("from"), rule.from.as_deref());
        check_ports(r, &rp.key("ports"), rule.ports.as_deref());
    }
    for (i, rule) in p.spec.egress.iter().flatten().enumerate() {
        let rp = spec.key("egress").index(i);
        check_peers(r, &rp.key("to"), rule.to.as_deref());
        check_ports(r, &rp.key("ports"), rule.ports.as_deref());
    }
}

fn check_peers(r: &mut Reporter<'_>, path: &FieldPath, peers: Option<&[NetworkPolicyPeer]>) {
    for (i, peer) in peers.unwrap_or(&[]).iter().enumerate() {
        let pp = path.index(i);
        let selectors = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
        match (&peer.ip_block, selectors) {
            (Some(_), true) => {
                let d = r
                    .error_key(
                        codes::BAD_PEER,
                        &pp.key("ipBlock"),
                        "`ipBlock` may not be combined with `podSelector` or `namespaceSelector`",
                    )
                    .with_expected("either `ipBlock` or selectors in one peer");
                r.push(d);
            }
            (None, false) => {
                let d = r
                    .error(codes::BAD_PEER, &pp, "peer selects nothing")
                    .with_expected("`podSelector`, `namespaceSelector` or `ipBlock`");
                r.push(d);
            }
            _ => {}
        }
        if let Some(s) = &peer.pod_selector {
            check_selector(r, &pp.key("podSelector"), s);
        }
        if let Some(s) = &peer.namespace_selector {
            check_selector(r, &pp.key("namespaceSelector"), s);
        }
        if let Some(block) = &peer.ip_block {
            let bp = pp.key("ipBlock");
            let cidr = check_cidr(r, &bp.key("cidr"), &block.cidr, false);
            if let Some(except) = &block.except {
                check_except(
                    r,
                    cidr,
                    &block.cidr,
                    &bp.key("except"),
                    except,
                    ExceptRule::StrictSubset,
                );
            }
        }
    }
}

fn check_ports(r: &mut Reporter<'_>, path: &FieldPath, ports: Option<&[NetworkPolicyPort]>) {
    for (i, port) in ports.unwrap_or(&[]).iter().enumerate() {
        check_k8s_port(r, &path.index(i), port);
    }
}
