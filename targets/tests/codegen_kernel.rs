//! Codegen output judged by the real verifier, through a minimal raw `bpf()` loader (no ELF: the
//! entry function and the subprograms it calls are concatenated and calls/map loads are fixed up
//! here). Random programs must load and return what the IR interpreter computes
//! (`BPF_PROG_TEST_RUN`). Skips with a printed reason where `bpf()` is refused, fails instead when
//! `CILIUMC_REQUIRE_KERNEL=1`.

mod kernel_common;

use std::collections::HashMap;

use ciliumc_targets::codegen::interp::{CtxInput, run_ir};
use ciliumc_targets::codegen::testgen::{GenConfig, PACKET_MIN, generate};
use ciliumc_targets::codegen::{
    AluOp, CodegenOptions, Cond, Function, FunctionBuilder, LinkOptions, MapDecl, MapKind,
    ParamKind, Size, compile, compile_with,
};
use ciliumc_targets::hooks::{self, Hook, TC_ACT_OK, TC_ACT_SHOT};
use ciliumc_targets::isa::RawInsn;
use ciliumc_targets::program::{FunctionCode, RelocTarget};
use kernel_common::{Fd, bpf, kernel_available, prog_load, put32, put64, test_run};

fn map_create(decl: &MapDecl) -> Fd {
    let ty = match decl.kind {
        MapKind::Hash => 1,
        MapKind::Array => 2,
        MapKind::ProgArray => 3,
        MapKind::RingBuf => 27,
        MapKind::LruHash => 9,
        MapKind::PerCpuHash => 5,
        MapKind::PerCpuArray => 6,
        MapKind::LpmTrie => 11,
    };
    let mut attr = [0u8; 128];
    put32(&mut attr, 0, ty);
    let (k, v, n) = match decl.kind {
        MapKind::RingBuf => (0, 0, 4096),
        _ => (decl.key_size, decl.value_size, 16),
    };
    put32(&mut attr, 4, k);
    put32(&mut attr, 8, v);
    put32(&mut attr, 12, n);
    if decl.kind == MapKind::LpmTrie {
        put32(&mut attr, 16, 1); // BPF_F_NO_PREALLOC
    }
    Fd(bpf(0, &mut attr).unwrap_or_else(|e| panic!("map create {}: errno {e}", decl.name)))
}

/// Concatenates `entry` with the subprograms it reaches and resolves relocations.
fn link_for_kernel(
    code: &[FunctionCode],
    entry: &str,
    maps: &HashMap<String, i32>,
) -> Vec<RawInsn> {
    let by_name: HashMap<&str, &FunctionCode> = code.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut order = vec![entry.to_string()];
    let mut i = 0;
    while i < order.len() {
        for r in &by_name[order[i].as_str()].relocs {
            if let RelocTarget::Subprogram(s) = &r.target
                && !order.contains(s)
            {
                order.push(s.clone());
            }
        }
        i += 1;
    }
    let mut start = HashMap::new();
    let mut insns = Vec::new();
    for name in &order {
        start.insert(name.clone(), insns.len());
        insns.extend_from_slice(&by_name[name.as_str()].insns);
    }
    for name in &order {
        let base = start[name];
        for r in &by_name[name.as_str()].relocs {
            let at = base + r.insn;
            match &r.target {
                RelocTarget::Subprogram(s) => {
                    insns[at].imm = (start[s] as i64 - at as i64 - 1) as i32
                }
                RelocTarget::Map(m) => insns[at].imm = maps[m],
                // Random programs use no link-time constants; an unbound one stays 0.
                RelocTarget::Constant(_) => {}
            }
        }
    }
    insns
}

/// Loads a module's entry into the kernel (maps created from the declarations).
fn load(module: &[Function], code: &[FunctionCode], entry: &str) -> Result<(Fd, Vec<Fd>), String> {
    let mut fds = Vec::new();
    let mut maps = HashMap::new();
    for f in module {
        for m in &f.maps {
            if !maps.contains_key(&m.name) {
                let fd = map_create(m);
                maps.insert(m.name.clone(), fd.0);
                fds.push(fd);
            }
        }
    }
    let insns = link_for_kernel(code, entry, &maps);
    let prog_type = if module[0].hook == Hook::Xdp { 6 } else { 3 };
    prog_load(&insns, prog_type).map(|p| (p, fds))
}

