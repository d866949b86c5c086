//! Unit tests of the passes: liveness, register allocation, instruction selection choices and the
//! linker (fall-through, inversion, relaxation, bounds-checked fixups), plus module-level checks.

use ciliumc_targets::codegen::emit::{EBlock, ETerm, Emitted};
use ciliumc_targets::codegen::link::link;
use ciliumc_targets::codegen::liveness::{liveness, reverse_postorder};
use ciliumc_targets::codegen::{
    AluOp, BlockId, CodegenError, CodegenOptions, Cond, FunctionBuilder, LinkOptions, ParamKind,
    Size, compile, compile_with, regcheck,
};
use ciliumc_targets::hooks::{self, Hook};
use ciliumc_targets::isa::RawInsn;
use ciliumc_targets::isa::opcode::*;
use ciliumc_targets::program::RelocTarget;

const EXIT: u8 = BPF_JMP | BPF_EXIT;
const GOTOL: u8 = BPF_JMP32 | BPF_JA;

#[test]
fn liveness_over_a_diamond() {
    let mut f = FunctionBuilder::new("l", Hook::TcIngress);
    let a = f.load_ctx("mark");
    let b = f.load_ctx("len");
    let (t, e, j) = (f.block(), f.block(), f.block());
    f.branch(Cond::Eq, a, 0, t, e);
    f.switch_to(t);
    let x = f.vreg();
    f.assign(x, b);
    f.jump(j);
    f.switch_to(e);
    f.assign_const(x, 3);
    f.jump(j);
    f.switch_to(j);
    f.ret(x);
    let func = f.finish().unwrap();
    let rpo = reverse_postorder(&func).unwrap();
    assert_eq!(rpo[0], BlockId(0));
    assert_eq!(rpo.len(), 4);
    assert_eq!(rpo[1], e, "the else side follows the branch");
    let live = liveness(&func, &rpo);
    let set = |b: BlockId| live.live_in(b).collect::<Vec<_>>();
    assert_eq!(set(t), vec![b.0 as usize]);
    assert_eq!(set(e), Vec::<usize>::new());
    assert_eq!(set(j), vec![x.0 as usize]);
    assert_eq!(
        set(BlockId(0)),
        vec![0],
        "only the ctx parameter is live into the entry"
    );
}

#[test]
fn unreachable_blocks_are_not_emitted() {
    let mut f = FunctionBuilder::new("u", Hook::TcIngress);
    let dead = f.block();
    f.ret(1);
    f.switch_to(dead);
    f.ret(2);
    let code = compile(&[f.finish().unwrap()]).unwrap();
    assert_eq!(code[0].insns.len(), 2, "{:?}", code[0].insns);
}

#[test]
fn values_live_across_calls_get_callee_saved_registers() {
    let mut f = FunctionBuilder::new("c", Hook::TcIngress);
    let vals: Vec<_> = (0..4).map(|i| f.load_ctx(&format!("cb[{i}]"))).collect();
    let t = f.call(&hooks::KTIME_GET_NS, &[]);
    let mut acc = t;
    for v in vals {
        acc = f.alu(AluOp::Add, acc, v);
    }
    f.ret(acc);
    let code = compile(&[f.finish().unwrap()]).unwrap();
    let insns = &code[0].insns;
    let call = insns
        .iter()
        .position(|i| i.code == BPF_JMP | BPF_CALL)
        .unwrap();
    // Every register written before the call and read after it is r6..r9.
    for i in &insns[call + 1..] {
        if i.code & 0x07 == BPF_ALU64 && i.code & BPF_X != 0 && i.code & 0xf0 == BPF_ADD {
            assert!(
                (6..=9).contains(&i.src),
                "read of r{} after the call",
                i.src
            );
        }
    }
    regcheck::check_defined(insns, 1).unwrap();
}

