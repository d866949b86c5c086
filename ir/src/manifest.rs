//! `manifest.json` (format `ciliumc/v1`): the contract between `ciliumc compile` and any loader.
//!
//! In: filled by the compiler. Out: serde + JSON Schema (`ciliumc schema manifest`) types per
//! ARCHITECTURE.md "Output directory": identities, endpoints with their programs, every map with
//! its initial entries, prog-array slots (`tail_calls`), and the rule table that maps rule ids in
//! flow events back to the policy and source location they came from.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::{Direction, RuleOrigin};

/// Value of [`Manifest::format`].
pub const MANIFEST_FORMAT: &str = "ciliumc/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Manifest {
    /// Always `ciliumc/v1`.
    pub format: String,
    /// sha256 (hex) over the normalized inputs.
    pub inputs_digest: String,
    pub compiler_version: String,
    pub identities: Vec<ManifestIdentity>,
    pub endpoints: Vec<ManifestEndpoint>,
    pub maps: Vec<ManifestMap>,
    #[serde(default)]
    pub tail_calls: Vec<TailCall>,
    /// Rule id → policy and source location, for flow events.
    #[serde(default)]
    pub rules: Vec<ManifestRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ManifestIdentity {
    pub id: u32,
    /// `source:key=value` strings, sorted.
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ManifestEndpoint {
    /// `ns/pod`.
    pub name: String,
    pub namespace: String,
    pub pod: String,
    pub node: Option<String>,
    pub identity: u32,
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
    /// Path relative to the output directory, `bpf/<file>.o`.
    pub object: String,
    /// Host-side interface to attach the programs to, from the pod's (or external workload's)
    /// `ciliumc.io/interface` annotation. Absent when not annotated (and then omitted from the
    /// JSON, so manifests without annotations are unchanged); a loader's own configuration
    /// takes precedence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    pub programs: Vec<ManifestProgram>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Hook {
    #[serde(rename = "tc-ingress")]
    TcIngress,
    #[serde(rename = "tc-egress")]
    TcEgress,
    #[serde(rename = "xdp")]
    Xdp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ManifestProgram {
    /// ELF symbol of the program.
    pub name: String,
    /// ELF section.
    pub section: String,
    pub hook: Hook,
    /// Policy direction it enforces for the endpoint: ingress = traffic to it.
    pub direction: Direction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ManifestMap {
    /// Symbol in `.maps`, as libbpf names it.
    pub name: String,
    /// Map type name, e.g. `lpm_trie`, `hash`, `prog_array`, `ringbuf`.
    #[serde(rename = "type")]
    pub map_type: String,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    /// `none` or `by_name` (libbpf `LIBBPF_PIN_BY_NAME`).
    pub pinning: String,
    #[serde(default)]
    pub entries: Vec<MapEntry>,
}

/// One initial entry, hex bytes: integers little-endian, addresses in network order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MapEntry {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TailCall {
    /// Prog-array map name.
    pub map: String,
    pub index: u32,
    /// Program (ELF symbol) of the same object.
    pub program: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ManifestRule {
    pub id: u32,
    pub policy_kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub section: String,
    pub rule_index: usize,
    /// `file:line:column`, when known.
    pub source: Option<String>,
}

impl ManifestRule {
    pub fn from_origin(id: u32, origin: &RuleOrigin) -> Self {
        ManifestRule {
            id,
            policy_kind: origin.policy_kind.clone(),
            namespace: origin.namespace.clone(),
            name: origin.name.clone(),
            section: origin.section.clone(),
            rule_index: origin.rule_index,
            source: origin.source.as_ref().map(|s| s.to_string()),
        }
    }
}

/// JSON Schema of the manifest.
pub fn manifest_schema() -> schemars::Schema {
    schemars::schema_for!(Manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_with_architecture_field_names() {
        let m = Manifest {
            format: MANIFEST_FORMAT.into(),
            inputs_digest: "00".into(),
            compiler_version: "0.1.0".into(),
            identities: vec![ManifestIdentity {
                id: 256,
                labels: vec!["k8s:app=web".into()],
            }],
            endpoints: vec![ManifestEndpoint {
                name: "default/web".into(),
                namespace: "default".into(),
                pod: "web".into(),
                node: None,
                identity: 256,
                ipv4: Some("10.0.0.1".into()),
                ipv6: None,
                object: "bpf/default_web.o".into(),
                interface: None,
                programs: vec![ManifestProgram {
                    name: "ingress".into(),
                    section: "classifier/ingress".into(),
                    hook: Hook::TcIngress,
                    direction: Direction::Ingress,
                }],
            }],
            maps: vec![ManifestMap {
                name: "ipcache".into(),
                map_type: "lpm_trie".into(),
                key_size: 24,
                value_size: 4,
                max_entries: 512000,
                flags: 1,
                pinning: "by_name".into(),
                entries: vec![MapEntry {
                    key: "00".into(),
                    value: "00".into(),
                }],
            }],
            tail_calls: vec![TailCall {
                map: "calls".into(),
                index: 0,
                program: "p1".into(),
            }],
            rules: vec![],
        };
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["endpoints"][0]["programs"][0]["hook"], "tc-ingress");
        assert_eq!(json["endpoints"][0]["programs"][0]["direction"], "ingress");
        assert_eq!(json["maps"][0]["type"], "lpm_trie");
        let back: Manifest = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
        let schema = serde_json::to_value(manifest_schema()).unwrap();
        assert!(schema["properties"]["tail_calls"].is_object());
    }

    #[test]
    fn endpoint_interface_is_optional_and_omitted_when_absent() {
        let text = r#"{"name":"ns/a","namespace":"ns","pod":"a","node":null,"identity":256,
            "ipv4":null,"ipv6":null,"object":"bpf/a.o","programs":[]}"#;
        let mut ep: ManifestEndpoint = serde_json::from_str(text).unwrap();
        assert_eq!(ep.interface, None);
        assert!(!serde_json::to_string(&ep).unwrap().contains("interface"));
        ep.interface = Some("lxc1".into());
        let json = serde_json::to_value(&ep).unwrap();
        assert_eq!(json["interface"], "lxc1");
        assert_eq!(
            serde_json::from_value::<ManifestEndpoint>(json).unwrap(),
            ep
        );
        let schema = serde_json::to_value(manifest_schema()).unwrap();
        let endpoint = &schema["$defs"]["ManifestEndpoint"];
        assert!(
            endpoint["properties"]["interface"].is_object(),
            "{endpoint}"
        );
        assert!(
            !endpoint["required"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "interface")
        );
    }
}
