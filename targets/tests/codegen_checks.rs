//! The lowering checks: programs the verifier would refuse are refused here first, with the IR value
//! named; the verifier's accepted idioms (one hoisted bounds check, null check then use) pass.

use ciliumc_targets::codegen::{
    AluOp, BlockId, CheckError, CodegenError, Cond, Function, FunctionBuilder, MapDecl, MapKind,
    Operand, ParamKind, Size, VReg, compile,
};
use ciliumc_targets::hooks::{self, Hook, TC_ACT_OK, TC_ACT_SHOT};

fn err_of(funcs: Vec<Function>) -> CodegenError {
    match compile(&funcs) {
        Ok(_) => panic!("lowering accepted a program the verifier refuses"),
        Err(e) => e,
    }
}

fn check_err(funcs: Vec<Function>) -> (BlockId, CheckError) {
    match err_of(funcs) {
        CodegenError::Check { block, error, .. } => (block, *error),
        e => panic!("expected a check error, got {e}"),
    }
}

fn ipcache() -> MapDecl {
    MapDecl {
        name: "ipcache".into(),
        kind: MapKind::Hash,
        key_size: 4,
        value_size: 8,
    }
}

/// data, data_end, drop block; bounds checked for `len` bytes.
fn parse_prologue(f: &mut FunctionBuilder, len: u32) -> (VReg, VReg, BlockId) {
    let drop = f.block();
    let data = f.load_ctx("data");
    let end = f.load_ctx("data_end");
    f.check_packet_bounds(data, end, len, drop);
    let cont = f.current();
    f.switch_to(drop);
    f.ret(TC_ACT_SHOT);
    f.switch_to(cont);
    (data, end, drop)
}

#[test]
fn unchecked_packet_access_is_refused_naming_the_value() {
    let mut f = FunctionBuilder::new("p", Hook::TcIngress);
    let (data, _, _) = parse_prologue(&mut f, 14);
    let v = f.load(data, 14, Size::W);
    f.ret(v);
    let e = err_of(vec![f.finish().unwrap()]);
    let text = e.to_string();
    assert!(
        text.contains(&format!("{v}: packet load of 4 bytes at offset 14 not covered by a bounds check (proven 14 bytes)")),
        "{text}"
    );
    assert!(text.contains("function p"), "{text}");
}

#[test]
fn packet_access_without_any_bounds_check_is_refused() {
    let mut f = FunctionBuilder::new("p", Hook::TcIngress);
    let data = f.load_ctx("data");
    let v = f.load(data, 0, Size::B);
    f.ret(v);
    let (_, e) = check_err(vec![f.finish().unwrap()]);
    assert_eq!(
        e,
        CheckError::PacketOutOfRange {
            value: v,
            access: "load",
            size: 1,
            off: 0,
            proven: 0
        }
    );
}

#[test]
fn one_hoisted_bounds_check_covers_later_loads_in_later_blocks() {
    let mut f = FunctionBuilder::new("p", Hook::TcIngress);
    let (data, _, drop) = parse_prologue(&mut f, 54);
    let eth = f.load(data, 12, Size::H);
    let (ip, other) = (f.block(), f.block());
    f.branch(Cond::Eq, eth, 0x0008, ip, other);
    f.switch_to(ip);
    let proto = f.load(data, 23, Size::B);
    let l4 = f.ptr_add(data, 34);
    let port = f.load(l4, 2, Size::H); // offset 36 of the same proven range
    let sum = f.alu(AluOp::Add, proto, port);
    f.ret(sum);
    f.switch_to(other);
    f.jump(drop);
    compile(&[f.finish().unwrap()]).unwrap();
}

