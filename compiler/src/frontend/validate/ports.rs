//! Port and protocol checks for Cilium `toPorts[].ports[]` and NetworkPolicy `ports[]`.
//!
//! In: the port entries. Out: diagnostics for ports out of range, bad port names, `endPort` problems and
//! unknown protocols, following Cilium's `PortProtocol.Validate` and Kubernetes' NetworkPolicy validation.
use super::report::Reporter;
use crate::frontend::diagnostic::codes;
use crate::frontend::model::{IntOrString, L4Protocol, NetworkPolicyPort, PortProtocol};
use crate::frontend::path::FieldPath;

/// IANA service name rules (RFC 6335 §5.1) as Cilium's `iana.IsSvcName` applies them: 1-15 characters of
/// letters, digits and '-', at least one letter, no leading/trailing '-' and no "--".
pub fn is_iana_svc_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 15
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes.iter().any(|b| b.is_ascii_alphabetic())
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
        && !name.contains("--")
}

const PORT_NAME_RULES: &str = "a port number 0..=65535 or an IANA service name (1-15 letters, digits and '-', at least one letter)";

/// What a valid Cilium port entry turned out to be.
pub(super) struct CheckedPort {
    pub is_zero: bool,
}

/// Checks one Cilium `ports[]` entry at `path`.
pub(super) fn check_cilium_port(
    r: &mut Reporter<'_>,
    path: &FieldPath,
    pp: &PortProtocol,
    has_dns: bool,
) -> CheckedPort {
    let protocol_text = pp.protocol.as_deref().unwrap_or("");
    let protocol = L4Protocol::parse_cilium(protocol_text);
    if protocol.is_none() {
        let d = r
            .error(
                codes::UNKNOWN_PROTOCOL,
                &path.key("protocol"),
                format!("unknown protocol `{protocol_text}`"),
            )
            .with_found(format!("`{protocol_text}`"))
            .with_expected("one of TCP, UDP, SCTP, ANY (or VRRP, IGMP, GRE, IPIP, IPV6, ESP, AH)")
            .with_note("ICMP is matched with `icmps`, not `toPorts`");
        r.push(d);
    }
    let extended = protocol.is_some_and(|p| {
        !matches!(
            p,
            L4Protocol::Tcp | L4Protocol::Udp | L4Protocol::Sctp | L4Protocol::Any
        )
    });
    let port_text = pp.port.as_deref().unwrap_or("");
    let mut number = None;
    let mut named = false;
    if port_text.is_empty() {
        // Cilium: "port must be specified" unless extended IP protocols are enabled.
        if !extended {
            let d = r
                .error(codes::MISSING_FIELD, path, "port must be specified")
                .with_expected("`port` (use \"0\" for all ports)");
            r.push(d);
        }
    } else if is_iana_svc_name(port_text) {
        named = true;
    } else if port_text.bytes().all(|b| b.is_ascii_digit()) {
        match port_text.parse::<u64>() {
            Ok(n) if n <= 65535 => number = Some(n),
            _ => {
                let d = r
                    .error(
                        codes::PORT_OUT_OF_RANGE,
                        &path.key("port"),
                        format!("port {port_text} is out of range"),
                    )
                    .with_found(port_text.to_string())
                    .with_expected("0..=65535");
                r.push(d);
            }
        }
    } else {
        let d = r
            .error(
                codes::BAD_PORT_NAME,
                &path.key("port"),
                format!("`{port_text}` is neither a port number nor a valid port name"),
            )
            .with_found(format!("`{port_text}`"))
            .with_expected(PORT_NAME_RULES);
        r.push(d);
    }
    if extended && (named || number.is_some_and(|n| n != 0)) {
        let d = r
            .error(
                codes::BAD_PORT_RANGE,
                &path.key("port"),
                format!("protocol {protocol_text} has no ports"),
            )
            .with_expected("port empty or \"0\"");
        r.push(d);
    }
    let end = pp.end_port.unwrap_or(0);
    let mut is_range = false;
    if pp.end_port.is_some() {
        let end_path = path.key("endPort");
        if !(0..=65535).contains(&end) {
            let d = r
                .error(
                    codes::PORT_OUT_OF_RANGE,
                    &end_path,
                    format!("endPort {end} is out of range"),
                )
                .with_found(end.to_string())
                .with_expected("0..=65535");
            r.push(d);
        } else if named && end != 0 {
            let d = r
                .error(
                    codes::END_PORT_WITH_NAMED_PORT,
                    &end_path,
                    format!("endPort with named port `{port_text}`"),
                )
                .with_expected("a numeric `port` (port ranges are not supported with named ports)");
            r.push(d);
        } else if let Some(start) = number
            && start != 0
            && end != 0
            && (end as u64) < start
        {
            let d = r
                .error(
                    codes::END_PORT_BEFORE_PORT,
                    &end_path,
                    format!("endPort {end} is smaller than port {start}"),
                )
                .with_found(end.to_string())
                .with_expected(format!("an endPort >= {start}"));
            r.push(d);
        } else if let Some(start) = number {
            is_range = start != 0 && (end as u64) > start;
        }
    }
    if has_dns && is_range {
        let d = r
            .error(
                codes::BAD_PORT_RANGE,
                &path.key("endPort"),
                "DNS rules do not support port ranges",
            )
            .with_expected("a single port (53)");
        r.push(d);
    }
    CheckedPort {
        is_zero: number == Some(0),
    }
}

