//! The agent's configuration: the endpoint → host-side interface table and how tc programs are
//! attached.
//!
//! In: a file of `namespace/pod: ifname` lines (`#` comments, blank lines ignored; YAML-compatible),
//! the manifest endpoints' `interface` (from the `ciliumc.io/interface` annotation), and the
//! `--tc-attach` option. Out: [`Interfaces`] (re-read on every apply so that a new pod can be
//! wired without a restart), [`interface_for`], [`TcAttach`].

use std::collections::BTreeMap;
use std::path::Path;

use ciliumc_ir::manifest::ManifestEndpoint;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected `namespace/pod: ifname`")]
    Syntax { path: String, line: usize },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interfaces(pub BTreeMap<String, String>);

impl Interfaces {
    pub fn parse(text: &str, path: &str) -> Result<Interfaces, ConfigError> {
        let mut map = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let Some((ep, ifname)) = line.split_once(':') else {
                return Err(ConfigError::Syntax {
                    path: path.into(),
                    line: i + 1,
                });
            };
            let ep = ep.trim().trim_matches('"');
            let ifname = ifname.trim().trim_matches('"');
            if !ep.contains('/') || ifname.is_empty() || ifname.len() > 15 {
                return Err(ConfigError::Syntax {
                    path: path.into(),
                    line: i + 1,
                });
            }
            map.insert(ep.to_string(), ifname.to_string());
        }
        Ok(Interfaces(map))
    }

    pub fn load(path: &Path) -> Result<Interfaces, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Interfaces::parse(&text, &path.display().to_string())
    }

    pub fn get(&self, endpoint: &str) -> Option<&str> {
        self.0.get(endpoint).map(String::as_str)
    }
}

/// Where an endpoint's interface name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterfaceSource {
    /// The agent's `--interfaces` file.
    File,
    /// The manifest endpoint's `interface` (the `ciliumc.io/interface` annotation).
    Annotation,
}

/// The host-side interface of `ep`: the interfaces file's entry when there is one (the node's
/// configuration wins over what the cluster objects say), else the manifest's `interface`.
pub fn interface_for<'a>(
    ifaces: &'a Interfaces,
    ep: &'a ManifestEndpoint,
) -> Option<(&'a str, InterfaceSource)> {
    ifaces
        .get(&ep.name)
        .map(|i| (i, InterfaceSource::File))
        .or_else(|| {
            ep.interface
                .as_deref()
                .map(|i| (i, InterfaceSource::Annotation))
        })
}

/// How tc programs are attached (`--tc-attach`). Existing attachments keep their kind: a swap
/// always replaces the program in the attachment it has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TcAttach {
    /// tcx links where the kernel has them (Linux ≥ 6.6), else clsact.
    #[default]
    Auto,
    /// tcx links (`BPF_LINK_CREATE` with `BPF_TCX_INGRESS`/`BPF_TCX_EGRESS`), pinned.
    Tcx,
    /// A clsact qdisc and cls_bpf filters in direct-action mode (netlink), as before 6.6.
    Clsact,
}

impl std::str::FromStr for TcAttach {
    type Err = String;

    fn from_str(s: &str) -> Result<TcAttach, String> {
        match s {
            "auto" => Ok(TcAttach::Auto),
            "tcx" => Ok(TcAttach::Tcx),
            "clsact" => Ok(TcAttach::Clsact),
            other => Err(format!(
                "unknown tc attach mode {other:?} (auto, tcx or clsact)"
            )),
        }
    }
}

impl std::fmt::Display for TcAttach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TcAttach::Auto => "auto",
            TcAttach::Tcx => "tcx",
            TcAttach::Clsact => "clsact",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(name: &str, interface: Option<&str>) -> ManifestEndpoint {
        ManifestEndpoint {
            name: name.into(),
            namespace: "default".into(),
            pod: name.trim_start_matches("default/").into(),
            node: None,
            identity: 256,
            ipv4: None,
            ipv6: None,
            object: "bpf/x.o".into(),
            interface: interface.map(Into::into),
            programs: Vec::new(),
        }
    }

    #[test]
    fn interface_comes_from_the_file_first_then_the_annotation() {
        let file = Interfaces::parse("default/a: veth-file\n", "f").unwrap();
        let a = endpoint("default/a", Some("veth-ann"));
        let b = endpoint("default/b", Some("veth-b"));
        let c = endpoint("default/c", None);
        assert_eq!(
            interface_for(&file, &a),
            Some(("veth-file", InterfaceSource::File))
        );
        assert_eq!(
            interface_for(&file, &b),
            Some(("veth-b", InterfaceSource::Annotation))
        );
        assert_eq!(interface_for(&file, &c), None);
        assert_eq!(
            interface_for(&Interfaces::default(), &a),
            Some(("veth-ann", InterfaceSource::Annotation))
        );
    }

    #[test]
    fn tc_attach_modes_parse_and_print() {
        for m in [TcAttach::Auto, TcAttach::Tcx, TcAttach::Clsact] {
            assert_eq!(m.to_string().parse::<TcAttach>(), Ok(m));
        }
        assert!("cls_bpf".parse::<TcAttach>().is_err());
    }

    #[test]
    fn parses_lines_and_comments() {
        let i = Interfaces::parse(
            "# x\ndefault/a: veth1\n\n\"default/b\": \"veth2\" # c\n",
            "f",
        )
        .unwrap();
        assert_eq!(i.get("default/a"), Some("veth1"));
        assert_eq!(i.get("default/b"), Some("veth2"));
        assert_eq!(i.get("default/c"), None);
    }

    #[test]
    fn rejects_lines_without_endpoint() {
        assert!(Interfaces::parse("veth1\n", "f").is_err());
        assert!(Interfaces::parse("pod: veth1\n", "f").is_err());
    }
}
