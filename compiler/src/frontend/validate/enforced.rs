//! "Parsed, not enforced yet" warnings (W0201) for fields ciliumc reads but does not compile.
//!
//! In: a Cilium rule (and the kind of the object). Out: one warning per occurrence. The list follows what
//! `compiler/src/resolve` enforces (see docs/frontend.md): node selectors and node peers, groups, FQDNs,
//! authentication, L7 rules, TLS, SNI, listeners and `log`.
use super::report::Reporter;
use crate::frontend::diagnostic::codes;
use crate::frontend::model::{PortRule, Rule};
use crate::frontend::path::FieldPath;

fn warn(r: &mut Reporter<'_>, path: &FieldPath, what: &str) {
    if !r.options.not_enforced_warnings {
        return;
    }
    let d = r
        .warning_key(
            codes::NOT_ENFORCED,
            path,
            format!("{what}: parsed, not enforced yet"),
        )
        .with_note("ciliumc accepts this field but the compiled program ignores it");
    r.push(d);
}

/// Warnings for one CNP/CCNP rule at `path`.
pub(super) fn check_rule(r: &mut Reporter<'_>, path: &FieldPath, rule: &Rule) {
    if rule.node_selector.is_some() {
        warn(r, &path.key("nodeSelector"), "`nodeSelector` (host policy)");
    }
    if rule.log.is_some() {
        warn(r, &path.key("log"), "`log`");
    }
    for (i, x) in rule.ingress.iter().flatten().enumerate() {
        let p = path.key("ingress").index(i);
        present(r, &p, "fromNodes", x.from_nodes.is_some());
        present(r, &p, "fromGroups", x.from_groups.is_some());
        present(r, &p, "authentication", x.authentication.is_some());
        port_rules(r, &p, x.to_ports.as_deref());
    }
    for (i, x) in rule.ingress_deny.iter().flatten().enumerate() {
        let p = path.key("ingressDeny").index(i);
        present(r, &p, "fromNodes", x.from_nodes.is_some());
        present(r, &p, "fromGroups", x.from_groups.is_some());
    }
    for (i, x) in rule.egress.iter().flatten().enumerate() {
        let p = path.key("egress").index(i);
        present(r, &p, "toNodes", x.to_nodes.is_some());
        present(r, &p, "toGroups", x.to_groups.is_some());
        present(r, &p, "toFQDNs", x.to_fqdns.is_some());
        present(r, &p, "authentication", x.authentication.is_some());
        port_rules(r, &p, x.to_ports.as_deref());
    }
    for (i, x) in rule.egress_deny.iter().flatten().enumerate() {
        let p = path.key("egressDeny").index(i);
        present(r, &p, "toNodes", x.to_nodes.is_some());
        present(r, &p, "toGroups", x.to_groups.is_some());
    }
}

fn present(r: &mut Reporter<'_>, path: &FieldPath, field: &str, is_set: bool) {
    if is_set {
        warn(r, &path.key(field), &format!("`{field}`"));
    }
}

fn port_rules(r: &mut Reporter<'_>, path: &FieldPath, rules: Option<&[PortRule]>) {
    for (i, pr) in rules.unwrap_or(&[]).iter().enumerate() {
        let p = path.key("toPorts").index(i);
        if pr.rules.is_some() {
            warn(r, &p.key("rules"), "L7 `rules`");
        }
        present(r, &p, "terminatingTLS", pr.terminating_tls.is_some());
        present(r, &p, "originatingTLS", pr.originating_tls.is_some());
        present(r, &p, "serverNames", pr.server_names.is_some());
        present(r, &p, "listener", pr.listener.is_some());
    }
}

/// A whole kind that is parsed but not compiled (CiliumLocalRedirectPolicy).
pub(super) fn whole_kind(r: &mut Reporter<'_>, kind: &str) {
    warn(r, &FieldPath::default().key("kind"), kind);
}