/// Checks one NetworkPolicy `ports[]` entry at `path`.
pub(super) fn check_k8s_port(r: &mut Reporter<'_>, path: &FieldPath, p: &NetworkPolicyPort) {
    if let Some(proto) = &p.protocol
        && L4Protocol::parse_k8s(proto).is_none()
    {
        let d = r
            .error(
                codes::UNKNOWN_PROTOCOL,
                &path.key("protocol"),
                format!("unknown protocol `{proto}`"),
            )
            .with_found(format!("`{proto}`"))
            .with_expected("one of TCP, UDP, SCTP");
        r.push(d);
    }
    let mut number = None;
    match &p.port {
        Some(IntOrString::Int(n)) => {
            if (1..=65535).contains(n) {
                number = Some(*n);
            } else {
                let d = r
                    .error(
                        codes::PORT_OUT_OF_RANGE,
                        &path.key("port"),
                        format!("port {n} is out of range"),
                    )
                    .with_found(n.to_string())
                    .with_expected("1..=65535");
                r.push(d);
            }
        }
        // Kubernetes port names are lower case (IsValidPortName).
        Some(IntOrString::String(name))
            if !is_iana_svc_name(name) || name.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            let d = r
                .error(codes::BAD_PORT_NAME, &path.key("port"), format!("`{name}` is not a valid port name"))
                .with_found(format!("`{name}`"))
                .with_expected("1-15 lower-case letters, digits and '-', at least one letter (a quoted number is a name)");
            r.push(d);
        }
        Some(IntOrString::String(_)) => {}
        None => {}
    }
    if let Some(end) = p.end_port {
        let end_path = path.key("endPort");
        match (&p.port, number) {
            (None, _) => {
                let d = r
                    .error(codes::MISSING_FIELD, &end_path, "endPort requires `port`")
                    .with_expected("a numeric `port`");
                r.push(d);
            }
            (Some(IntOrString::String(name)), _) => {
                let d = r
                    .error(
                        codes::END_PORT_WITH_NAMED_PORT,
                        &end_path,
                        format!("endPort with named port `{name}`"),
                    )
                    .with_expected("a numeric `port`");
                r.push(d);
            }
            (_, Some(_)) if !(1..=65535).contains(&end) => {
                let d = r
                    .error(
                        codes::PORT_OUT_OF_RANGE,
                        &end_path,
                        format!("endPort {end} is out of range"),
                    )
                    .with_found(end.to_string())
                    .with_expected("1..=65535");
                r.push(d);
            }
            (_, Some(start)) if end < start => {
                let d = r
                    .error(
                        codes::END_PORT_BEFORE_PORT,
                        &end_path,
                        format!("endPort {end} is smaller than port {start}"),
                    )
                    .with_found(end.to_string())
                    .with_expected(format!("an endPort >= {start}"));
                r.push(d);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iana_names() {
        for ok in ["http", "http-8080", "dns-tcp", "a", "H2C", "0x10"] {
            assert!(is_iana_svc_name(ok), "{ok}");
        }
        for bad in [
            "",
            "80",
            "-http",
            "http-",
            "ht--tp",
            "http_alt",
            "averyveryverylongname",
        ] {
            assert!(!is_iana_svc_name(bad), "{bad}");
        }
    }
}
