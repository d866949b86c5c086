//! The agent's endpoint → host-side interface table.
//!
//! In: a file of `namespace/pod: ifname` lines (`#` comments, blank lines ignored; YAML-compatible).
//! Out: [`Interfaces`], re-read on every apply so that a new pod can be wired without a restart.

use std::collections::BTreeMap;
use std::path::Path;

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

#[cfg(test)]
mod tests {
    use super::*;

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
