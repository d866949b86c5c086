//! L7, TLS, SNI and listener checks of a `toPorts[]` entry, and FQDN selectors, after Cilium's
//! `PortRule.Validate` and `L7Rules.Validate`.
//!
//! In: one port rule. Out: diagnostics for combinations Cilium rejects.
use super::cilium::Dir;
use super::report::Reporter;
use crate::frontend::diagnostic::codes;
use crate::frontend::model::{FqdnSelector, L4Protocol, PortRule};
use crate::frontend::path::{FieldPath, Target};

/// Exactly one of `matchName`, `matchPattern`, both non-empty and DNS-shaped.
pub(super) fn check_fqdn(r: &mut Reporter<'_>, path: &FieldPath, f: &FqdnSelector) {
    let set = usize::from(f.match_name.is_some()) + usize::from(f.match_pattern.is_some());
    if set != 1 {
        let d = r
            .error(
                codes::ONE_OF,
                path,
                "FQDN selector must set exactly one of `matchName`, `matchPattern`",
            )
            .with_expected("exactly one of `matchName`, `matchPattern`");
        r.push(d);
    }
    for (field, value, wildcard) in [
        ("matchName", &f.match_name, false),
        ("matchPattern", &f.match_pattern, true),
    ] {
        let Some(v) = value else { continue };
        let ok = !v.is_empty()
            && v.len() <= 255
            && v.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || b == b'-'
                    || b == b'_'
                    || b == b'.'
                    || (wildcard && b == b'*')
            })
            && !v.contains("..");
        if !ok {
            let d = r
                .error(
                    codes::BAD_VALUE,
                    &path.key(field),
                    format!("invalid DNS name `{v}`"),
                )
                .with_found(format!("`{v}`"))
                .with_expected(if wildcard {
                    "a DNS name, `*` allowed"
                } else {
                    "a DNS name"
                });
            r.push(d);
        }
    }
}

/// Checks the L7 parts of one allow `toPorts[]` entry. `zero_port` tells whether a port is 0 (all ports).
pub(super) fn check_port_rule(
    r: &mut Reporter<'_>,
    path: &FieldPath,
    pr: &PortRule,
    dir: Dir,
    zero_port: bool,
) {
    let rules = pr.rules.as_ref();
    let has = |v: Option<usize>| v.is_some_and(|n| n > 0);
    let (http, kafka, dns) = (
        has(rules.and_then(|l| l.http.as_ref().map(Vec::len))),
        has(rules.and_then(|l| l.kafka.as_ref().map(Vec::len))),
        has(rules.and_then(|l| l.dns.as_ref().map(Vec::len))),
    );
    let l7proto = rules.is_some_and(|l| l.l7proto.as_deref().is_some_and(|p| !p.is_empty()));
    let any_l7 = http || kafka || dns || l7proto;
    let rules_path = path.key("rules");
    let bad = |r: &mut Reporter<'_>, p: &FieldPath, target: Target, msg: &str| {
        let d = r.at(
            crate::frontend::diagnostic::Severity::Error,
            codes::BAD_L7,
            p,
            target,
            msg.to_string(),
        );
        r.push(d);
    };
    if let Some(l) = rules {
        let kinds = [
            l.http.is_some(),
            l.kafka.is_some(),
            l.dns.is_some(),
            l7proto,
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if kinds > 1 {
            bad(
                r,
                &rules_path,
                Target::Key,
                "multiple L7 protocol rule types in one port rule",
            );
        }
        if l.l7.is_some() && !l7proto {
            bad(
                r,
                &rules_path.key("l7"),
                Target::Key,
                "`l7` may only be given together with `l7proto`",
            );
        }
        if dns && dir == Dir::Ingress {
            bad(
                r,
                &rules_path.key("dns"),
                Target::Key,
                "DNS rules are not allowed on ingress",
            );
        }
        if l.dns.is_some() && pr.ports.as_ref().is_none_or(Vec::is_empty) {
            bad(
                r,
                &rules_path.key("dns"),
                Target::Key,
                "port 53 must be specified for DNS rules",
            );
        }
        for (i, f) in l.dns.iter().flatten().enumerate() {
            check_fqdn(r, &rules_path.key("dns").index(i), f);
        }
    }
    if any_l7 {
        if zero_port {
            bad(
                r,
                &rules_path,
                Target::Key,
                "L7 rules can not be used when a port is 0",
            );
        }
        if !dns {
            for (i, p) in pr.ports.iter().flatten().enumerate() {
                let proto = L4Protocol::parse_cilium(p.protocol.as_deref().unwrap_or(""));
                if proto.is_some() && proto != Some(L4Protocol::Tcp) {
                    let msg = format!(
                        "L7 rules can only apply to TCP (not {}) except for DNS rules",
                        p.protocol
                            .as_deref()
                            .filter(|s| !s.is_empty())
                            .unwrap_or("ANY")
                    );
                    bad(
                        r,
                        &path.key("ports").index(i).key("protocol"),
                        Target::Value,
                        &msg,
                    );
                }
            }
        }
    }
    if let Some(l) = &pr.listener {
        if dir == Dir::Ingress {
            bad(
                r,
                &path.key("listener"),
                Target::Key,
                &format!("listener is not allowed on ingress ({})", l.name),
            );
        }
        if any_l7 {
            bad(
                r,
                &path.key("listener"),
                Target::Key,
                &format!("listener is not allowed with L7 rules ({})", l.name),
            );
        }
    }
    if let Some(names) = &pr.server_names {
        if !names.is_empty() && any_l7 && pr.terminating_tls.is_none() {
            bad(
                r,
                &path.key("serverNames"),
                Target::Key,
                "serverNames are not allowed with L7 rules without TLS termination",
            );
        }
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() {
                bad(
                    r,
                    &path.key("serverNames").index(i),
                    Target::Value,
                    "empty server name",
                );
            }
        }
    }
}
