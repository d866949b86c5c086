//! A policy-shaped module with one annotation per rule, shared by the annotation tests: enough
//! values live across a helper call to force spills, and (with a small short-jump limit) long
//! jumps between rules. Each rule's code holds a marker instruction (`^= 0x1000 + r`) and a marker
//! branch (`== 0x2000 + r`), so a test can find where the rule's code really is.

#![allow(dead_code)]

use ciliumc_targets::codegen::{
    AluOp, Annotation, CodegenOptions, Cond, Function, FunctionBuilder, LinkOptions, MapDecl,
    MapKind, ParamKind, Size, compile_with,
};
use ciliumc_targets::elf::{MapDef, ObjectWriter, TypeDesc};
use ciliumc_targets::hooks::{Hook, TC_ACT_OK, TC_ACT_SHOT};
use ciliumc_targets::isa::RawInsn;
use ciliumc_targets::isa::opcode::*;
use ciliumc_targets::program::FunctionCode;

pub const XOR_BASE: i32 = 0x1000;
pub const BRANCH_BASE: i32 = 0x2000;
pub const POLICY_FILE: &str = "testdata/demo/policy.yaml";

pub fn rule_annotation(r: usize) -> Annotation {
    Annotation {
        file: POLICY_FILE.into(),
        line: 10 + 4 * r as u32,
        column: 5,
        text: format!(
            "rule {r}: CiliumNetworkPolicy default/rule{r} ingress[0] ({POLICY_FILE}:{}:5)",
            10 + 4 * r
        ),
    }
}

pub fn branch_annotation(r: usize) -> Annotation {
    Annotation {
        file: POLICY_FILE.into(),
        line: 12 + 4 * r as u32,
        column: 7,
        text: format!("rule {r}: toPorts check"),
    }
}

pub fn prologue_annotation() -> Annotation {
    Annotation {
        file: POLICY_FILE.into(),
        line: 1,
        column: 1,
        text: "prologue: parse IPv4, look up the source identity".into(),
    }
}

/// The module: entry `annotated` (tc) and the unannotated `.text` subprogram `mix`.
pub fn annotated_module(rules: usize, live_values: usize) -> Vec<Function> {
    let mut f = FunctionBuilder::new("annotated", Hook::TcIngress);
    f.annotate(prologue_annotation());
    let drop = f.block();
    let allow = f.block();
    let data = f.load_ctx("data");
    let end = f.load_ctx("data_end");
    f.check_packet_bounds(data, end, 64, drop);
    let proto = f.load(data, 23, Size::B);
    let saddr = f.load(data, 26, Size::W);
    // Values live across the helper call and every rule: more than r6-r9 hold, so some spill.
    let live: Vec<_> = (0..live_values)
        .map(|k| f.load(data, 30 + k as i32, Size::B))
        .collect();
    let ipcache = f.map(MapDecl {
        name: "ipcache".into(),
        kind: MapKind::Hash,
        key_size: 4,
        value_size: 8,
    });
    let key = f.stack_slot(8);
    f.stack_store(key, 0, saddr, Size::W);
    let key_ptr = f.stack_addr(key);
    let (hit, miss, rules_start) = (f.block(), f.block(), f.block());
    let found = f.map_lookup(ipcache, key_ptr);
    f.branch_null(found, miss, hit);
    let identity = f.vreg();
    f.switch_to(miss);
    f.assign_const(identity, 2);
    f.jump(rules_start);
    f.switch_to(hit);
    let id = f.load(found, 0, Size::W);
    f.assign(identity, id);
    f.jump(rules_start);
    f.switch_to(rules_start);
    for r in 0..rules {
        let (next, port_ok) = (f.block(), f.block());
        f.annotate(rule_annotation(r));
        let x = f.alu(AluOp::Xor, identity, XOR_BASE + r as i32);
        f.branch(Cond::Eq, x, 0x77, next, port_ok);
        f.switch_to(port_ok);
        f.annotate(branch_annotation(r));
        f.branch(Cond::Eq, proto, BRANCH_BASE + r as i32, allow, next);
        f.switch_to(next);
    }
    f.jump(drop);
    f.switch_to(allow);
    let mut sum = f.constant(0);
    for v in live {
        sum = f.alu(AluOp::Add, sum, v);
    }
    let mixed = f.call_local("mix", &[sum]);
    let ok = f.block();
    f.branch(Cond::Eq, mixed, 0x7fff_0000, drop, ok);
    f.switch_to(ok);
    f.ret(TC_ACT_OK);
    f.switch_to(drop);
    f.ret(TC_ACT_SHOT);

    let mut g = FunctionBuilder::subprogram("mix", Hook::TcIngress, &[ParamKind::Scalar]);
    let p = g.param(0).expect("one parameter");
    let q = g.alu(AluOp::Add, p, 1);
    g.ret(q);
    vec![f.finish().unwrap(), g.finish().unwrap()]
}

pub fn compile_module(funcs: &[Function], short_jump_limit: i32) -> Vec<FunctionCode> {
    let opts = CodegenOptions {
        link: LinkOptions { short_jump_limit },
    };
    let (code, stats) = compile_with(funcs, opts).unwrap();
    assert!(stats[0].spills > 0, "the module should force spills");
    code
}

pub fn write_object(code: Vec<FunctionCode>) -> Vec<u8> {
    ObjectWriter::new()
        .functions(code)
        .map(MapDef::hash(
            "ipcache",
            TypeDesc::Bytes(4),
            TypeDesc::Bytes(8),
            16,
        ))
        .license("GPL")
        .write()
        .unwrap()
}

/// Slot of the first instruction matching `pred`.
pub fn find(insns: &[RawInsn], pred: impl Fn(&RawInsn) -> bool) -> Option<usize> {
    insns.iter().position(pred)
}

pub fn is_xor_marker(i: &RawInsn, r: usize) -> bool {
    i.code & 0x07 == BPF_ALU64 && i.code & 0xf0 == BPF_XOR && i.imm == XOR_BASE + r as i32
}

/// The rule's compare (short, or the inverted short branch in front of a `gotol`).
pub fn is_branch_marker(i: &RawInsn, r: usize) -> bool {
    let class = i.code & 0x07;
    (class == BPF_JMP || class == BPF_JMP32)
        && i.code & 0xf0 != BPF_JA
        && i.imm == BRANCH_BASE + r as i32
}

/// What the code generator may put before an instruction's own code: spill reloads and moves.
pub fn is_support(i: &RawInsn) -> bool {
    let reload = i.code == BPF_LDX | BPF_MEM | BPF_DW && i.src == BPF_REG_FP;
    let mov = i.code == BPF_ALU64 | BPF_MOV | BPF_X || i.code == BPF_ALU | BPF_MOV | BPF_X;
    reload || mov
}