#[test]
fn bounds_proven_on_one_path_only_do_not_count_after_the_merge() {
    let mut f = FunctionBuilder::new("p", Hook::TcIngress);
    let drop = f.block();
    let data = f.load_ctx("data");
    let end = f.load_ctx("data_end");
    let mark = f.load_ctx("mark");
    let (checked, unchecked, join) = (f.block(), f.block(), f.block());
    f.branch(Cond::Eq, mark, 1, checked, unchecked);
    f.switch_to(checked);
    f.check_packet_bounds(data, end, 20, drop);
    f.jump(join);
    f.switch_to(unchecked);
    f.jump(join);
    f.switch_to(join);
    let v = f.load(data, 0, Size::W);
    f.ret(v);
    f.switch_to(drop);
    f.ret(TC_ACT_SHOT);
    let (block, e) = check_err(vec![f.finish().unwrap()]);
    assert_eq!(block, join);
    assert!(
        matches!(e, CheckError::PacketOutOfRange { value, proven: 0, .. } if value == v),
        "{e}"
    );
}

#[test]
fn variable_offset_needs_its_own_bounds_check() {
    // IPv4 with options: L4 at data + 14 + ihl*4.
    let build = |check: bool| {
        let mut f = FunctionBuilder::new("p", Hook::TcIngress);
        let (data, end, drop) = parse_prologue(&mut f, 34);
        let vihl = f.load(data, 14, Size::B);
        let ihl = f.alu(AluOp::And, vihl, 0x0f);
        let hlen = f.alu(AluOp::Lsh, ihl, 2);
        let l3 = f.ptr_add(data, 14);
        let l4 = f.ptr_add(l3, hlen);
        if check {
            f.check_packet_bounds(l4, end, 4, drop);
        }
        let port = f.load(l4, 2, Size::H);
        f.ret(port);
        (f.finish().unwrap(), port)
    };
    let (good, _) = build(true);
    compile(&[good]).unwrap();
    let (bad, port) = build(false);
    let (_, e) = check_err(vec![bad]);
    assert!(
        matches!(e, CheckError::PacketOutOfRange { value, proven: 0, .. } if value == port),
        "{e}"
    );
}

#[test]
fn unbounded_variable_packet_offset_is_refused() {
    let mut f = FunctionBuilder::new("p", Hook::TcIngress);
    let (data, _, _) = parse_prologue(&mut f, 14);
    let mark = f.load_ctx("mark"); // 32 bits: the verifier cannot bound data + mark
    let p = f.ptr_add(data, mark);
    f.ret(0);
    let _ = p;
    let (_, e) = check_err(vec![f.finish().unwrap()]);
    assert_eq!(
        e,
        CheckError::UnboundedOffset {
            value: mark,
            bits: 32
        }
    );
}

fn lookup_program(null_check: bool, off: i32, size: Size) -> (Function, VReg) {
    let mut f = FunctionBuilder::new("m", Hook::TcIngress);
    let map = f.map(ipcache());
    let key = f.stack_slot(4);
    f.stack_store(key, 0, 0x0100_0a0a, Size::W);
    let kp = f.stack_addr(key);
    let val = f.map_lookup(map, kp);
    if null_check {
        let (miss, hit) = (f.block(), f.block());
        f.branch_null(val, miss, hit);
        f.switch_to(miss);
        f.ret(TC_ACT_SHOT);
        f.switch_to(hit);
    }
    let id = f.load(val, off, size);
    f.ret(id);
    (f.finish().unwrap(), val)
}

#[test]
fn missing_null_check_is_refused_naming_the_value() {
    let (func, val) = lookup_program(false, 0, Size::W);
    let e = err_of(vec![func]);
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "{val}: dereference of a map value that may be null (from map 'ipcache')"
        )),
        "{text}"
    );
}

#[test]
fn null_checked_map_value_is_usable() {
    let (func, _) = lookup_program(true, 4, Size::W);
    compile(&[func]).unwrap();
}