#[test]
fn pressure_across_a_call_spills_with_aligned_64_bit_slots() {
    let mut f = FunctionBuilder::new("s", Hook::TcIngress);
    let vals: Vec<_> = (0..12).map(|i| f.constant(1000 + i)).collect();
    let t = f.call(&hooks::GET_PRANDOM_U32, &[]);
    let mut acc = t;
    for v in &vals {
        acc = f.alu(AluOp::Xor, acc, *v);
    }
    f.ret(acc);
    let (code, stats) = compile_with(&[f.finish().unwrap()], CodegenOptions::default()).unwrap();
    assert!(
        stats[0].spills >= 8,
        "12 values across a call with 4 callee-saved registers: {stats:?}"
    );
    for i in &code[0].insns {
        let is_stack = (i.code & 0x07 == BPF_STX && i.dst == BPF_REG_FP)
            || (i.code & 0x07 == BPF_LDX && i.src == BPF_REG_FP);
        if is_stack {
            assert_eq!(i.code & 0x18, BPF_DW, "spill with a 64-bit access");
            assert_eq!(i.off % 8, 0, "8-aligned slot");
            assert!(i.off < 0 && i.off >= -512);
        }
    }
    regcheck::check_defined(&code[0].insns, 1).unwrap();
}

/// Spill-slot loads into `reg` in `insns`, as (slot offset, index).
fn reloads(insns: &[RawInsn]) -> Vec<(u8, i16)> {
    insns
        .iter()
        .filter(|i| i.code == BPF_LDX | BPF_MEM | BPF_DW && i.src == BPF_REG_FP)
        .map(|i| (i.dst, i.off))
        .collect()
}

#[test]
fn a_spilled_value_is_reloaded_once_per_block_until_its_register_or_slot_changes() {
    // 12 values live across a call: most are spilled. Each is then read three times in a row:
    // one reload serves the three reads. (Correctness of the elision under random programs,
    // spills included, is `codegen_random`'s.)
    let mut f = FunctionBuilder::new("r", Hook::TcIngress);
    let vals: Vec<_> = (0..12).map(|i| f.constant(1000 + i)).collect();
    let mut acc = f.call(&hooks::GET_PRANDOM_U32, &[]);
    for v in &vals {
        for _ in 0..3 {
            acc = f.alu(AluOp::Add, acc, *v);
        }
    }
    f.ret(acc);
    let (code, stats) = compile_with(&[f.finish().unwrap()], CodegenOptions::default()).unwrap();
    let insns = &code[0].insns;
    regcheck::check_defined(insns, 1).unwrap();
    assert!(stats[0].spills >= 8, "{stats:?}");
    let mut per_slot: std::collections::BTreeMap<i16, usize> = Default::default();
    for (_, off) in reloads(insns) {
        *per_slot.entry(off).or_default() += 1;
    }
    assert!(per_slot.len() >= 8, "{per_slot:?}");
    assert!(
        per_slot.values().all(|&n| n == 1),
        "each slot reloaded once: {per_slot:?}"
    );
    // And never a load of a slot into a register that already holds it (the function is one
    // block; a store to the frame or a call ends what a register is known to hold).
    let mut mirrors: [Option<i16>; 11] = [None; 11];
    for i in insns {
        if i.code == BPF_LDX | BPF_MEM | BPF_DW && i.src == BPF_REG_FP {
            assert_ne!(
                mirrors[i.dst as usize],
                Some(i.off),
                "redundant reload {i:?}"
            );
            mirrors[i.dst as usize] = Some(i.off);
        } else if matches!(i.code & 0x07, BPF_STX | BPF_ST) || i.code == BPF_JMP | BPF_CALL {
            mirrors = [None; 11];
        } else if matches!(i.code & 0x07, BPF_ALU | BPF_ALU64 | BPF_LDX | BPF_LD) {
            mirrors[(i.dst & 0x0f) as usize] = None;
        }
    }
}

#[test]
fn a_value_dead_between_two_lives_leaves_its_register_to_others() {
    // `side` is live from the first block to the second, dead through the third (where nine
    // values are live at once, every register r1–r9), and live again from the fourth to the end.
    // As one interval it would need a tenth register there and something would spill; with holes
    // nothing does.
    let mut f = FunctionBuilder::new("holes", Hook::TcIngress);
    let side = f.vreg();
    let first = f.load_ctx("mark");
    f.assign(side, first);
    let (used, busy, again, end) = (f.block(), f.block(), f.block(), f.block());
    f.jump(used);
    f.switch_to(used);
    let slot = f.stack_slot(8);
    f.stack_store(slot, 0, side, Size::DW);
    f.jump(busy);
    f.switch_to(busy);
    let fields = [
        "len",
        "pkt_type",
        "mark",
        "queue_mapping",
        "protocol",
        "priority",
        "ifindex",
        "hash",
        "tc_index",
    ];
    let vals: Vec<_> = fields.iter().map(|n| f.load_ctx(n)).collect();
    let mut acc = vals[0];
    for v in &vals[1..] {
        acc = f.alu(AluOp::Add, acc, *v);
    }
    f.jump(again);
    f.switch_to(again);
    let twice = f.alu(AluOp::Add, acc, acc);
    f.assign(side, twice);
    f.jump(end);
    f.switch_to(end);
    let back = f.stack_load(slot, 0, Size::DW);
    let out = f.alu(AluOp::Xor, side, back);
    f.ret(out);
    let (code, stats) = compile_with(&[f.finish().unwrap()], CodegenOptions::default()).unwrap();
    regcheck::check_defined(&code[0].insns, 1).unwrap();
    assert_eq!(stats[0].spills, 0, "{stats:?}");
}

