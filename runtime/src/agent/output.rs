//! A compile output directory as the agent takes it: `manifest.json` plus the objects it names,
//! read fully into memory and checked before anything in the kernel is touched.
//!
//! In: `DIR` written by `ciliumc compile`. Out: [`CompileOutput`] with per-endpoint object bytes
//! and fingerprints (equal fingerprint = nothing to reload), or a [`OutputError`] saying what is wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ciliumc_ir::manifest::{MANIFEST_FORMAT, Manifest, ManifestMap};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a ciliumc manifest: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("incompatible manifest: format {found:?}, this agent understands {MANIFEST_FORMAT:?}")]
    Format { found: String },
    #[error("incompatible manifest: {0}")]
    Invalid(String),
    #[error("corrupt object {path}: {reason}")]
    CorruptObject { path: PathBuf, reason: String },
}

/// One endpoint's object, as read.
#[derive(Debug, Clone)]
pub struct EndpointObject {
    pub bytes: Vec<u8>,
    /// sha256 over the object and everything outside it that a load depends on.
    pub fingerprint: String,
}

/// A compile output read into memory.
#[derive(Debug, Clone)]
pub struct CompileOutput {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    /// Endpoint name → object.
    pub objects: BTreeMap<String, EndpointObject>,
}

/// Maps shared by all objects and pinned by name (the ipcache, CT, events...).
pub fn is_pinned(map: &ManifestMap) -> bool {
    map.pinning == "by_name"
}

impl CompileOutput {
    pub fn read(dir: &Path) -> Result<CompileOutput, OutputError> {
        let path = dir.join("manifest.json");
        let manifest_bytes = std::fs::read(&path).map_err(|source| OutputError::Read {
            path: path.clone(),
            source,
        })?;
        let manifest: Manifest =
            serde_json::from_slice(&manifest_bytes).map_err(|source| OutputError::Parse {
                path: path.clone(),
                source,
            })?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(OutputError::Format {
                found: manifest.format,
            });
        }
        check_manifest(&manifest)?;
        // Entries of per-object maps and prog-array slots are loaded with the object: an object
        // with the same bytes but other entries must be reloaded.
        let mut extra = Sha256::new();
        for m in manifest.maps.iter().filter(|m| !is_pinned(m)) {
            extra.update(serde_json::to_vec(m).unwrap_or_default());
        }
        for t in &manifest.tail_calls {
            extra.update(serde_json::to_vec(t).unwrap_or_default());
        }
        let extra = extra.finalize();
        let mut objects = BTreeMap::new();
        for ep in &manifest.endpoints {
            let rel = Path::new(&ep.object);
            if rel.is_absolute() || rel.components().any(|c| c.as_os_str() == "..") {
                return Err(OutputError::Invalid(format!(
                    "endpoint {}: object path {:?} leaves the output directory",
                    ep.name, ep.object
                )));
            }
            let opath = dir.join(rel);
            let bytes = std::fs::read(&opath).map_err(|source| OutputError::Read {
                path: opath.clone(),
                source,
            })?;
            check_elf(&opath, &bytes)?;
            let mut h = Sha256::new();
            h.update(&bytes);
            h.update(extra);
            for p in &ep.programs {
                h.update(format!("{}:{:?}:{:?};", p.name, p.hook, p.direction).as_bytes());
            }
            objects.insert(
                ep.name.clone(),
                EndpointObject {
                    bytes,
                    fingerprint: hex::encode(h.finalize()),
                },
            );
        }
        Ok(CompileOutput {
            dir: dir.to_path_buf(),
            manifest,
            manifest_bytes,
            objects,
        })
    }

    /// Copies manifest and objects to `dest` (replacing it), so a restarted agent can reconcile
    /// against exactly what it last applied.
    pub fn save_copy(&self, dest: &Path) -> std::io::Result<()> {
        let tmp = dest.with_extension("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        std::fs::write(tmp.join("manifest.json"), &self.manifest_bytes)?;
        for ep in &self.manifest.endpoints {
            if let Some(obj) = self.objects.get(&ep.name) {
                let p = tmp.join(&ep.object);
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(p, &obj.bytes)?;
            }
        }
        if dest.exists() {
            std::fs::remove_dir_all(dest)?;
        }
        std::fs::rename(&tmp, dest)
    }
}

