//! Checks shared by several kinds (label selectors) and the checks of CiliumLocalRedirectPolicy and the
//! inventory kinds (Service, Pod, workloads).
//!
//! In: typed objects. Out: diagnostics via the [`Reporter`].
use super::net::check_ip;
use super::ports::is_iana_svc_name;
use super::report::Reporter;
use crate::frontend::diagnostic::{Severity, codes};
use crate::frontend::model::{
    CiliumLocalRedirectPolicy, Container, CronJob, IntOrString, LabelSelector, LrpPort, Pod,
    PodSpec, SelectorOperator, Service, Workload,
};
use crate::frontend::path::{FieldPath, Target};

/// `matchExpressions`: `In`/`NotIn` need values, `Exists`/`DoesNotExist` take none; keys are non-empty.
pub(super) fn check_selector(r: &mut Reporter<'_>, path: &FieldPath, s: &LabelSelector) {
    for key in s.match_labels.iter().flatten().map(|(k, _)| k) {
        if key.is_empty() {
            let d = r
                .error_key(
                    codes::BAD_SELECTOR,
                    &path.key("matchLabels").key(key),
                    "empty label key",
                )
                .with_expected("a label key");
            r.push(d);
        }
    }
    for (i, e) in s.match_expressions.iter().flatten().enumerate() {
        let p = path.key("matchExpressions").index(i);
        let values = e.values.as_ref().map_or(0, Vec::len);
        let needs_values = matches!(e.operator, SelectorOperator::In | SelectorOperator::NotIn);
        if e.key.is_empty() {
            let d = r
                .error(codes::BAD_SELECTOR, &p.key("key"), "empty label key")
                .with_expected("a label key");
            r.push(d);
        }
        if needs_values && values == 0 {
            let d = r
                .error(
                    codes::BAD_SELECTOR,
                    &p,
                    format!("operator {:?} needs at least one value", e.operator),
                )
                .with_expected("a non-empty `values` list");
            r.push(d);
        } else if !needs_values && values > 0 {
            let d = r
                .error(
                    codes::BAD_SELECTOR,
                    &p.key("values"),
                    format!("operator {:?} takes no values", e.operator),
                )
                .with_expected("no `values`");
            r.push(d);
        }
    }
}

/// CiliumLocalRedirectPolicy: exactly one frontend matcher, valid IP, ports, and named ports when several.
pub(super) fn check_lrp(r: &mut Reporter<'_>, p: &CiliumLocalRedirectPolicy) {
    let spec = FieldPath::default().key("spec");
    let fe = &p.spec.redirect_frontend;
    let fe_path = spec.key("redirectFrontend");
    if fe.address_matcher.is_some() == fe.service_matcher.is_some() {
        let d = r
            .error(
                codes::ONE_OF,
                &fe_path,
                "redirectFrontend must set exactly one of `addressMatcher`, `serviceMatcher`",
            )
            .with_expected("exactly one of `addressMatcher`, `serviceMatcher`");
        r.push(d);
    }
    if let Some(a) = &fe.address_matcher {
        let ap = fe_path.key("addressMatcher");
        check_ip(r, &ap.key("ip"), &a.ip);
        check_lrp_ports(r, &ap.key("toPorts"), &a.to_ports);
    }
    if let Some(s) = &fe.service_matcher
        && let Some(ports) = &s.to_ports
    {
        check_lrp_ports(r, &fe_path.key("serviceMatcher").key("toPorts"), ports);
    }
    let be = spec.key("redirectBackend");
    check_selector(
        r,
        &be.key("localEndpointSelector"),
        &p.spec.redirect_backend.local_endpoint_selector,
    );
    check_lrp_ports(r, &be.key("toPorts"), &p.spec.redirect_backend.to_ports);
}

fn check_lrp_ports(r: &mut Reporter<'_>, path: &FieldPath, ports: &[LrpPort]) {
    for (i, port) in ports.iter().enumerate() {
        let p = path.index(i);
        if !matches!(port.protocol.as_str(), "TCP" | "UDP") {
            let d = r
                .error(
                    codes::UNKNOWN_PROTOCOL,
                    &p.key("protocol"),
                    format!("unknown protocol `{}`", port.protocol),
                )
                .with_found(format!("`{}`", port.protocol))
                .with_expected("TCP or UDP");
            r.push(d);
        }
        if !port
            .port
            .parse::<u32>()
            .is_ok_and(|n| (1..=65535).contains(&n))
        {
            let d = r
                .error(
                    codes::PORT_OUT_OF_RANGE,
                    &p.key("port"),
                    format!("invalid port `{}`", port.port),
                )
                .with_found(format!("`{}`", port.port))
                .with_expected("a port number 1..=65535");
            r.push(d);
        }
        if ports.len() > 1 && port.name.as_deref().is_none_or(str::is_empty) {
            let d = r
                .error(
                    codes::MISSING_FIELD,
                    &p,
                    "ports must be named when several are given",
                )
                .with_expected("`name` (frontend and backend ports are paired by name)");
            r.push(d);
        }
    }
}