#[test]
fn frame_overflow_fails_cleanly() {
    let mut f = FunctionBuilder::new("big", Hook::TcIngress);
    let a = f.stack_slot(300);
    let b = f.stack_slot(300);
    f.stack_store(a, 0, 1, Size::DW);
    f.stack_store(b, 0, 1, Size::DW);
    f.ret(0);
    let e = compile(&[f.finish().unwrap()]).unwrap_err();
    assert!(
        matches!(
            e,
            CodegenError::StackOverflow {
                needed: 608,
                limit: 512,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn call_chain_stack_and_recursion_are_checked() {
    let sub = |name: &str, callee: Option<&str>, slot: u32| {
        let mut f = FunctionBuilder::subprogram(name, Hook::TcIngress, &[ParamKind::Scalar]);
        let s = f.stack_slot(slot);
        let p = f.param(0).unwrap();
        f.stack_store(s, 0, p, Size::DW);
        let r = match callee {
            Some(c) => f.call_local(c, &[p]),
            None => f.stack_load(s, 0, Size::DW),
        };
        f.ret(r);
        f.finish().unwrap()
    };
    let entry = |callee: &str| {
        let mut f = FunctionBuilder::new("main", Hook::TcIngress);
        let m = f.load_ctx("mark");
        let r = f.call_local(callee, &[m]);
        f.ret(r);
        f.finish().unwrap()
    };
    compile(&[entry("a"), sub("a", Some("b"), 200), sub("b", None, 200)]).unwrap();
    let e = compile(&[entry("a"), sub("a", Some("b"), 300), sub("b", None, 300)]).unwrap_err();
    assert!(
        matches!(&e, CodegenError::CallChainStack { chain, .. } if chain == "main -> a -> b"),
        "{e}"
    );
    let e = compile(&[entry("a"), sub("a", Some("b"), 8), sub("b", Some("a"), 8)]).unwrap_err();
    assert!(
        matches!(&e, CodegenError::Recursion { chain } if chain == "main -> a -> b -> a"),
        "{e}"
    );
}

#[test]
fn subprogram_calls_become_relocations() {
    let mut g = FunctionBuilder::subprogram(
        "helper_fn",
        Hook::TcIngress,
        &[ParamKind::Ctx, ParamKind::Scalar],
    );
    let c = g.ctx();
    let m = g.load_ctx("mark");
    let p = g.param(1).unwrap();
    let s = g.alu(AluOp::Add, m, p);
    let _ = c;
    g.ret(s);
    let mut f = FunctionBuilder::new("main", Hook::TcIngress);
    let ctx = f.ctx();
    let k = f.constant(5);
    let r = f.call_local("helper_fn", &[ctx, k]);
    f.ret(r);
    let code = compile(&[f.finish().unwrap(), g.finish().unwrap()]).unwrap();
    assert_eq!(code[1].section, ".text");
    assert_eq!(code[0].section, "classifier");
    let rel = &code[0].relocs[0];
    assert_eq!(rel.target, RelocTarget::Subprogram("helper_fn".into()));
    let call = code[0].insns[rel.insn];
    assert_eq!(
        (call.code, call.src, call.imm),
        (BPF_JMP | BPF_CALL, BPF_PSEUDO_CALL, -1)
    );
    regcheck::check_defined(&code[1].insns, 2).unwrap();
}

#[test]
fn map_references_are_ld_imm64_relocations() {
    let mut f = FunctionBuilder::new("m", Hook::TcIngress);
    let map = f.map(ciliumc_targets::codegen::MapDecl {
        name: "ipcache".into(),
        kind: ciliumc_targets::codegen::MapKind::Hash,
        key_size: 4,
        value_size: 4,
    });
    let key = f.stack_slot(4);
    f.stack_store(key, 0, 7, Size::W);
    let kp = f.stack_addr(key);
    let v = f.map_lookup(map, kp);
    let (miss, hit) = (f.block(), f.block());
    f.branch_null(v, miss, hit);
    f.switch_to(hit);
    let x = f.load(v, 0, Size::W);
    f.ret(x);
    f.switch_to(miss);
    f.ret(0);
    let code = compile(&[f.finish().unwrap()]).unwrap();
    assert_eq!(code[0].relocs.len(), 1);
    let i = code[0].insns[code[0].relocs[0].insn];
    assert_eq!(
        (i.code, i.src, i.dst),
        (BPF_LD | BPF_DW | BPF_IMM, BPF_PSEUDO_MAP_FD, 1),
        "loaded straight into r1"
    );
    regcheck::check_defined(&code[0].insns, 1).unwrap();
}

#[test]
fn link_constants_are_bound_after_codegen_and_refused_unbound() {
    // The constant is read after a helper call, so its value must survive in a register or slot
    // the allocator picked without knowing it: binding only patches the `mov32` immediate.
    let build = || {
        let mut f = FunctionBuilder::new("k", Hook::TcIngress);
        let id = f.link_const("local_identity");
        let stamp = f.call(&hooks::KTIME_GET_NS, &[]);
        let sum = f.alu(AluOp::Add, stamp, id);
        f.ret(sum);
        f.finish().unwrap()
    };
    let code = compile(&[build()]).unwrap();
    let mut bound = code[0].clone();
    assert_eq!(
        code[0].relocs,
        vec![ciliumc_targets::program::Reloc {
            insn: code[0].relocs[0].insn,
            target: RelocTarget::Constant("local_identity".into()),
        }]
    );
    let at = code[0].relocs[0].insn;
    assert_eq!(
        (code[0].insns[at].code, code[0].insns[at].imm),
        (BPF_ALU | BPF_MOV | BPF_K, 0)
    );
    assert_eq!(
        bound.bind_constant("other", 5),
        0,
        "another name binds nothing"
    );
    assert_eq!(bound.bind_constant("local_identity", 0xdead_beef), 1);
    assert!(bound.relocs.is_empty());
    assert_eq!(
        bound.insns[at].imm as u32, 0xdead_beef,
        "mov32 zero-extends the bits"
    );
    for (i, (a, b)) in code[0].insns.iter().zip(&bound.insns).enumerate() {
        assert!(i == at || a == b, "only the immediate changes (slot {i})");
    }
    // The same function compiles to the same code whatever the value bound later.
    assert_eq!(compile(&[build()]).unwrap(), code);
    let unbound = ciliumc_targets::elf::ObjectWriter::new()
        .functions(code.clone())
        .write();
    assert!(
        matches!(
            unbound,
            Err(ciliumc_targets::elf::ElfError::UnboundConstant { ref name, .. }) if name == "local_identity"
        ),
        "{unbound:?}"
    );
    ciliumc_targets::elf::ObjectWriter::new()
        .functions([bound])
        .write()
        .unwrap();
}

#[test]
fn u32_constants_use_32_bit_subregisters() {
    let mut f = FunctionBuilder::new("k", Hook::TcIngress);
    let addr = f.load_ctx("mark");
    let (yes, no) = (f.block(), f.block());
    f.branch(Cond::Eq, addr, 0xc000_0201u32, yes, no); // 192.0.2.1 as a host-order u32
    f.switch_to(yes);
    let big = f.constant(0x8000_0000);
    f.ret(big);
    f.switch_to(no);
    f.ret(0);
    let code = compile(&[f.finish().unwrap()]).unwrap();
    let insns = &code[0].insns;
    assert!(
        insns.iter().all(|i| i.code != BPF_LD | BPF_DW | BPF_IMM),
        "no ld_imm64: {insns:?}"
    );
    assert!(insns.iter().any(|i| i.code == BPF_JMP32 | BPF_JEQ | BPF_K || i.code == BPF_JMP32 | BPF_JNE | BPF_K));
    assert!(
        insns
            .iter()
            .any(|i| i.code == BPF_ALU | BPF_MOV | BPF_K && i.imm == i32::MIN)
    );
}

#[test]
fn wide_constants_in_64_bit_compares_are_materialized() {
    let mut f = FunctionBuilder::new("k", Hook::TcIngress);
    let t = f.call(&hooks::KTIME_GET_NS, &[]); // 64 bits wide
    let (yes, no) = (f.block(), f.block());
    f.branch(Cond::Gt, t, 0x1_0000_0000i64, yes, no);
    f.switch_to(yes);
    f.ret(1);
    f.switch_to(no);
    f.ret(0);
    let code = compile(&[f.finish().unwrap()]).unwrap();
    let insns = &code[0].insns;
    assert!(insns.iter().any(|i| i.code == BPF_LD | BPF_DW | BPF_IMM));
    assert!(insns.iter().all(|i| i.code & 0x07 != BPF_JMP32));
}

/// Emitted blocks with `body` filler instructions each (plus `exit` for `ETerm::Exit`) and a map
/// relocation on each block's first instruction.
fn emitted(specs: Vec<(u32, usize, ETerm)>) -> Emitted {
    let nop = RawInsn {
        code: BPF_ALU64 | BPF_MOV | BPF_K,
        dst: 0,
        src: 0,
        off: 0,
        imm: 0,
    };
    let mut e = Emitted::default();
    for (id, body, term) in specs {
        let start = e.insns.len();
        e.insns.extend(std::iter::repeat_n(nop, body));
        if term == ETerm::Exit {
            e.insns.push(RawInsn {
                code: EXIT,
                ..RawInsn::default()
            });
        }
        if e.insns.len() > start {
            e.relocs.push((start, RelocTarget::Map("m".into())));
        }
        e.blocks.push(EBlock {
            id: BlockId(id),
            start,
            end: e.insns.len(),
            term,
        });
    }
    e
}

fn cond(op: u8, then_: u32, else_: u32) -> ETerm {
    ETerm::Cond {
        jmp32: false,
        op,
        dst: 1,
        src: None,
        imm: 7,
        then_: BlockId(then_),
        else_: BlockId(else_),
    }
}

#[test]
fn linker_falls_through_and_inverts() {
    let blocks = emitted(vec![
        (0, 1, cond(BPF_JEQ, 1, 2)),     // then is next: inverted to jne → 2
        (1, 1, ETerm::Jump(BlockId(2))), // jump to next: removed
        (2, 1, cond(BPF_JGT, 3, 1)),     // then=3 is next: inverted to jle → 1
        (3, 1, ETerm::Exit),
    ]);
    let code = link("f", "classifier", blocks, 4, LinkOptions::default()).unwrap();
    let i = &code.insns;
    assert_eq!(i.len(), 1 + 1 + 1 + 1 + 1 + 2);
    assert_eq!(i[1].code, BPF_JMP | BPF_JNE | BPF_K);
    assert_eq!(i[1].off, 1, "jne skips block 1 (one instruction)");
    // Block 2: then=3 is next, so the branch is inverted to jle → 1, no extra ja.
    assert_eq!(i[4].code, BPF_JMP | BPF_JLE | BPF_K);
    assert_eq!(4 + 1 + i64::from(i[4].off), 2);
    assert_eq!(
        code.relocs.iter().map(|r| r.insn).collect::<Vec<_>>(),
        vec![0, 2, 3, 5]
    );
}

#[test]
fn linker_relaxes_far_branches_to_gotol() {
    let far = 50_000;
    let blocks = emitted(vec![
        (0, 1, cond(BPF_JEQ, 3, 1)),
        (1, 1, cond(BPF_JSET, 3, 2)),
        (2, far, ETerm::Jump(BlockId(3))),
        (3, 1, ETerm::Jump(BlockId(0))), // a far backward jump too
    ]);
    let code = link(
        "f",
        "classifier",
        blocks,
        4,
        LinkOptions {
            short_jump_limit: 32767,
        },
    )
    .unwrap();
    let i = &code.insns;
    // Block 0: jne +1 over a gotol.
    assert_eq!(i[1].code, BPF_JMP | BPF_JNE | BPF_K);
    assert_eq!(i[1].off, 1);
    assert_eq!(i[2].code, GOTOL);
    // Block 1: jset +1; ja +1; gotol (JSET has no inverse).
    assert_eq!((i[4].code, i[4].off), (BPF_JMP | BPF_JSET | BPF_K, 1));
    assert_eq!((i[5].code, i[5].off), (BPF_JMP | BPF_JA, 1));
    assert_eq!(i[6].code, GOTOL);
    let block3 = 7 + far;
    assert_eq!(2 + 1 + i64::from(i[2].imm), block3 as i64);
    assert_eq!(6 + 1 + i64::from(i[6].imm), block3 as i64);
    let back = *i.last().unwrap();
    assert_eq!(back.code, GOTOL);
    assert_eq!((i.len() - 1) as i64 + 1 + i64::from(back.imm), 0);
    // Every short offset is in range.
    for (pc, x) in i.iter().enumerate() {
        if x.code & 0x07 == BPF_JMP && x.code & 0xf0 != BPF_CALL && x.code & 0xf0 != BPF_EXIT {
            let to = pc as i64 + 1 + i64::from(x.off);
            assert!((0..i.len() as i64).contains(&to));
        }
    }
}

#[test]
fn relaxation_cascades() {
    // Branches just inside the limit are pushed out of range by other branches growing.
    let limit = 10;
    let mut specs = Vec::new();
    for k in 0..8u32 {
        specs.push((k, 0, cond(BPF_JEQ, 9, k + 1)));
    }
    specs.push((8, 3, ETerm::Exit));
    specs.push((9, 0, ETerm::Exit));
    let blocks = emitted(specs);
    let code = link(
        "f",
        "classifier",
        blocks,
        10,
        LinkOptions {
            short_jump_limit: limit,
        },
    )
    .unwrap();
    let mut pc = 0;
    let i = &code.insns;
    while pc < i.len() {
        let x = i[pc];
        if x.code == GOTOL {
            assert!((pc as i64 + 1 + i64::from(x.imm)) as usize == i.len() - 1);
        } else if x.code & 0x07 == BPF_JMP && x.code & 0xf0 != BPF_EXIT {
            assert!(
                i64::from(x.off).abs() <= i64::from(limit),
                "short jump at {pc} with {}",
                x.off
            );
        }
        pc += 1;
    }
    assert!(i.iter().any(|x| x.code == GOTOL));
}

#[test]
fn jump_to_a_missing_block_is_an_error_not_a_panic() {
    let blocks = emitted(vec![(0, 1, ETerm::Jump(BlockId(5)))]);
    assert!(link("f", "classifier", blocks, 6, LinkOptions::default()).is_err());
}

#[test]
fn regcheck_catches_reads_of_clobbered_registers() {
    let ins = |code, dst, src, imm| RawInsn {
        code,
        dst,
        src,
        off: 0,
        imm,
    };
    let prog = [
        ins(BPF_ALU64 | BPF_MOV | BPF_K, 1, 0, 5),
        ins(BPF_JMP | BPF_CALL, 0, 0, 5), // ktime_get_ns clobbers r1-r5
        ins(BPF_ALU64 | BPF_MOV | BPF_X, 0, 1, 0),
        ins(EXIT, 0, 0, 0),
    ];
    let e = regcheck::check_defined(&prog, 1).unwrap_err();
    assert!(e.contains("insn 2") && e.contains("r1"), "{e}");
    let ok = [
        ins(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0),
        ins(BPF_JMP | BPF_CALL, 0, 0, 5),
        ins(BPF_ALU64 | BPF_MOV | BPF_X, 0, 6, 0),
        ins(EXIT, 0, 0, 0),
    ];
    regcheck::check_defined(&ok, 1).unwrap();
    let uninit_stack = [
        ins(BPF_LDX | BPF_MEM | BPF_DW, 0, BPF_REG_FP, 0),
        ins(EXIT, 0, 0, 0),
    ];
    let mut u = uninit_stack;
    u[0].off = -8;
    assert!(
        regcheck::check_defined(&u, 1)
            .unwrap_err()
            .contains("stack")
    );
}

#[test]
fn output_is_deterministic() {
    let cfg = ciliumc_targets::codegen::testgen::GenConfig::default();
    for seed in 0..20 {
        let m = ciliumc_targets::codegen::testgen::generate(seed, &cfg);
        assert_eq!(compile(&m).unwrap(), compile(&m).unwrap());
    }
}
