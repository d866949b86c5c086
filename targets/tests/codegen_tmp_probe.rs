use ciliumc_targets::codegen::*;
use ciliumc_targets::hooks::{Hook, TC_ACT_OK, TC_ACT_SHOT};
use std::time::Instant;
/// A policy-shaped program: parse Ethernet/IPv4/L4, one map lookup, then `rules` compare chains
/// over (peer identity, port) that each jump to allow or fall through.
fn policy_program(rules: usize) -> Vec<Function> {
    let mut f = FunctionBuilder::new("policy", Hook::TcIngress);
    let drop = f.block();
    let allow = f.block();
    let data = f.load_ctx("data");
    let end = f.load_ctx("data_end");
    f.check_packet_bounds(data, end, 54, drop);
    let proto = f.load(data, 23, Size::B);
    let saddr = f.load(data, 26, Size::W);
    let dport_be = f.load(data, 36, Size::H);
    let dport = f.bswap(16, dport_be);
    let ipcache = f.map(MapDecl { name: "ipcache".into(), kind: MapKind::Hash, key_size: 4, value_size: 8 });
    let key = f.stack_slot(8);
    f.stack_store(key, 0, saddr, Size::W);
    let key_ptr = f.stack_addr(key);
    let hit = f.block();
    let miss = f.block();
    let found = f.map_lookup(ipcache, key_ptr);
    f.branch_null(found, miss, hit);
    let identity = f.vreg();
    f.switch_to(miss);
    f.assign_const(identity, 2);
    let rules_start = f.block();
    f.jump(rules_start);
    f.switch_to(hit);
    let id = f.load(found, 0, Size::W);
    f.assign(identity, id);
    f.jump(rules_start);
    f.switch_to(rules_start);
    for r in 0..rules {
        let next = f.block();
        let port_ok = f.block();
        let id_ok = f.block();
        f.branch(Cond::Ne, proto, [6, 17, 132][r % 3], next, port_ok);
        f.switch_to(port_ok);
        let lo = (r * 7 % 60000) as i64;
        let in_range = f.block();
        f.branch(Cond::Lt, dport, lo, next, in_range);
        f.switch_to(in_range);
        f.branch(Cond::Gt, dport, lo + 10, next, id_ok);
        f.switch_to(id_ok);
        let masked = f.alu(AluOp::And, identity, 0xffff);
        f.branch(Cond::Eq, masked, 256 + r as i64, allow, next);
        f.switch_to(next);
    }
    f.jump(drop);
    f.switch_to(allow);
    f.ret(TC_ACT_OK);
    f.switch_to(drop);
    f.ret(TC_ACT_SHOT);
    vec![f.finish().expect("bench program builds")]
}


#[test]
fn probe() {
    let m = policy_program(3330);
    let f = &m[0];
    let rpo = liveness::reverse_postorder(f).unwrap();
    let t = Instant::now();
    let live = liveness::liveness(f, &rpo);
    println!("liveness {:?}", t.elapsed());
    let t = Instant::now();
    for _ in 0..50 { std::hint::black_box(liveness::liveness(f, &rpo)); }
    println!("liveness x50 avg {:?}", t.elapsed() / 50);
    let t = Instant::now();
    for _ in 0..50 { std::hint::black_box(liveness::reverse_postorder(f).unwrap()); }
    println!("rpo x50 avg {:?}", t.elapsed() / 50);
    let total_in: usize = rpo.iter().map(|b| live.live_in(*b).count()).sum();
    println!("blocks {} vregs {} globals {} avg live_in {}", f.blocks.len(), f.num_vregs, live.globals.len(), total_in as f64 / rpo.len() as f64);
    let t = Instant::now();
    let _ = check::check_function(f, &rpo, &live, &Default::default()).unwrap();
    println!("check {:?}", t.elapsed());
    let t = Instant::now();
    for _ in 0..50 { std::hint::black_box(check::check_function(f, &rpo, &live, &Default::default()).unwrap()); }
    println!("check x50 avg {:?}", t.elapsed() / 50);
}
