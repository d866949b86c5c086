//! The VM on hand-written programs in real ELF objects (our writer: map and call relocations as
//! libbpf sees them): instruction semantics, maps through helpers, bpf-to-bpf calls, tail calls,
//! ring buffers, context writes — and the error cases (out-of-bounds and NULL accesses, unknown
//! helpers, the step limit), which must be errors, never panics.

use ciliumc_targets::asm::assemble;
use ciliumc_targets::elf::{MapDef, ObjectWriter, TypeDesc};
use ciliumc_targets::isa::{Insn, PseudoKind, encode};
use ciliumc_targets::program::{FunctionCode, Reloc, RelocTarget};
use ciliumc_targets::vm::{SkbContext, Vm, VmError};

/// A function from assembly: `ld_pseudo rX, 0x1, N` loads map `maps[N]`; `call pc-0x1` calls the
/// next name in `calls` (a `.text` subprogram).
fn func(name: &str, section: &str, text: &str, maps: &[&str], calls: &[&str]) -> FunctionCode {
    let insns = assemble(text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut relocs = Vec::new();
    let (mut slot, mut next_call) = (0usize, 0usize);
    for i in &insns {
        match i {
            Insn::LdPseudo {
                kind: PseudoKind::MapFd,
                imm,
                ..
            } => relocs.push(Reloc {
                insn: slot,
                target: RelocTarget::Map(maps[*imm as usize].to_string()),
            }),
            Insn::CallLocal { imm: -1 } => {
                relocs.push(Reloc {
                    insn: slot,
                    target: RelocTarget::Subprogram(calls[next_call].to_string()),
                });
                next_call += 1;
            }
            _ => {}
        }
        slot += i.slots();
    }
    let insns = encode(&insns)
        .into_iter()
        .map(|mut r| {
            // The writer expects map loads with imm 0 (the loader patches the fd).
            if r.code == 0x18 && r.src == 1 {
                r.imm = 0;
            }
            r
        })
        .collect();
    FunctionCode {
        name: name.into(),
        section: section.into(),
        insns,
        relocs,
        line_info: Vec::new(),
    }
}

fn object(functions: Vec<FunctionCode>, maps: Vec<MapDef>) -> Vec<u8> {
    ObjectWriter::new()
        .functions(functions)
        .maps(maps)
        .write()
        .expect("object")
}

fn vm_of(text: &str, maps: Vec<MapDef>) -> Vm {
    let names: Vec<String> = maps.iter().map(|m| m.name.clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let f = func("prog", "classifier", text, &names, &[]);
    Vm::from_object(&object(vec![f], maps)).expect("VM loads")
}

fn packet(len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| i as u8).collect();
    if len >= 14 {
        p[12] = 0x08;
        p[13] = 0x00;
    }
    p
}

const PARSE_ETHERTYPE: &str = "
    r2 = *(u32 *)(r1 + 0x4c)
    r3 = *(u32 *)(r1 + 0x50)
    r4 = r2
    r4 += 0xe
    if r4 > r3 goto drop
    r0 = *(u16 *)(r2 + 0xc)
    r0 = be16 r0
    exit
drop:
    r0 = 0x2
    exit
";

#[test]
fn reads_the_packet_through_checked_pointers() {
    let mut vm = vm_of(PARSE_ETHERTYPE, vec![]);
    assert_eq!(vm.programs(), vec!["prog"]);
    assert_eq!(vm.run("prog", &packet(60)).unwrap().ret, 0x0800);
    assert_eq!(vm.run("prog", &packet(13)).unwrap().ret, 2);
    assert!(matches!(
        vm.run("nope", &packet(60)),
        Err(VmError::NoProgram(_))
    ));
}

#[test]
fn unchecked_packet_read_past_the_end_is_an_error() {
    let mut vm = vm_of(
        "r2 = *(u32 *)(r1 + 0x4c)
         r0 = *(u8 *)(r2 + 0x64)
         exit",
        vec![],
    );
    assert_eq!(vm.run("prog", &packet(200)).unwrap().ret, 100);
    match vm.run("prog", &packet(20)) {
        Err(VmError::OutOfBounds { region, at, .. }) => {
            assert_eq!(region, "the packet");
            assert_eq!((at.section.as_str(), at.slot), ("classifier", 1));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stack_accesses_outside_the_frame_are_errors() {
    let mut vm = vm_of("r0 = *(u64 *)(r10 + 0x0)\nexit", vec![]);
    assert!(matches!(
        vm.run("prog", &packet(60)),
        Err(VmError::OutOfBounds { .. })
    ));
    let mut vm = vm_of("*(u64 *)(r10 - 0x208) = r1\nr0 = 0x0\nexit", vec![]);
    assert!(matches!(
        vm.run("prog", &packet(60)),
        Err(VmError::OutOfBounds { .. })
    ));
    let mut vm = vm_of(
        "*(u64 *)(r10 - 0x200) = r1\nr0 = *(u64 *)(r10 - 0x200)\nexit",
        vec![],
    );
    assert!(vm.run("prog", &packet(60)).is_ok());
}

#[test]
fn null_map_value_dereference_is_an_error() {
    let mut vm = vm_of(
        "*(u32 *)(r10 - 0x4) = 0x7
         r2 = r10
         r2 += -0x4
         ld_pseudo r1, 0x1, 0x0
         call 0x1
         r0 = *(u32 *)(r0 + 0x0)
         exit",
        vec![MapDef::hash("h", TypeDesc::U32, TypeDesc::U32, 8)],
    );
    match vm.run("prog", &packet(60)) {
        Err(VmError::OutOfBounds { region, .. }) => assert!(region.contains("NULL"), "{region}"),
        other => panic!("{other:?}"),
    }
    vm.fill_map(
        "h",
        &[(7u32.to_le_bytes().to_vec(), 99u32.to_le_bytes().to_vec())],
    )
    .unwrap();
    assert_eq!(vm.run("prog", &packet(60)).unwrap().ret, 99);
}

#[test]
fn unknown_helpers_kfuncs_and_endless_loops_are_errors() {
    let mut vm = vm_of("call 0x3e7\nexit", vec![]);
    assert_eq!(vm.unsupported_helpers(), vec![999]);
    assert!(matches!(
        vm.run("prog", &packet(60)),
        Err(VmError::UnknownHelper { id: 999, .. })
    ));
    let mut vm = vm_of("call kfunc 0x5\nexit", vec![]);
    assert!(matches!(
        vm.run("prog", &packet(60)),
        Err(VmError::Fault { .. })
    ));
    let mut vm = vm_of("top:\nr0 += 0x1\ngoto top\nexit", vec![]);
    vm.set_step_limit(10_000);
    assert_eq!(vm.run("prog", &packet(60)), Err(VmError::StepLimit(10_000)));
}

#[test]
fn map_values_written_through_pointers_persist_across_runs() {
    let counter = "
        *(u32 *)(r10 - 0x4) = 0x0
        r2 = r10
        r2 += -0x4
        ld_pseudo r1, 0x1, 0x0
        call 0x1
        if r0 == 0x0 goto out
        r1 = 0x1
        lock *(u64 *)(r0 + 0x0) += r1
        r0 = *(u64 *)(r0 + 0x0)
        exit
    out:
        r0 = 0x0
        exit";
    let mut vm = vm_of(counter, vec![MapDef::array("counter", TypeDesc::U64, 1)]);
    for want in 1..=3 {
        assert_eq!(vm.run("prog", &packet(60)).unwrap().ret, want);
    }
    assert_eq!(
        vm.map("counter").unwrap().get(&0u32.to_le_bytes()),
        Some(&3u64.to_le_bytes()[..])
    );
}

#[test]
fn hash_update_from_a_program_honours_flags() {
    // update(key 5, value 0x11, BPF_NOEXIST): 0 the first time, -EEXIST after.
    let text = "
        *(u32 *)(r10 - 0x4) = 0x5
        *(u32 *)(r10 - 0x8) = 0x11
        r2 = r10
        r2 += -0x4
        r3 = r10
        r3 += -0x8
        r4 = 0x1
        ld_pseudo r1, 0x1, 0x0
        call 0x2
        exit";
    let mut vm = vm_of(
        text,
        vec![MapDef::hash("h", TypeDesc::U32, TypeDesc::U32, 4)],
    );
    assert_eq!(vm.run("prog", &packet(60)).unwrap().ret, 0);
    assert_eq!(vm.run("prog", &packet(60)).unwrap().ret as i64, -17);
    assert_eq!(
        vm.map("h").unwrap().get(&5u32.to_le_bytes()),
        Some(&0x11u32.to_le_bytes()[..])
    );
}

#[test]
fn ring_buffer_records_come_back_in_order_and_query_counts_bytes() {
    let text = "
        *(u64 *)(r10 - 0x8) = 0x41
        ld_pseudo r1, 0x1, 0x0
        r2 = r10
        r2 += -0x8
        r3 = 0x8
        r4 = 0x0
        call 0x82
        ld_pseudo r1, 0x1, 0x0
        r2 = 0x4
        r3 = 0x0
        call 0x83
        if r0 == 0x0 goto out
        *(u32 *)(r0 + 0x0) = 0x42
        r1 = r0
        r2 = 0x0
        call 0x84
        ld_pseudo r1, 0x1, 0x0
        r2 = 0x0
        call 0x86
        exit
    out:
        r0 = 0x1
        exit";
    let mut vm = vm_of(text, vec![MapDef::ringbuf("events", 4096)]);
    let run = vm.run("prog", &packet(60)).unwrap();
    assert_eq!(
        run.events,
        vec![
            0x41u64.to_le_bytes().to_vec(),
            0x42u32.to_le_bytes().to_vec()
        ]
    );
    assert_eq!(
        run.ret,
        16 + 16,
        "two records of 8 + 8 bytes each, not yet consumed"
    );
    assert_eq!(
        vm.run("prog", &packet(60)).unwrap().ret,
        32,
        "drained between runs"
    );
}

#[test]
fn writing_a_ring_record_after_submit_is_an_error() {
    let text = "
        ld_pseudo r1, 0x1, 0x0
        r2 = 0x8
        r3 = 0x0
        call 0x83
        if r0 == 0x0 goto out
        r6 = r0
        r1 = r0
        r2 = 0x0
        call 0x84
        *(u32 *)(r6 + 0x0) = 0x1
    out:
        r0 = 0x0
        exit";
    let mut vm = vm_of(text, vec![MapDef::ringbuf("events", 4096)]);
    assert!(matches!(
        vm.run("prog", &packet(60)),
        Err(VmError::Fault { .. })
    ));
}

#[test]
fn subprogram_calls_keep_callee_saved_registers() {
    let main = func(
        "prog",
        "classifier",
        "r6 = 0x64
         r1 = 0x15
         call pc-0x1
         r0 += r6
         exit",
        &[],
        &["double"],
    );
    let sub = func(
        "double",
        ".text",
        "r6 = 0x7
         *(u64 *)(r10 - 0x8) = r6
         r0 = r1
         r0 *= 0x2
         exit",
        &[],
        &[],
    );
    let mut vm = Vm::from_object(&object(vec![main, sub], vec![])).unwrap();
    assert_eq!(vm.run("prog", &packet(60)).unwrap().ret, 142);
}

#[test]
fn tail_calls_replace_the_program_and_fall_through_when_empty() {
    let first = func(
        "first",
        "classifier",
        "r2 = 0x0
         ld_pseudo r2, 0x1, 0x0
         r3 = 0x0
         call 0xc
         r0 = 0x1
         exit",
        &["jumps"],
        &[],
    );
    let second = func("second", "classifier", "r0 = 0x7\nexit", &[], &[]);
    let bytes = object(vec![first, second], vec![MapDef::prog_array("jumps", 4)]);
    let mut vm = Vm::from_object(&bytes).unwrap();
    assert_eq!(vm.run("first", &packet(60)).unwrap().ret, 1, "empty slot");
    vm.set_tail_call("jumps", 0, "second").unwrap();
    assert_eq!(vm.run("first", &packet(60)).unwrap().ret, 7);
    assert!(vm.set_tail_call("jumps", 9, "second").is_err());
    assert!(vm.set_tail_call("jumps", 1, "missing").is_err());
}

#[test]
fn long_jumps_and_alu_semantics_match_the_kernel() {
    let mut vm = vm_of(
        "r0 = 0x5
         r1 = 0x0
         r0 /= r1
         r2 = 0x9
         r2 %= r1
         r0 += r2
         w3 = -0x1
         r0 += r3
         r4 = -0x8
         r4 s>>= 0x1
         r0 += r4
         gotol skip
         r0 = 0x0
    skip:
         exit",
        vec![],
    );
    // 0 (div by 0) + 9 (mod by 0 keeps) + 0xffffffff (w3 zero-extended) + (-4).
    assert_eq!(
        vm.run("prog", &packet(60)).unwrap().ret,
        9u64 + 0xffff_ffff - 4
    );
}

#[test]
fn context_writes_are_limited_to_the_writable_fields() {
    let mut vm = vm_of("r2 = 0x2a\n*(u32 *)(r1 + 0x8) = r2\nr0 = 0x0\nexit", vec![]);
    let run = vm.run("prog", &packet(60)).unwrap();
    assert_eq!(run.ctx.mark, 42);
    let mut vm = vm_of("r2 = 0x0\n*(u32 *)(r1 + 0x4c) = r2\nr0 = 0x0\nexit", vec![]);
    assert!(matches!(
        vm.run("prog", &packet(60)),
        Err(VmError::Fault { .. })
    ));
    let mut vm = vm_of("r0 = *(u32 *)(r1 + 0x5c)\nexit", vec![]);
    assert!(matches!(
        vm.run("prog", &packet(60)),
        Err(VmError::Fault { .. })
    ));
    let mut vm = vm_of("r0 = *(u32 *)(r1 + 0x10)\nexit", vec![]);
    let ctx = SkbContext::default();
    assert_eq!(vm.run_with("prog", &packet(60), &ctx).unwrap().ret, 0x0008);
}

#[test]
fn skb_load_bytes_past_the_end_zeroes_the_buffer_and_fails() {
    let text = "
        *(u64 *)(r10 - 0x8) = r10
        r2 = 0xc
        r3 = r10
        r3 += -0x8
        r4 = 0x8
        call 0x1a
        r6 = r0
        r0 = *(u64 *)(r10 - 0x8)
        if r6 == 0x0 goto out
        r0 = r6
    out:
        exit";
    let mut vm = vm_of(text, vec![]);
    let p = packet(60);
    let want = u64::from_le_bytes(p[12..20].try_into().unwrap());
    assert_eq!(vm.run("prog", &p).unwrap().ret, want);
    assert_eq!(vm.run("prog", &packet(16)).unwrap().ret as i64, -14);
}

#[test]
fn garbage_objects_are_refused_not_panicked_on() {
    assert!(Vm::from_object(b"").is_err());
    assert!(Vm::from_object(b"\x7fELF not really").is_err());
    let good = object(
        vec![func("prog", "classifier", PARSE_ETHERTYPE, &[], &[])],
        vec![],
    );
    for cut in (0..good.len()).step_by(37) {
        let _ = Vm::from_object(&good[..cut]);
    }
}