fn packet(seed: u64, len: usize) -> CtxInput {
    let mut s = seed | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    CtxInput {
        packet: (0..len).map(|_| next() as u8).collect(),
        mark: next() as u32,
        priority: next() as u32 & 0xffff,
        cb: [next() as u32, next() as u32, 0, 0, 0],
    }
}

#[test]
fn random_programs_pass_the_verifier_and_match_the_interpreter() {
    if !kernel_available() {
        return;
    }
    let configs = [
        GenConfig::default(),
        GenConfig {
            ops: 250,
            fold_width: 40,
            ..GenConfig::default()
        },
        GenConfig {
            ops: 40,
            packet: false,
            subprograms: false,
            ..GenConfig::default()
        },
    ];
    let mut checked = 0;
    for (ci, cfg) in configs.iter().enumerate() {
        for seed in 0..40u64 {
            let module = generate(seed, cfg);
            let code = compile(&module).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            let (prog, _maps) = load(&module, &code, "gen_main")
                .unwrap_or_else(|e| panic!("config {ci}, seed {seed}: verifier refused: {e}"));
            for (k, len) in [(1u64, PACKET_MIN as usize + 10), (2, 20)] {
                let input = packet(seed * 7 + k, len);
                let want = run_ir(&module, "gen_main", &input).unwrap() as u32;
                assert_eq!(
                    test_run(&prog, &input),
                    want,
                    "config {ci}, seed {seed}, input {k}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 240);
}

/// A tc program in the shape the policy compiler emits: parse, ipcache lookup with a null check,
/// rule chain.
fn policy_like(rules: usize) -> Vec<Function> {
    let mut f = FunctionBuilder::new("policy", Hook::TcIngress);
    let drop = f.block();
    let allow = f.block();
    let data = f.load_ctx("data");
    let end = f.load_ctx("data_end");
    f.check_packet_bounds(data, end, 38, drop);
    let proto = f.load(data, 23, Size::B);
    let saddr = f.load(data, 26, Size::W);
    let dport_be = f.load(data, 36, Size::H);
    let dport = f.bswap(16, dport_be);
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
        let (next, port_ok, in_range, id_ok) = (f.block(), f.block(), f.block(), f.block());
        f.branch(Cond::Ne, proto, 6, next, port_ok);
        f.switch_to(port_ok);
        let lo = (r * 7 % 60000) as i64;
        f.branch(Cond::Lt, dport, lo, next, in_range);
        f.switch_to(in_range);
        f.branch(Cond::Gt, dport, lo + 3, next, id_ok);
        f.switch_to(id_ok);
        let masked = f.alu(AluOp::And, identity, 0xffff);
        f.branch(Cond::Eq, masked, 2, allow, next);
        f.switch_to(next);
    }
    f.jump(drop);
    f.switch_to(allow);
    f.ret(TC_ACT_OK);
    f.switch_to(drop);
    f.ret(TC_ACT_SHOT);
    vec![f.finish().unwrap()]
}

fn tcp_to_port(port: u16) -> CtxInput {
    let mut p = vec![0u8; 54];
    p[12] = 0x08;
    p[14] = 0x45;
    p[23] = 6;
    p[26..30].copy_from_slice(&[192, 0, 2, 1]);
    p[36..38].copy_from_slice(&port.to_be_bytes());
    CtxInput {
        packet: p,
        ..CtxInput::default()
    }
}

/// `rules` rules of ~6 instructions and one branch each (the verifier's pending-branch limit is
/// 8192): rule `r` allows when `((dport ^ (0x1234 + r)) & 0xffff) + r) * 3 == key(r)`, and only rule
/// `allowed` has a reachable key, for `dport == port`.
fn long_chain(rules: usize, allowed: usize, port: u16) -> Vec<Function> {
    let mut f = FunctionBuilder::new("chain", Hook::TcIngress);
    let (drop, allow) = (f.block(), f.block());
    let data = f.load_ctx("data");
    let end = f.load_ctx("data_end");
    f.check_packet_bounds(data, end, 38, drop);
    let dport_be = f.load(data, 36, Size::H);
    let dport = f.bswap(16, dport_be);
    for r in 0..rules {
        let next = f.block();
        let k = 0x1234 + r as i64;
        let t = f.alu(AluOp::Xor, dport, k);
        let t = f.alu(AluOp::And, t, 0xffff);
        let t = f.alu(AluOp::Add, t, r as i64);
        let t = f.alu(AluOp::Mul, t, 3);
        let key = if r == allowed {
            (((i64::from(port) ^ k) & 0xffff) + r as i64) * 3
        } else {
            0x7fff_0000 + r as i64
        };
        f.branch(Cond::Eq, t, key, allow, next);
        f.switch_to(next);
    }
    f.jump(drop);
    f.switch_to(allow);
    f.ret(TC_ACT_OK);
    f.switch_to(drop);
    f.ret(TC_ACT_SHOT);
    vec![f.finish().unwrap()]
}

#[test]
fn program_over_40000_insns_with_gotol_passes_the_verifier() {
    if !kernel_available() {
        return;
    }
    let module = long_chain(7_000, 6_500, 8080);
    let (code, stats) = compile_with(&module, CodegenOptions::default()).unwrap();
    assert!(
        code[0].insns.len() > 40_000,
        "{} insns",
        code[0].insns.len()
    );
    assert!(stats[0].long_jumps > 0);
    let (prog, _maps) =
        load(&module, &code, "chain").unwrap_or_else(|e| panic!("verifier refused: {e}"));
    assert_eq!(test_run(&prog, &tcp_to_port(8080)) as i32, TC_ACT_OK);
    assert_eq!(test_run(&prog, &tcp_to_port(8081)) as i32, TC_ACT_SHOT);
    let short = CtxInput {
        packet: vec![0u8; 20],
        ..CtxInput::default()
    };
    assert_eq!(test_run(&prog, &short) as i32, TC_ACT_SHOT);
    // The IR interpreter agrees.
    let want = run_ir(&module, "chain", &tcp_to_port(8080)).unwrap();
    assert_eq!(want as i32, TC_ACT_OK);
}

#[test]
fn short_jump_limit_forces_gotol_in_a_small_program() {
    if !kernel_available() {
        return;
    }
    let module = policy_like(40);
    let opts = CodegenOptions {
        link: LinkOptions {
            short_jump_limit: 8,
        },
    };
    let (code, stats) = compile_with(&module, opts).unwrap();
    assert!(stats[0].long_jumps > 10);
    let (prog, _maps) =
        load(&module, &code, "policy").unwrap_or_else(|e| panic!("verifier refused: {e}"));
    assert_eq!(test_run(&prog, &tcp_to_port(7 * 30 + 1)) as i32, TC_ACT_OK);
    assert_eq!(
        test_run(&prog, &tcp_to_port(7 * 30 + 4)) as i32,
        TC_ACT_SHOT
    );
}

#[test]
fn ringbuf_reserve_submit_and_helpers_pass_the_verifier() {
    if !kernel_available() {
        return;
    }
    let mut f = FunctionBuilder::new("events", Hook::TcIngress);
    let rb = f.map(MapDecl {
        name: "events".into(),
        kind: MapKind::RingBuf,
        key_size: 0,
        value_size: 0,
    });
    let m = f.load_map(rb);
    let rec = f.call(&hooks::RINGBUF_RESERVE, &[m.into(), 16.into(), 0.into()]);
    let (none, some, done) = (f.block(), f.block(), f.block());
    f.branch_null(rec, none, some);
    f.switch_to(some);
    let t = f.call(&hooks::KTIME_GET_NS, &[]);
    f.store(rec, 0, t, Size::DW);
    let mark = f.load_ctx("mark");
    f.store(rec, 8, mark, Size::W);
    f.store(rec, 12, 7, Size::W);
    f.call(&hooks::RINGBUF_SUBMIT, &[rec.into(), 0.into()]);
    f.jump(done);
    f.switch_to(none);
    f.jump(done);
    f.switch_to(done);
    f.ret(TC_ACT_OK);
    let module = vec![f.finish().unwrap()];
    let code = compile(&module).unwrap();
    let (prog, _maps) =
        load(&module, &code, "events").unwrap_or_else(|e| panic!("verifier refused: {e}"));
    assert_eq!(test_run(&prog, &packet(1, 60)) as i32, TC_ACT_OK);
}

fn raw(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> RawInsn {
    RawInsn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

#[test]
fn context_field_table_matches_what_the_kernel_allows() {
    use ciliumc_targets::isa::opcode::*;
    if !kernel_available() {
        return;
    }
    for (hook, prog_type) in [(Hook::TcIngress, 3u32), (Hook::Xdp, 6)] {
        for field in hook.ctx_fields() {
            let size = if field.size == 8 { BPF_DW } else { BPF_W };
            let prog = [
                raw(BPF_LDX | BPF_MEM | size, 0, 1, field.offset as i16, 0),
                raw(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 0),
                raw(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
            ];
            let loaded = prog_load(&prog, prog_type);
            assert_eq!(
                loaded.is_ok(),
                field.readable,
                "{hook:?} field {} at {}: {:?}",
                field.name,
                field.offset,
                loaded.err()
            );
        }
    }
}

fn xdp_run(prog: &Fd, packet: &[u8]) -> u32 {
    let mut attr = [0u8; 80];
    put32(&mut attr, 0, prog.0 as u32);
    put32(&mut attr, 8, packet.len() as u32);
    put64(&mut attr, 16, packet.as_ptr() as u64);
    put32(&mut attr, 32, 1);
    bpf(10, &mut attr).unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN (xdp): errno {e}"));
    u32::from_le_bytes([attr[4], attr[5], attr[6], attr[7]])
}

/// An IPv4 packet with `ihl` 32-bit words of header and a TCP destination port.
fn ipv4_with_options(ihl: u8, port: u16) -> Vec<u8> {
    let hlen = usize::from(ihl) * 4;
    let mut p = vec![0u8; 14 + hlen + 20];
    p[12] = 0x08;
    p[14] = 0x40 | ihl;
    p[23] = 6;
    p[14 + hlen + 2..14 + hlen + 4].copy_from_slice(&port.to_be_bytes());
    p
}

/// Returns the TCP destination port after variable-length IPv4 options (or 0 when short).
fn l4_port_program(hook: Hook) -> Vec<Function> {
    let mut f = FunctionBuilder::new("l4port", hook);
    let short = f.block();
    let data = f.load_ctx("data");
    let end = f.load_ctx("data_end");
    f.check_packet_bounds(data, end, 34, short);
    let vihl = f.load(data, 14, Size::B);
    let ihl = f.alu(AluOp::And, vihl, 0x0f);
    let hlen = f.alu(AluOp::Lsh, ihl, 2);
    let l3 = f.ptr_add(data, 14);
    let l4 = f.ptr_add(l3, hlen);
    f.check_packet_bounds(l4, end, 4, short);
    let port_be = f.load(l4, 2, Size::H);
    let port = f.bswap(16, port_be);
    f.ret(port);
    f.switch_to(short);
    f.ret(0);
    vec![f.finish().unwrap()]
}

#[test]
fn variable_offset_parsing_passes_on_tc_and_xdp() {
    if !kernel_available() {
        return;
    }
    let tc = l4_port_program(Hook::TcIngress);
    let code = compile(&tc).unwrap();
    let (prog, _m) = load(&tc, &code, "l4port").unwrap_or_else(|e| panic!("verifier refused: {e}"));
    for (ihl, port) in [(5u8, 443u16), (6, 80), (15, 8080)] {
        let input = CtxInput {
            packet: ipv4_with_options(ihl, port),
            ..CtxInput::default()
        };
        assert_eq!(test_run(&prog, &input), u32::from(port));
        assert_eq!(run_ir(&tc, "l4port", &input).unwrap(), u64::from(port));
    }
    let xdp = l4_port_program(Hook::Xdp);
    let code = compile(&xdp).unwrap();
    let (prog, _m) =
        load(&xdp, &code, "l4port").unwrap_or_else(|e| panic!("verifier refused: {e}"));
    assert_eq!(xdp_run(&prog, &ipv4_with_options(7, 53)), 53);
    assert_eq!(
        xdp_run(&prog, &ipv4_with_options(15, 53)[..70]),
        0,
        "options run past the end"
    );
}

#[test]
fn helper_signatures_are_accepted_by_the_kernel() {
    if !kernel_available() {
        return;
    }
    let mut f = FunctionBuilder::new("helpers", Hook::TcIngress);
    let ctx = f.ctx();
    let counters = f.map(MapDecl {
        name: "counters".into(),
        kind: MapKind::Hash,
        key_size: 4,
        value_size: 8,
    });
    let jmp = f.map(MapDecl {
        name: "jmp".into(),
        kind: MapKind::ProgArray,
        key_size: 4,
        value_size: 4,
    });
    // map_update_elem(&counters, &key, &value, BPF_ANY) with stack key and value.
    let key = f.stack_slot(4);
    let val = f.stack_slot(8);
    f.stack_store(key, 0, 42, Size::W);
    let mark = f.load_ctx("mark");
    f.stack_store(val, 0, mark, Size::DW);
    let kp = f.stack_addr(key);
    let vp = f.stack_addr(val);
    let m = f.load_map(counters);
    f.call(
        &hooks::MAP_UPDATE_ELEM,
        &[m.into(), kp.into(), vp.into(), 0.into()],
    );
    // skb_load_bytes into an uninitialized stack buffer, then read it.
    let buf = f.stack_slot(16);
    let bp = f.stack_addr(buf);
    let rc = f.call(
        &hooks::SKB_LOAD_BYTES,
        &[ctx.into(), 0.into(), bp.into(), 16.into()],
    );
    let first = f.stack_load(buf, 0, Size::B);
    // csum_diff(NULL, 0, &buf, 16, 0).
    let bp2 = f.stack_addr(buf);
    let sum = f.call(
        &hooks::CSUM_DIFF,
        &[0.into(), 0.into(), bp2.into(), 16.into(), 0.into()],
    );
    // fib_lookup with initialized params.
    let params = f.stack_slot(hooks::BPF_FIB_LOOKUP_SIZE);
    for off in (0..hooks::BPF_FIB_LOOKUP_SIZE).step_by(8) {
        f.stack_store(params, off, 0, Size::DW);
    }
    let pp = f.stack_addr(params);
    let fib = f.call(
        &hooks::FIB_LOOKUP,
        &[ctx.into(), pp.into(), 64.into(), 0.into()],
    );
    // skb_store_bytes moves packet data: reload data afterwards.
    let src = f.stack_addr(val);
    f.call(
        &hooks::SKB_STORE_BYTES,
        &[ctx.into(), 0.into(), src.into(), 4.into(), 0.into()],
    );
    let drop = f.block();
    let data = f.load_ctx("data");
    let end = f.load_ctx("data_end");
    f.check_packet_bounds(data, end, 4, drop);
    let b0 = f.load(data, 0, Size::W);
    let ecn = f.call(&hooks::SKB_ECN_SET_CE, &[ctx.into()]);
    let cpu = f.call(&hooks::GET_SMP_PROCESSOR_ID, &[]);
    let r = f.call(&hooks::REDIRECT, &[1.into(), 0.into()]);
    f.tail_call(jmp, 3); // empty slot: falls through
    let mut acc = f.alu(AluOp::Add, rc, first);
    for v in [sum, fib, b0, ecn, cpu, r] {
        acc = f.alu(AluOp::Xor, acc, v);
    }
    let _ = acc;
    f.ret(TC_ACT_OK);
    f.switch_to(drop);
    f.ret(TC_ACT_SHOT);
    let module = vec![f.finish().unwrap()];
    let code = compile(&module).unwrap();
    let (prog, _m) =
        load(&module, &code, "helpers").unwrap_or_else(|e| panic!("verifier refused: {e}"));
    let input = packet(9, 64);
    assert_eq!(test_run(&prog, &input) as i32, TC_ACT_OK);
}

#[test]
fn subprogram_taking_the_context_passes_the_verifier() {
    if !kernel_available() {
        return;
    }
    let mut g = FunctionBuilder::subprogram(
        "mark_plus",
        Hook::TcIngress,
        &[ParamKind::Ctx, ParamKind::Scalar],
    );
    let m = g.load_ctx("mark");
    let p = g.param(1).unwrap();
    let t = g.call(&hooks::KTIME_GET_NS, &[]);
    let z = g.alu(AluOp::And, t, 0);
    let s = g.alu(AluOp::Add, m, p);
    let s = g.alu(AluOp::Add, s, z);
    g.ret(s);
    let mut f = FunctionBuilder::new("main", Hook::TcIngress);
    let ctx = f.ctx();
    let k = f.load_ctx("priority");
    let r = f.call_local("mark_plus", &[ctx, k]);
    let r2 = f.call_local("mark_plus", &[ctx, r]);
    f.ret(r2);
    let module = vec![f.finish().unwrap(), g.finish().unwrap()];
    let code = compile(&module).unwrap();
    let (prog, _m) =
        load(&module, &code, "main").unwrap_or_else(|e| panic!("verifier refused: {e}"));
    let input = CtxInput {
        packet: vec![0; 20],
        mark: 1000,
        priority: 7,
        cb: [0; 5],
    };
    assert_eq!(test_run(&prog, &input), 2007);
}

#[test]
fn bounded_loop_passes_the_verifier_and_matches_the_interpreter() {
    if !kernel_available() {
        return;
    }
    let mut f = FunctionBuilder::new("loop", Hook::TcIngress);
    let (body, done) = (f.block(), f.block());
    let i = f.vreg();
    let acc = f.vreg();
    f.assign_const(i, 0);
    let mark = f.load_ctx("mark");
    f.assign(acc, mark);
    f.jump(body);
    f.switch_to(body);
    let t = f.alu(AluOp::Mul, acc, 31);
    f.alu_into(acc, AluOp::Add, ciliumc_targets::codegen::Width::W64, t, i);
    let k = f.call(&hooks::GET_PRANDOM_U32, &[]);
    let z = f.alu(AluOp::And, k, 0);
    f.alu_into(
        acc,
        AluOp::Xor,
        ciliumc_targets::codegen::Width::W64,
        acc,
        z,
    );
    f.alu_into(i, AluOp::Add, ciliumc_targets::codegen::Width::W64, i, 1);
    f.branch(Cond::Lt, i, 10, body, done);
    f.switch_to(done);
    f.ret(acc);
    let module = vec![f.finish().unwrap()];
    let code = compile(&module).unwrap();
    ciliumc_targets::codegen::regcheck::check_defined(&code[0].insns, 1).unwrap();
    let (prog, _m) =
        load(&module, &code, "loop").unwrap_or_else(|e| panic!("verifier refused: {e}"));
    let input = CtxInput {
        packet: vec![0; 20],
        mark: 12345,
        ..CtxInput::default()
    };
    let want = run_ir(&module, "loop", &input).unwrap();
    assert_eq!(u64::from(test_run(&prog, &input)), want & 0xffff_ffff);
    assert_eq!(
        ciliumc_targets::codegen::interp::run_bpf(&code, "loop", &input).unwrap(),
        want
    );
}

/// Writes objects through the ELF writer for manual loading with `bpftool prog loadall` and
/// `tc ... bpf obj`: `CILIUMC_DUMP_DIR=/tmp/x cargo test -p ciliumc-targets --test codegen_kernel
/// -- --ignored dump_objects`.
#[test]
#[ignore]
fn dump_objects() {
    use ciliumc_targets::elf::{MapDef, ObjectWriter, TypeDesc};
    let Ok(dir) = std::env::var("CILIUMC_DUMP_DIR") else {
        eprintln!("set CILIUMC_DUMP_DIR");
        return;
    };
    let mut modules = vec![
        ("chain", long_chain(7_000, 6_500, 8080)),
        ("policy", policy_like(200)),
        ("l4port_xdp", l4_port_program(Hook::Xdp)),
    ];
    for seed in 0..5 {
        modules.push(("random", generate(seed, &GenConfig::default())));
    }
    for (i, (name, module)) in modules.into_iter().enumerate() {
        let code = compile(&module).unwrap();
        let mut maps: Vec<MapDef> = Vec::new();
        for f in &module {
            for m in &f.maps {
                if maps.iter().all(|d| d.name != m.name) {
                    maps.push(MapDef::hash(
                        &m.name,
                        TypeDesc::Bytes(m.key_size),
                        TypeDesc::Bytes(m.value_size),
                        16,
                    ));
                }
            }
        }
        let bytes = ObjectWriter::new()
            .functions(code)
            .maps(maps)
            .license("GPL")
            .write()
            .unwrap();
        std::fs::write(format!("{dir}/{i:02}_{name}.o"), bytes).unwrap();
    }
}
