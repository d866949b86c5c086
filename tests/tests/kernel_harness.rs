//! The harness itself against the kernel: raw map operations, the verifier log in load errors,
//! test-run outputs, `bpftool btf dump` and `bpftool map dump` of the writer's BTF, the
//! jit-harden guard and determinism of written objects.

mod common;

use ciliumc_targets::elf::{MapDef, ObjectWriter, Pinning, TypeDesc};
use ciliumc_targets::isa::opcode::*;
use ciliumc_tests::insn::*;
use ciliumc_tests::loader::{aya_map_view, load_object_aya_pinned};
use ciliumc_tests::sys::{self, MapSpec};
use ciliumc_tests::tools::{BpffsMount, TempObject, run};
use ciliumc_tests::{JitHardenGuard, Packet, kernel_or_skip, load_object_aya, load_object_raw};
use common::*;

#[test]
fn raw_map_operations() {
    let Some(_k) = kernel_or_skip!() else { return };
    let spec = MapSpec {
        name: "t_hash".into(),
        map_type: 1,
        key_size: 4,
        value_size: 8,
        max_entries: 8,
        map_flags: 0,
    };
    let m = sys::map_create(&spec).unwrap();
    assert_eq!(m.next_key(None).unwrap(), None);
    for k in 1u32..=3 {
        m.update(
            &k.to_ne_bytes(),
            &u64::from(k * 10).to_ne_bytes(),
            sys::BPF_NOEXIST,
        )
        .unwrap();
    }
    assert!(
        m.update(&1u32.to_ne_bytes(), &0u64.to_ne_bytes(), sys::BPF_NOEXIST)
            .is_err()
    );
    let mut keys: Vec<u32> = m
        .keys()
        .unwrap()
        .iter()
        .map(|k| u32::from_ne_bytes(k[..4].try_into().unwrap()))
        .collect();
    keys.sort();
    assert_eq!(keys, vec![1, 2, 3]);
    assert_eq!(
        m.lookup(&2u32.to_ne_bytes()).unwrap(),
        Some(20u64.to_ne_bytes().to_vec())
    );
    assert!(m.delete(&2u32.to_ne_bytes()).unwrap());
    assert!(!m.delete(&2u32.to_ne_bytes()).unwrap());
    assert_eq!(m.lookup(&2u32.to_ne_bytes()).unwrap(), None);
    assert!(
        m.lookup(&[0u8; 3]).is_err(),
        "wrong key size is refused before the syscall"
    );
    let view = sys::map_view(m.view().fd).unwrap();
    assert_eq!(
        (
            view.spec.map_type,
            view.spec.key_size,
            view.spec.value_size,
            view.spec.max_entries
        ),
        (1, 4, 8, 8)
    );
    assert_eq!(view.spec.name, "t_hash");
}

/// A program that reads a packet byte without a bounds check.
fn unchecked_packet_read() -> Vec<u8> {
    let f = Asm::new()
        .push(ldx(BPF_W, R2, R1, SKB_DATA))
        .push(ldx(BPF_B, R0, R2, 0))
        .push(exit())
        .finish("prog", "classifier");
    ObjectWriter::new().function(f).write().unwrap()
}

#[test]
fn verifier_log_is_returned_verbatim() {
    let Some(_k) = kernel_or_skip!() else { return };
    let obj = unchecked_packet_read();
    let raw = load_object_raw(&obj).unwrap_err();
    let log = raw.verifier_log().expect("a verifier error");
    assert!(log.contains("invalid access to packet"), "raw log:\n{log}");
    assert!(log.contains("R2"), "the log names the register:\n{log}");
    let aya = load_object_aya(&obj).unwrap_err();
    let log = aya.verifier_log().expect("a verifier error from aya");
    assert!(log.contains("invalid access to packet"), "aya log:\n{log}");
    let file = TempObject::new(&obj).unwrap();
    let err = ciliumc_tests::bpftool_loadall(&file.path).unwrap_err();
    assert!(err.contains("invalid access to packet"), "bpftool:\n{err}");
    let err = ciliumc_tests::tc_attach_check(&file.path, "classifier").unwrap_err();
    assert!(!err.is_empty());
}

#[test]
fn verifier_stats_count_processed_instructions() {
    let Some(_k) = kernel_or_skip!() else { return };
    let short = load_object_raw(&return_constant("classifier", 1)).unwrap();
    let parse = load_object_raw(&parse_l3("classifier", SKB_DATA, SKB_DATA_END)).unwrap();
    let a = short.verifier_stats()["prog"];
    let b = parse.verifier_stats()["prog"];
    assert_eq!(a, 2, "r0 = 1; exit");
    assert!(b > a, "branches are explored: {b}");
}

#[test]
fn test_run_reports_packet_and_duration() {
    let Some(_k) = kernel_or_skip!() else { return };
    let loaded = load_object_raw(&return_constant("classifier", 3)).unwrap();
    let pkt = Packet::ipv4([192, 0, 2, 1], [198, 51, 100, 1])
        .udp(1, 2)
        .payload(b"hello")
        .build();
    let out = sys::test_run(loaded.program("prog").unwrap().fd(), &pkt, 1000).unwrap();
    assert_eq!(out.retval, 3);
    assert_eq!(out.data_out, pkt);
    assert!(out.duration_ns < 1_000_000);
    assert!(
        sys::test_run(loaded.program("prog").unwrap().fd(), &pkt[..10], 1).is_err(),
        "shorter than ETH_HLEN"
    );
}

