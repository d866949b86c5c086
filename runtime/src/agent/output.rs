//! A compile output directory as the agent takes it: `manifest.json` plus the objects it names,
//! read fully into memory and checked before anything in the kernel is touched.
//!
//! In: `DIR` written by `ciliumc compile`. Out: [`CompileOutput`] with per-endpoint object bytes
//! and fingerprints (equal fingerprint = nothing to reload), or a [`OutputError`] saying what is wrong.
//! [`CompileOutput::save_copy`] keeps the agent's copy of the running output incrementally
//! (content-addressed objects, one atomic manifest switch).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
    /// sha256 of `bytes` alone (hex): names the object in the agent's copy.
    pub digest: String,
    /// sha256 over the object and everything outside it that a load depends on: the entries of
    /// the per-object maps it declares, its prog-array slots and its program list.
    pub fingerprint: String,
}

/// Objects already parsed by aya-obj in this process: sha256 → the map names they declare.
/// An apply that changes one endpoint among many re-reads and hashes every object (it must, to
/// know which changed) but parses only the new ones.
static PARSED: Mutex<Option<HashMap<[u8; 32], Vec<String>>>> = Mutex::new(None);
/// Bound on [`PARSED`]: about two generations of a large node; cleared when exceeded.
const PARSED_CACHE_MAX: usize = 8192;