#[test]
fn access_past_the_map_value_size_is_refused() {
    let (func, _) = lookup_program(true, 4, Size::DW);
    let (_, e) = check_err(vec![func]);
    assert!(
        matches!(
            e,
            CheckError::OutOfBounds {
                off: 4,
                size: 8,
                limit: 8,
                what: "map value",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn undefined_value_is_refused_where_it_is_used() {
    let mut f = FunctionBuilder::new("u", Hook::TcIngress);
    let x = f.vreg();
    let mark = f.load_ctx("mark");
    let (a, b, join) = (f.block(), f.block(), f.block());
    f.branch(Cond::Eq, mark, 0, a, b);
    f.switch_to(a);
    f.assign_const(x, 1);
    f.jump(join);
    f.switch_to(b);
    f.jump(join); // x not assigned on this path
    f.switch_to(join);
    f.ret(x);
    let (block, e) = check_err(vec![f.finish().unwrap()]);
    assert_eq!(block, join);
    assert_eq!(e, CheckError::Undefined { value: x });
}

#[test]
fn helper_with_wrong_argument_kinds_is_refused() {
    // map_lookup_elem(key, map): arguments swapped.
    let mut f = FunctionBuilder::new("h", Hook::TcIngress);
    let map = f.map(ipcache());
    let key = f.stack_slot(4);
    f.stack_store(key, 0, 1, Size::W);
    let kp = f.stack_addr(key);
    let m = f.load_map(map);
    f.call(&hooks::MAP_LOOKUP_ELEM, &[kp.into(), m.into()]);
    f.ret(0);
    let (_, e) = check_err(vec![f.finish().unwrap()]);
    assert!(
        matches!(&e, CheckError::HelperArg { helper: "map_lookup_elem", index: 1, value, .. } if *value == kp.to_string()),
        "{e}"
    );
}

#[test]
fn map_key_must_be_initialized() {
    let mut f = FunctionBuilder::new("h", Hook::TcIngress);
    let map = f.map(ipcache());
    let key = f.stack_slot(8);
    f.stack_store(key, 0, 1, Size::H); // 2 of the 4 key bytes
    let kp = f.stack_addr(key);
    f.map_lookup(map, kp);
    f.ret(0);
    let (_, e) = check_err(vec![f.finish().unwrap()]);
    assert!(e.to_string().contains("never written"), "{e}");
}

#[test]
fn helper_arity_and_hook_are_checked() {
    let mut f = FunctionBuilder::new("h", Hook::TcIngress);
    f.call(&hooks::KTIME_GET_NS, &[Operand::Imm(1)]);
    f.ret(0);
    let (_, e) = check_err(vec![f.finish().unwrap()]);
    assert_eq!(
        e,
        CheckError::HelperArity {
            helper: "ktime_get_ns",
            expected: 0,
            found: 1
        }
    );

    let mut x = FunctionBuilder::new("x", Hook::Xdp);
    let ctx = x.ctx();
    x.call(&hooks::SKB_ECN_SET_CE, &[ctx.into()]);
    x.ret(hooks::XDP_PASS);
    let (_, e) = check_err(vec![x.finish().unwrap()]);
    assert!(
        matches!(
            e,
            CheckError::HelperNotAllowed {
                helper: "skb_ecn_set_ce",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn packet_pointers_die_at_helpers_that_move_packet_data() {
    let mut f = FunctionBuilder::new("s", Hook::TcIngress);
    let (data, _, _) = parse_prologue(&mut f, 20);
    let ctx = f.ctx();
    let buf = f.stack_slot(8);
    f.stack_store(buf, 0, 0, Size::DW);
    let bp = f.stack_addr(buf);
    f.call(
        &hooks::SKB_STORE_BYTES,
        &[ctx.into(), 0.into(), bp.into(), 4.into(), 0.into()],
    );
    let v = f.load(data, 0, Size::B);
    f.ret(v);
    let (_, e) = check_err(vec![f.finish().unwrap()]);
    assert_eq!(
        e,
        CheckError::PacketInvalidated {
            value: data,
            helper: "skb_store_bytes"
        }
    );
}

#[test]
fn ringbuf_record_must_be_released_on_every_path() {
    let mut f = FunctionBuilder::new("r", Hook::TcIngress);
    let rb = f.map(MapDecl {
        name: "events".into(),
        kind: MapKind::RingBuf,
        key_size: 0,
        value_size: 0,
    });
    let m = f.load_map(rb);
    let rec = f.call(&hooks::RINGBUF_RESERVE, &[m.into(), 16.into(), 0.into()]);
    let (none, some) = (f.block(), f.block());
    f.branch_null(rec, none, some);
    f.switch_to(some);
    f.store(rec, 0, 1, Size::DW);
    f.ret(TC_ACT_OK); // leaks the record
    f.switch_to(none);
    f.ret(TC_ACT_OK);
    let (block, e) = check_err(vec![f.finish().unwrap()]);
    assert_eq!(block, some);
    assert_eq!(e, CheckError::RecordLeak { value: rec });
}

#[test]
fn void_helper_result_cannot_be_used() {
    let mut f = FunctionBuilder::new("t", Hook::TcIngress);
    let pa = f.map(MapDecl {
        name: "jmp".into(),
        kind: MapKind::ProgArray,
        key_size: 4,
        value_size: 4,
    });
    let ctx = f.ctx();
    let m = f.load_map(pa);
    let r = f.call(&hooks::TAIL_CALL, &[ctx.into(), m.into(), 0.into()]);
    f.ret(r);
    let (_, e) = check_err(vec![f.finish().unwrap()]);
    assert_eq!(e, CheckError::Undefined { value: r });
}

#[test]
fn tail_call_needs_a_prog_array() {
    let mut f = FunctionBuilder::new("t", Hook::TcIngress);
    let map = f.map(ipcache());
    f.tail_call(map, 0);
    f.ret(TC_ACT_OK);
    let (_, e) = check_err(vec![f.finish().unwrap()]);
    assert!(
        matches!(
            e,
            CheckError::HelperArg {
                helper: "tail_call",
                index: 2,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn builder_misuse_is_reported_by_finish() {
    let mut f = FunctionBuilder::new("b", Hook::TcIngress);
    f.load_ctx("no_such_field");
    f.ret(0);
    assert!(
        f.finish()
            .unwrap_err()
            .to_string()
            .contains("no_such_field")
    );

    let mut f = FunctionBuilder::new("b", Hook::TcIngress);
    f.ret(0);
    f.ret(1);
    assert!(
        f.finish()
            .unwrap_err()
            .to_string()
            .contains("second terminator")
    );

    let mut f = FunctionBuilder::new("b", Hook::TcIngress);
    let next = f.block();
    f.jump(next); // `next` never terminated
    let e = compile(&[f.finish().unwrap()]).unwrap_err();
    assert!(e.to_string().contains("has no terminator"), "{e}");
}

#[test]
fn subprogram_calls_are_checked_against_their_parameters() {
    let mut callee = FunctionBuilder::subprogram("add1", Hook::TcIngress, &[ParamKind::Scalar]);
    let p = callee.param(0).unwrap();
    let r = callee.alu(AluOp::Add, p, 1);
    callee.ret(r);
    let mut f = FunctionBuilder::new("main", Hook::TcIngress);
    let ctx = f.ctx();
    f.call_local("add1", &[ctx]);
    f.ret(0);
    let (_, e) = check_err(vec![f.finish().unwrap(), callee.finish().unwrap()]);
    assert!(
        matches!(
            &e,
            CheckError::WrongType {
                expected: "a scalar",
                ..
            }
        ),
        "{e}"
    );

    let mut f = FunctionBuilder::new("main", Hook::TcIngress);
    let m = f.load_ctx("mark");
    f.call_local("missing", &[m]);
    f.ret(0);
    assert!(matches!(
        err_of(vec![f.finish().unwrap()]),
        CodegenError::UnknownFunction { .. }
    ));
}