fn check_manifest(m: &Manifest) -> Result<(), OutputError> {
    let mut names = std::collections::BTreeSet::new();
    for ep in &m.endpoints {
        if !names.insert(&ep.name) {
            return Err(OutputError::Invalid(format!(
                "endpoint {} listed twice",
                ep.name
            )));
        }
        if ep.programs.is_empty() {
            return Err(OutputError::Invalid(format!(
                "endpoint {} has no programs",
                ep.name
            )));
        }
    }
    for map in &m.maps {
        if map.pinning != "by_name" && map.pinning != "none" {
            return Err(OutputError::Invalid(format!(
                "map {}: unknown pinning {:?}",
                map.name, map.pinning
            )));
        }
        for e in &map.entries {
            let (Ok(k), Ok(v)) = (hex::decode(&e.key), hex::decode(&e.value)) else {
                return Err(OutputError::Invalid(format!(
                    "map {}: entry is not hex",
                    map.name
                )));
            };
            if k.len() != map.key_size as usize || v.len() != map.value_size as usize {
                return Err(OutputError::Invalid(format!(
                    "map {}: entry of {}+{} bytes, map declares key {} value {}",
                    map.name,
                    k.len(),
                    v.len(),
                    map.key_size,
                    map.value_size
                )));
            }
        }
    }
    for t in &m.tail_calls {
        if !m.maps.iter().any(|x| x.name == t.map) {
            return Err(OutputError::Invalid(format!(
                "tail call into unknown map {}",
                t.map
            )));
        }
    }
    Ok(())
}

/// The cheap checks that catch a truncated or foreign file before aya's parser does.
fn check_elf(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let bad = |reason: &str| OutputError::CorruptObject {
        path: path.into(),
        reason: reason.into(),
    };
    if bytes.len() < 64 || &bytes[0..4] != b"\x7fELF" {
        return Err(bad("not an ELF file"));
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err(bad("not ELF64 little-endian"));
    }
    if u16::from_le_bytes([bytes[18], bytes[19]]) != 247 {
        return Err(bad("machine is not EM_BPF"));
    }
    let shoff = u64::from_le_bytes(bytes[40..48].try_into().unwrap_or_default());
    let shnum = u16::from_le_bytes([bytes[60], bytes[61]]) as u64;
    if shoff.saturating_add(shnum.saturating_mul(64)) > bytes.len() as u64 {
        return Err(bad("section headers past the end of the file (truncated?)"));
    }
    aya_obj_parse(bytes).map_err(|e| bad(&e))
}

fn aya_obj_parse(bytes: &[u8]) -> Result<(), String> {
    aya_obj::Object::parse(bytes)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(format: &str, entry_key: &str) -> String {
        format!(
            r#"{{"format":"{format}","inputs_digest":"00","compiler_version":"0",
            "identities":[],"endpoints":[{{"name":"default/a","namespace":"default","pod":"a",
            "node":null,"identity":256,"ipv4":"192.0.2.1","ipv6":null,"object":"bpf/a.o",
            "programs":[{{"name":"p","section":"classifier","hook":"tc-ingress","direction":"egress"}}]}}],
            "maps":[{{"name":"m","type":"hash","key_size":4,"value_size":4,"max_entries":1,"flags":0,
            "pinning":"by_name","entries":[{{"key":"{entry_key}","value":"00000000"}}]}}]}}"#
        )
    }

    fn dir_with(tag: &str, manifest: &str, object: &[u8]) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("ciliumc-output-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("bpf")).unwrap();
        std::fs::write(d.join("manifest.json"), manifest).unwrap();
        std::fs::write(d.join("bpf/a.o"), object).unwrap();
        d
    }

    #[test]
    fn refuses_other_formats_bad_entries_and_non_elf_objects() {
        let d = dir_with("fmt", &manifest("ciliumc/v0", "00000000"), b"");
        assert!(matches!(
            CompileOutput::read(&d),
            Err(OutputError::Format { .. })
        ));
        let d2 = dir_with("entry", &manifest(MANIFEST_FORMAT, "00"), b"");
        let e = CompileOutput::read(&d2).unwrap_err().to_string();
        assert!(
            e.contains("incompatible manifest") && e.contains("map m"),
            "{e}"
        );
        let d3 = dir_with(
            "elf",
            &manifest(MANIFEST_FORMAT, "00000000"),
            b"not an object at all, but long enough to have a header of sixty-four bytes",
        );
        let e = CompileOutput::read(&d3).unwrap_err().to_string();
        assert!(
            e.contains("corrupt object") && e.contains("not an ELF"),
            "{e}"
        );
        for d in [d, d2, d3] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