fn parsed_maps(path: &Path, bytes: &[u8], digest: [u8; 32]) -> Result<Vec<String>, OutputError> {
    let mut cache = PARSED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(maps) = cache.as_ref().and_then(|c| c.get(&digest)) {
        return Ok(maps.clone());
    }
    check_elf_header(path, bytes)?;
    let obj = aya_obj::Object::parse(bytes).map_err(|e| OutputError::CorruptObject {
        path: path.into(),
        reason: e.to_string(),
    })?;
    let mut maps: Vec<String> = obj.maps.keys().cloned().collect();
    maps.sort();
    let c = cache.get_or_insert_with(HashMap::new);
    if c.len() >= PARSED_CACHE_MAX {
        c.clear();
    }
    c.insert(digest, maps.clone());
    Ok(maps)
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
        // with the same bytes but other entries must be reloaded. Only the maps an object
        // declares count, so that one endpoint's entries do not reload every other endpoint.
        let own_maps: BTreeMap<&str, Vec<u8>> = manifest
            .maps
            .iter()
            .filter(|m| !is_pinned(m))
            .map(|m| (m.name.as_str(), serde_json::to_vec(m).unwrap_or_default()))
            .collect();
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
            let digest: [u8; 32] = Sha256::digest(&bytes).into();
            let declared = parsed_maps(&opath, &bytes, digest)?;
            let mut h = Sha256::new();
            h.update(digest);
            for name in &declared {
                if let Some(m) = own_maps.get(name.as_str()) {
                    h.update(m);
                }
                for t in manifest.tail_calls.iter().filter(|t| &t.map == name) {
                    h.update(serde_json::to_vec(t).unwrap_or_default());
                }
            }
            for p in &ep.programs {
                h.update(format!("{}:{:?}:{:?};", p.name, p.hook, p.direction).as_bytes());
            }
            objects.insert(
                ep.name.clone(),
                EndpointObject {
                    bytes,
                    digest: hex::encode(digest),
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

    /// Keeps `dest` a copy of this output, so a restarted agent can reconcile against exactly
    /// what it last applied. Objects are stored by content (`objects/<sha256>.o`) and only
    /// those not there yet are written; the copied manifest names them. The manifest is switched
    /// with one rename after its objects are in place, and objects no manifest names any more
    /// are removed after it: a kill at any point leaves the old or the new copy, both whole.
    /// The cost is one write per changed object, not one per endpoint.
    pub fn save_copy(&self, dest: &Path) -> std::io::Result<()> {
        let objects_dir = dest.join("objects");
        std::fs::create_dir_all(&objects_dir)?;
        let mut manifest = self.manifest.clone();
        let mut keep = BTreeSet::new();
        for ep in &mut manifest.endpoints {
            let Some(obj) = self.objects.get(&ep.name) else {
                continue;
            };
            let file = format!("{}.o", obj.digest);
            let path = objects_dir.join(&file);
            if !path.exists() {
                let tmp = objects_dir.join(format!("{file}.tmp"));
                std::fs::write(&tmp, &obj.bytes)?;
                std::fs::rename(&tmp, &path)?;
            }
            ep.object = format!("objects/{file}");
            keep.insert(file);
        }
        let bytes = serde_json::to_vec(&manifest).map_err(std::io::Error::other)?;
        let tmp = dest.join("manifest.json.tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, dest.join("manifest.json"))?;
        for entry in std::fs::read_dir(&objects_dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !keep.contains(&name) {
                std::fs::remove_file(entry.path())?;
            }
        }
        // Layout of earlier versions: a full copy with objects under `bpf/`.
        let old = dest.join("bpf");
        if old.exists() {
            std::fs::remove_dir_all(old)?;
        }
        Ok(())
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
fn check_elf_header(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
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
    Ok(())
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

    /// An object with one tc program returning `ret` and a hash map named `map`.
    fn object(ret: i64, map: &str) -> Vec<u8> {
        use ciliumc_targets::codegen::{FunctionBuilder, compile};
        use ciliumc_targets::elf::{MapDef, ObjectWriter, TypeDesc};
        use ciliumc_targets::hooks::Hook;
        let mut f = FunctionBuilder::new("p", Hook::TcIngress);
        f.ret(ret);
        ObjectWriter::new()
            .functions(compile(&[f.finish().unwrap()]).unwrap())
            .map(MapDef::hash(map, TypeDesc::Bytes(4), TypeDesc::Bytes(4), 4))
            .license("GPL")
            .write()
            .unwrap()
    }

    fn two_endpoints(dir: &Path, a_ret: i64, a_entry: &str) {
        std::fs::create_dir_all(dir.join("bpf")).unwrap();
        std::fs::write(dir.join("bpf/a.o"), object(a_ret, "a_own")).unwrap();
        std::fs::write(dir.join("bpf/b.o"), object(0, "b_own")).unwrap();
        let ep = |n: &str| {
            format!(
                r#"{{"name":"default/{n}","namespace":"default","pod":"{n}","node":null,
                "identity":256,"ipv4":null,"ipv6":null,"object":"bpf/{n}.o","programs":[
                {{"name":"p","section":"classifier","hook":"tc-ingress","direction":"egress"}}]}}"#
            )
        };
        let map = |n: &str, v: &str| {
            format!(
                r#"{{"name":"{n}","type":"hash","key_size":4,"value_size":4,"max_entries":4,
                "flags":0,"pinning":"none","entries":[{{"key":"00000000","value":"{v}"}}]}}"#
            )
        };
        let m = format!(
            r#"{{"format":"{MANIFEST_FORMAT}","inputs_digest":"00","compiler_version":"0",
            "identities":[],"endpoints":[{},{}],"maps":[{},{}]}}"#,
            ep("a"),
            ep("b"),
            map("a_own", a_entry),
            map("b_own", "00000000")
        );
        std::fs::write(dir.join("manifest.json"), m).unwrap();
    }

    #[test]
    fn fingerprints_cover_only_the_maps_an_object_declares() {
        let d = std::env::temp_dir().join(format!("ciliumc-output-fp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        two_endpoints(&d, 0, "00000000");
        let before = CompileOutput::read(&d).unwrap();
        two_endpoints(&d, 0, "01000000");
        let after = CompileOutput::read(&d).unwrap();
        let fp = |o: &CompileOutput, n: &str| o.objects[n].fingerprint.clone();
        assert_ne!(fp(&before, "default/a"), fp(&after, "default/a"));
        assert_eq!(fp(&before, "default/b"), fp(&after, "default/b"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_copy_writes_only_new_objects_and_reads_back_the_same() {
        use std::os::unix::fs::MetadataExt;
        let base = std::env::temp_dir().join(format!("ciliumc-output-copy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (src, dest) = (base.join("src"), base.join("current"));
        two_endpoints(&src, 0, "00000000");
        let first = CompileOutput::read(&src).unwrap();
        first.save_copy(&dest).unwrap();
        let copy = CompileOutput::read(&dest).unwrap();
        for (n, o) in &first.objects {
            assert_eq!(copy.objects[n].fingerprint, o.fingerprint, "{n}");
        }
        let b_file = dest
            .join("objects")
            .join(format!("{}.o", first.objects["default/b"].digest));
        let b_inode = std::fs::metadata(&b_file).unwrap().ino();
        // A generation changing only a's object: b's copy is not rewritten, a's old one goes.
        two_endpoints(&src, 1, "00000000");
        let second = CompileOutput::read(&src).unwrap();
        second.save_copy(&dest).unwrap();
        assert_eq!(std::fs::metadata(&b_file).unwrap().ino(), b_inode);
        let mut files: Vec<String> = std::fs::read_dir(dest.join("objects"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        files.sort();
        let mut want: Vec<String> = second
            .objects
            .values()
            .map(|o| format!("{}.o", o.digest))
            .collect();
        want.sort();
        assert_eq!(files, want);
        let copy = CompileOutput::read(&dest).unwrap();
        assert_eq!(
            copy.objects["default/a"].fingerprint,
            second.objects["default/a"].fingerprint
        );
        let _ = std::fs::remove_dir_all(&base);
    }
}
