//! The agent's pinned-map sync (`runtime::agent::pinned_maps::sync_pinned_maps`) against real
//! pinned maps: generations that add and remove a pod rewrite the ipcache's bucket arrays in the
//! kernel to exactly what each manifest lists (a bucket no longer listed is zeroed), and
//! `ciliumc_ipcinfo` ends with the buckets on. The plan's order (buckets off, wait for readers,
//! buckets, flag last) is unit-tested in `pinned_maps::tests`; this runs it, membarrier included.
//!
//! Maps are created by loading the demo's first object with the agent's loader into a bpffs the
//! test mounts in a temporary directory, and unmounts (with everything pinned there) at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aya::maps::MapData;
use ciliumc_compiler::compile::{self, CompileOutput};
use ciliumc_compiler::frontend::{self, LoadOptions};
use ciliumc_compiler::lower::maps;
use ciliumc_compiler::resolve::{self, ResolveOptions};
use ciliumc_ir::manifest::Manifest;
use ciliumc_runtime::agent::{load, pinned_maps, sys};
use ciliumc_tests::kernel_or_skip;

const EXTRA_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: probe
  namespace: default
  labels:
    app: probe
spec:
  nodeName: node-1
  containers:
  - name: probe
    image: probe
status:
  podIP: 192.0.2.77
  podIPs:
  - ip: 192.0.2.77
  - ip: 2001:db8::77
"#;

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/demo")
}

fn compile_files(files: &[PathBuf]) -> CompileOutput {
    let loaded = frontend::load_with(files, &LoadOptions::default());
    assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    let cluster = resolve::resolve(&loaded.objects, &ResolveOptions::default()).expect("resolve");
    compile::compile(&cluster, "test").expect("compile")
}

/// The bpffs mount and temporary directory, removed on drop (also when an assertion fails).
struct Pins {
    dir: PathBuf,
    maps: PathBuf,
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = sys::unmount_bpffs(&self.maps);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn entries_of(manifest: &Manifest, name: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    manifest
        .maps
        .iter()
        .find(|m| m.name == name)
        .map(|m| {
            m.entries
                .iter()
                .map(|e| (unhex(&e.key), unhex(&e.value)))
                .collect()
        })
        .unwrap_or_default()
}

/// The pinned array's value at index `key` (4 little-endian bytes), read through a fresh fd.
fn pinned<const N: usize>(maps_dir: &Path, name: &str, key: &[u8]) -> Vec<u8> {
    let data = MapData::from_pin(maps_dir.join(name)).expect("open pinned map");
    let array: aya::maps::Array<MapData, [u8; N]> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).expect("an array");
    let index = u32::from_le_bytes(key.try_into().expect("4-byte key"));
    array.get(&index, 0).expect("lookup").to_vec()
}

fn pinned_value(maps_dir: &Path, name: &str, key: &[u8], value_size: usize) -> Vec<u8> {
    match value_size {
        40 => pinned::<40>(maps_dir, name, key),
        88 => pinned::<88>(maps_dir, name, key),
        16 => pinned::<16>(maps_dir, name, key),
        n => panic!("no reader for {n}-byte values"),
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn generations_rewrite_the_buckets_and_end_with_them_on() {
    let Some(_k) = kernel_or_skip!() else {
        return;
    };
    // The agent knows these maps by the runtime's copies of their names.
    assert_eq!(
        ciliumc_runtime::testrun::IPCACHE_BUCKETS,
        [maps::IPCACHE4_BUCKETS, maps::IPCACHE6_BUCKETS]
    );
    assert_eq!(ciliumc_runtime::testrun::IPCACHE_INFO, maps::IPCACHE_INFO);
    let dir = std::env::temp_dir().join(format!("ciliumc-pinned-buckets-{}", std::process::id()));
    let pins = Pins {
        maps: dir.join("maps"),
        dir: dir.clone(),
    };
    std::fs::create_dir_all(&pins.maps).expect("maps dir");
    sys::ensure_bpffs(&pins.maps).expect("mount bpffs");
    let extra = dir.join("probe.yaml");
    std::fs::write(&extra, EXTRA_POD).expect("write pod");

    let base_files = vec![demo().join("inventory.yaml"), demo().join("policy.yaml")];
    let mut more_files = base_files.clone();
    more_files.push(extra);
    let first = compile_files(&base_files);
    let second = compile_files(&more_files);
    let third = compile_files(&base_files);
    {
        let mut loader = load::new_loader(&pins.maps);
        let _objects = loader
            .load(&first.objects[0].bytes)
            .expect("create the pinned maps");
    }
    let names: BTreeSet<String> = first.manifest.maps.iter().map(|m| m.name.clone()).collect();

    let mut previous: Option<&Manifest> = None;
    for (step, out) in [&first, &second, &third].into_iter().enumerate() {
        let preexisting = if previous.is_some() {
            names.clone()
        } else {
            BTreeSet::new()
        };
        pinned_maps::sync_pinned_maps(&pins.maps, &out.manifest, previous, &preexisting)
            .unwrap_or_else(|e| panic!("apply {step}: {e}"));
        for (name, size) in [
            (maps::IPCACHE4_BUCKETS, 40usize),
            (maps::IPCACHE6_BUCKETS, 88),
        ] {
            let want = entries_of(&out.manifest, name);
            assert!(!want.is_empty(), "apply {step}: {name} has entries");
            for (k, v) in &want {
                assert_eq!(
                    &pinned_value(&pins.maps, name, k, size),
                    v,
                    "apply {step}: {name}"
                );
            }
            // Buckets an earlier generation had and this one does not are zeroed.
            for earlier in [&first, &second] {
                for k in entries_of(&earlier.manifest, name).keys() {
                    if !want.contains_key(k) {
                        assert_eq!(
                            pinned_value(&pins.maps, name, k, size),
                            vec![0u8; size],
                            "apply {step}: {name} bucket {k:?} left over"
                        );
                    }
                }
            }
        }
        let info = pinned_value(&pins.maps, maps::IPCACHE_INFO, &0u32.to_le_bytes(), 16);
        assert_eq!(
            &info[8..12],
            &1u32.to_le_bytes(),
            "apply {step}: buckets on at the end"
        );
        previous = Some(&out.manifest);
    }
    // The wait the plan makes between turning the buckets off and rewriting them is an RCU grace
    // period through membarrier; it must be available here, not replaced by the fallback pause.
    sys::wait_for_bpf_readers().expect("membarrier(MEMBARRIER_CMD_GLOBAL)");
    // The probe pod's buckets came and went.
    let probe = |out: &CompileOutput| entries_of(&out.manifest, maps::IPCACHE4_BUCKETS);
    assert_ne!(probe(&first), probe(&second), "the pod changes a bucket");
    assert_eq!(probe(&first), probe(&third));
}