#[test]
fn jit_harden_guard_restores_value() {
    let Some(_k) = kernel_or_skip!() else { return };
    let before = JitHardenGuard::current().unwrap();
    {
        let _g = JitHardenGuard::set(2).unwrap();
        assert_eq!(JitHardenGuard::current().unwrap(), 2);
    }
    // Another test may hold the guard now; take the lock to read a stable value.
    let _g = JitHardenGuard::set(before).unwrap();
    assert_eq!(JitHardenGuard::current().unwrap(), before);
}

#[test]
fn bpftool_dumps_btf_and_map_contents() {
    let Some(_k) = kernel_or_skip!() else { return };
    let obj = ObjectWriter::new()
        .function(
            Asm::new()
                .push(mov64_imm(R0, 0))
                .push(exit())
                .finish("prog", "classifier"),
        )
        .map(MapDef::hash("verdicts", ip4_key(), verdict_value(), 8))
        .map(MapDef::lpm_trie("prefixes", lpm_key(), TypeDesc::U32, 8))
        .map(MapDef::prog_array("jumps", 2))
        .map(MapDef::ringbuf("events", 4096))
        .write()
        .unwrap();
    let file = TempObject::new(&obj).unwrap();
    let path = file.path.to_str().unwrap();
    let dump = run("bpftool", &["btf", "dump", "file", path]).unwrap();
    for want in [
        "STRUCT 'ip4_key' size=4 vlen=1",
        "'daddr' type_id=",
        "STRUCT 'verdict' size=8 vlen=2",
        "'action' type_id=",
        "'rule' type_id=",
        "'prefixlen' type_id=",
        "VAR 'verdicts'",
        "VAR 'events'",
        "DATASEC '.maps'",
        "'key_size' type_id=",
        "FUNC 'prog'",
    ] {
        assert!(dump.contains(want), "missing `{want}` in:\n{dump}");
    }
    let c = run("bpftool", &["btf", "dump", "file", path, "format", "c"]).unwrap();
    assert!(
        c.contains("struct verdict {") && c.contains("unsigned int rule;"),
        "{c}"
    );

    // Pretty-printed map contents come from the same BTF, through libbpf and the kernel.
    let mount = BpffsMount::new().unwrap();
    let progs = mount.path.join("p");
    let maps = mount.path.join("m");
    run(
        "bpftool",
        &[
            "prog",
            "loadall",
            path,
            progs.to_str().unwrap(),
            "pinmaps",
            maps.to_str().unwrap(),
        ],
    )
    .unwrap();
    let pinned = maps.join("verdicts");
    let pinned = pinned.to_str().unwrap();
    run(
        "bpftool",
        &[
            "map", "update", "pinned", pinned, "key", "198", "51", "100", "7", "value", "1", "0",
            "0", "0", "2", "0", "0", "0",
        ],
    )
    .unwrap();
    let dumped = run("bpftool", &["map", "dump", "pinned", pinned]).unwrap();
    for want in ["\"daddr\"", "\"action\": 1", "\"rule\": 2"] {
        assert!(dumped.contains(want), "missing {want} in:\n{dumped}");
    }
}

#[test]
fn written_objects_are_deterministic() {
    // No kernel needed: the same input gives the same bytes.
    for build in [
        hash_lookup as fn() -> Vec<u8>,
        array_counter,
        lpm_lookup,
        tail_call,
        ringbuf_output,
    ] {
        assert_eq!(build(), build());
    }
    assert_eq!(bpf_to_bpf_call(true), bpf_to_bpf_call(true));
}

#[test]
fn pinned_by_name_maps_are_pinned_and_reused_by_aya() {
    let Some(_k) = kernel_or_skip!() else { return };
    let obj = ObjectWriter::new()
        .function(
            Asm::new()
                .push(mov64_imm(R0, 0))
                .push(exit())
                .finish("prog", "classifier"),
        )
        .map(MapDef::hash("shared", ip4_key(), verdict_value(), 8).with_pinning(Pinning::ByName))
        .write()
        .unwrap();
    let mount = BpffsMount::new().unwrap();
    let first = load_object_aya_pinned(&obj, &mount.path).unwrap();
    assert!(mount.path.join("shared").exists(), "map pinned by name");
    let value = [1, 0, 0, 0, 2, 0, 0, 0];
    aya_map_view(&first, "shared")
        .unwrap()
        .update(&[198, 51, 100, 9], &value, 0)
        .unwrap();
    drop(first);
    // A second load adopts the pinned map and sees the entry.
    let second = load_object_aya_pinned(&obj, &mount.path).unwrap();
    let seen = aya_map_view(&second, "shared")
        .unwrap()
        .lookup(&[198, 51, 100, 9])
        .unwrap();
    assert_eq!(seen.as_deref(), Some(&value[..]));
}