/// Service: port numbers and named target ports.
pub(super) fn check_service(r: &mut Reporter<'_>, s: &Service) {
    let ports = FieldPath::default().key("spec").key("ports");
    for (i, p) in s.spec.ports.iter().flatten().enumerate() {
        let pp = ports.index(i);
        if !(1..=65535).contains(&p.port) {
            let d = r
                .error(
                    codes::PORT_OUT_OF_RANGE,
                    &pp.key("port"),
                    format!("port {} is out of range", p.port),
                )
                .with_found(p.port.to_string())
                .with_expected("1..=65535");
            r.push(d);
        }
        match &p.target_port {
            Some(IntOrString::Int(n)) if !(0..=65535).contains(n) => {
                let d = r
                    .error(
                        codes::PORT_OUT_OF_RANGE,
                        &pp.key("targetPort"),
                        format!("targetPort {n} is out of range"),
                    )
                    .with_found(n.to_string())
                    .with_expected("1..=65535");
                r.push(d);
            }
            Some(IntOrString::String(name))
                if !is_iana_svc_name(name) && name.parse::<u16>().is_err() =>
            {
                let d = r
                    .error(
                        codes::BAD_PORT_NAME,
                        &pp.key("targetPort"),
                        format!("`{name}` is not a valid port name"),
                    )
                    .with_found(format!("`{name}`"))
                    .with_expected("a port number or an IANA service name");
                r.push(d);
            }
            _ => {}
        }
    }
    if let Some(ip) = &s.spec.cluster_ip
        && !ip.is_empty()
        && ip != "None"
    {
        check_ip(r, &FieldPath::default().key("spec").key("clusterIP"), ip);
    }
}

pub(super) fn check_pod(r: &mut Reporter<'_>, p: &Pod) {
    check_pod_spec(r, &FieldPath::default().key("spec"), &p.spec);
    if let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.as_ref())
        && !ip.is_empty()
    {
        check_ip(r, &FieldPath::default().key("status").key("podIP"), ip);
    }
}

pub(super) fn check_workload(r: &mut Reporter<'_>, w: &Workload) {
    let spec = FieldPath::default().key("spec");
    if let Some(sel) = &w.spec.selector {
        check_selector(r, &spec.key("selector"), sel);
    }
    check_pod_spec(r, &spec.key("template").key("spec"), &w.spec.template.spec);
}

pub(super) fn check_cronjob(r: &mut Reporter<'_>, c: &CronJob) {
    let spec = FieldPath::default()
        .key("spec")
        .key("jobTemplate")
        .key("spec");
    check_pod_spec(
        r,
        &spec.key("template").key("spec"),
        &c.spec.job_template.spec.template.spec,
    );
}

fn check_pod_spec(r: &mut Reporter<'_>, path: &FieldPath, spec: &PodSpec) {
    let lists: [(&str, &[Container]); 2] = [
        ("containers", &spec.containers),
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or(&[]),
        ),
    ];
    for (field, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            for (j, port) in c.ports.iter().flatten().enumerate() {
                let pp = path.key(field).index(i).key("ports").index(j);
                if port.container_port == 0 {
                    let d = r
                        .at(
                            Severity::Warning,
                            codes::INCOMPLETE_ENTRY,
                            &pp,
                            Target::Value,
                            "container port has no `containerPort`; entry ignored",
                        )
                        .with_expected("`containerPort` 1..=65535");
                    r.push(d);
                } else if !(1..=65535).contains(&port.container_port) {
                    let d = r
                        .error(
                            codes::PORT_OUT_OF_RANGE,
                            &pp.key("containerPort"),
                            format!("containerPort {} is out of range", port.container_port),
                        )
                        .with_found(port.container_port.to_string())
                        .with_expected("1..=65535");
                    r.push(d);
                }
                if let Some(name) = &port.name
                    && !is_iana_svc_name(name)
                {
                    let d = r
                        .error(
                            codes::BAD_PORT_NAME,
                            &pp.key("name"),
                            format!("`{name}` is not a valid port name"),
                        )
                        .with_found(format!("`{name}`"))
                        .with_expected("1-15 letters, digits and '-', at least one letter");
                    r.push(d);
                }
            }
        }
    }
}
