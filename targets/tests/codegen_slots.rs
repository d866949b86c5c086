//! Stack slot sharing: slots whose live ranges do not overlap may share frame bytes, and no two
//! slots that can both hold needed data at once ever do.
//!
//! Random programs here use many slots with short and long lifetimes (slots opened in diamond
//! arms, read back much later, reached through pointers from `StackAddr` + `PtrAdd`, narrow and
//! unaligned accesses as the policy lowering's scratch round trips make). Checks:
//! - an independent path oracle: for two slots whose bytes overlap in the layout, no control-flow
//!   path accesses one, then the other, then the first again;
//! - the IR interpreter (one region per slot) and the eBPF interpreter (shared layout) agree;
//! - the real verifier accepts them and `BPF_PROG_TEST_RUN` returns what the IR computes (skipped
//!   where `bpf()` is refused, failing instead under `CILIUMC_REQUIRE_KERNEL=1`);
//! - sharing really happens (frames shrink), loops and the escape hatch keep separate slots.

mod kernel_common;

use std::collections::HashMap;

use ciliumc_targets::codegen::interp::{CtxInput, run_bpf, run_ir};
use ciliumc_targets::codegen::liveness::reverse_postorder;
use ciliumc_targets::codegen::slots::{self, SlotLayout, SlotSharing};
use ciliumc_targets::codegen::testgen::Rng;
use ciliumc_targets::codegen::{
    AluOp, CodegenOptions, Cond, Function, FunctionBuilder, Operand, Size, SlotId, VReg,
    compile_with_sharing,
};
use ciliumc_targets::hooks::Hook;
use ciliumc_targets::program::FunctionCode;
use kernel_common::{kernel_available, prog_load, test_run};

const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;

/// Builder state of one random program.
struct Gen {
    rng: Rng,
    f: FunctionBuilder,
    /// Declared slots with their size, which bytes are written on every path to here, and a
    /// pointer to the slot made when it was declared (while that pointer is defined here).
    slots: Vec<(SlotId, u32, Vec<bool>, Option<VReg>)>,
    pool: Vec<VReg>,
    acc: VReg,
    /// Bytes of slots declared so far (kept under the checker's 512-byte limit, with room for
    /// spills).
    declared: u32,
}

const SIZES: [u32; 7] = [4, 8, 8, 12, 16, 24, 40];

impl Gen {
    fn value(&mut self) -> VReg {
        let n = self.pool.len();
        self.pool[n - 1 - self.rng.below(n.min(8))]
    }

    fn new_slot(&mut self) -> Option<usize> {
        let size = SIZES[self.rng.below(SIZES.len())];
        if self.declared + size.div_ceil(8) * 8 > 360 {
            return None;
        }
        self.declared += size.div_ceil(8) * 8;
        let id = self.f.stack_slot(size);
        // Sometimes the address is taken at once and used much later (a pointer that outlives
        // the instruction making it).
        let base = (self.rng.below(2) == 0).then(|| self.f.stack_addr(id));
        self.slots
            .push((id, size, vec![false; size as usize], base));
        Some(self.slots.len() - 1)
    }

    /// A naturally aligned access of a random size inside slot `s` (`size` bytes).
    fn place(&mut self, size: u32) -> (u32, Size) {
        loop {
            let sz = [Size::DW, Size::W, Size::H, Size::B][self.rng.below(4)];
            let b = sz.bytes();
            if b > size {
                continue;
            }
            let off = self.rng.below(((size - b) / b + 1) as usize) as u32 * b;
            return (off, sz);
        }
    }

    fn fold(&mut self, v: VReg) {
        let op = if self.rng.below(2) == 0 {
            AluOp::Xor
        } else {
            AluOp::Add
        };
        let acc = self.acc;
        self.f
            .alu_into(acc, op, ciliumc_targets::codegen::Width::W64, acc, v);
        let m = self.f.alu(AluOp::Mul, v, 0x9e37_79b1i64);
        self.pool.push(m);
    }

    fn write(&mut self, s: usize) {
        let (id, size, _, early) = self.slots[s];
        let (off, sz) = self.place(size);
        let value: Operand = if self.rng.below(3) == 0 {
            Operand::Imm(self.rng.next_u64() as i64 >> self.rng.below(40))
        } else {
            Operand::Reg(self.value())
        };
        if let (Some(base), true) = (early, self.rng.below(2) == 0) {
            self.f.store(base, off as i32, value, sz);
        } else if self.rng.below(3) == 0 {
            // Through a pointer, as helpers and key builders reach slots.
            let base = self.f.stack_addr(id);
            let word = off / 8 * 8;
            let p = self.f.ptr_add(base, i64::from(word));
            self.f.store(p, (off - word) as i32, value, sz);
        } else {
            self.f.stack_store(id, off, value, sz);
        }
        for b in &mut self.slots[s].2[off as usize..(off + sz.bytes()) as usize] {
            *b = true;
        }
    }

    fn read(&mut self, s: usize) {
        let (id, size, _, early) = self.slots[s];
        for _ in 0..8 {
            let (off, sz) = self.place(size);
            let range = off as usize..(off + sz.bytes()) as usize;
            if !self.slots[s].2[range].iter().all(|&w| w) {
                continue;
            }
            let v = if let (Some(base), true) = (early, self.rng.below(2) == 0) {
                self.f.load(base, off as i32, sz)
            } else if self.rng.below(3) == 0 {
                let base = self.f.stack_addr(id);
                let p = self.f.ptr_add(base, i64::from(off));
                self.f.load(p, 0, sz)
            } else {
                self.f.stack_load(id, off, sz)
            };
            self.fold(v);
            return;
        }
    }

    /// A few slot operations; `fresh_only` keeps arms to slots they open themselves (plus reads
    /// of slots written before the diamond).
    fn ops(&mut self, n: usize, depth: u32) {
        for _ in 0..n {
            match self.rng.below(100) {
                0..=14 => {
                    if let Some(s) = self.new_slot() {
                        self.write(s);
                    }
                }
                15..=44 if !self.slots.is_empty() => {
                    let s = self.recent_slot();
                    self.write(s);
                }
                45..=74 if !self.slots.is_empty() => {
                    let s = self.recent_slot();
                    self.read(s);
                }
                75..=84 if depth < 3 => self.diamond(depth),
                85..=94 => {
                    let a = self.value();
                    let v = self.f.alu(AluOp::Add, a, self.rng.below(1000) as i64);
                    self.pool.push(v);
                }
                _ => {}
            }
            if self.pool.len() > 24 {
                self.pool.drain(..8);
            }
        }
    }

    /// Mostly recent slots, sometimes an old one (long live ranges).
    fn recent_slot(&mut self) -> usize {
        let n = self.slots.len();
        if self.rng.below(5) == 0 {
            self.rng.below(n)
        } else {
            n - 1 - self.rng.below(n.min(3))
        }
    }

    fn diamond(&mut self, depth: u32) {
        let a = self.value();
        let (t, e, join) = (self.f.block(), self.f.block(), self.f.block());
        let cond = [Cond::Eq, Cond::Gt, Cond::Set, Cond::Slt][self.rng.below(4)];
        self.f.branch(cond, a, self.rng.below(256) as i64, t, e);
        let written: Vec<Vec<bool>> = self.slots.iter().map(|s| s.2.clone()).collect();
        let pool = self.pool.len();
        let pool_saved = self.pool.clone();
        for arm in [t, e] {
            self.f.switch_to(arm);
            let n = 1 + self.rng.below(6);
            self.ops(n, depth + 1);
            // Bytes first written in one arm are not written on every path after the join.
            for (s, w) in self.slots.iter_mut().zip(&written) {
                s.2.clone_from(w);
            }
            for s in self.slots.iter_mut().skip(written.len()) {
                s.2.iter_mut().for_each(|b| *b = false);
                // Made in the arm: not defined after the join.
                s.3 = None;
            }
            self.pool.clone_from(&pool_saved);
            self.f.jump(join);
        }
        self.f.switch_to(join);
        self.pool.truncate(pool);
        let acc = self.acc;
        self.pool.push(acc);
    }
}

fn generate(seed: u64) -> Function {
    let mut g = Gen {
        // `Rng::new` folds the lowest bit away.
        rng: Rng::new(seed << 1),
        f: FunctionBuilder::new("slots_main", Hook::TcIngress),
        slots: Vec::new(),
        pool: Vec::new(),
        acc: VReg(0),
        declared: 0,
    };
    for field in ["len", "mark", "priority", "cb[0]", "cb[1]"] {
        let v = g.f.load_ctx(field);
        g.pool.push(v);
    }
    let acc = g.f.vreg();
    g.f.assign_const(acc, 0x1234_5678);
    g.acc = acc;
    let n = 20 + g.rng.below(60);
    g.ops(n, 0);
    // Read back whatever is still readable, so long-lived slots stay live to the end.
    for s in 0..g.slots.len() {
        if g.slots[s].2.iter().any(|&w| w) {
            g.read(s);
        }
    }
    g.f.ret(acc);
    g.f.finish().unwrap()
}

fn input(seed: u64) -> CtxInput {
    let mut s = seed | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    CtxInput {
        packet: (0..60).map(|_| next() as u8).collect(),
        mark: next() as u32,
        priority: next() as u32 & 0xffff,
        cb: [next() as u32, next() as u32, 0, 0, 0],
    }
}

/// `(block, index)` of every instruction that touches each slot (directly, or through a pointer
/// made from its address), derived from the IR alone.
fn access_points(f: &Function) -> Vec<Vec<(u32, usize)>> {
    use ciliumc_targets::codegen::ir::Inst;
    let mut points = vec![Vec::new(); f.slots.len()];
    let mut points_to: HashMap<VReg, usize> = HashMap::new();
    for (b, block) in f.blocks.iter().enumerate() {
        for (i, inst) in block.insts.iter().enumerate() {
            let mut touched: Vec<usize> = Vec::new();
            match inst {
                Inst::StackAddr { dst, slot } => {
                    points_to.insert(*dst, slot.0 as usize);
                }
                Inst::StackLoad { slot, .. } | Inst::StackStore { slot, .. } => {
                    touched.push(slot.0 as usize)
                }
                Inst::PtrAdd { dst, ptr, .. } => {
                    if let Some(&s) = points_to.get(ptr) {
                        points_to.insert(*dst, s);
                    }
                }
                Inst::Load { ptr, .. } | Inst::Store { ptr, .. } => {
                    if let Some(&s) = points_to.get(ptr) {
                        touched.push(s);
                    }
                }
                _ => {}
            }
            for s in touched {
                points[s].push((b as u32, i));
            }
        }
    }
    points
}

/// `reach[a][b]`: a path of at least one edge leads from block `a` to block `b`.
fn reachability(f: &Function) -> Vec<Vec<bool>> {
    let n = f.blocks.len();
    let mut reach = vec![vec![false; n]; n];
    for (a, row) in reach.iter_mut().enumerate() {
        let mut stack: Vec<usize> = f.blocks[a]
            .term
            .successors()
            .map(|s| s.0 as usize)
            .collect();
        while let Some(b) = stack.pop() {
            if !row[b] {
                row[b] = true;
                stack.extend(f.blocks[b].term.successors().map(|s| s.0 as usize));
            }
        }
    }
    reach
}

/// Some path executes `p` and later `q` (distinct instructions).
fn before(reach: &[Vec<bool>], p: (u32, usize), q: (u32, usize)) -> bool {
    if p.0 == q.0 {
        p.1 < q.1 || reach[p.0 as usize][q.0 as usize]
    } else {
        reach[p.0 as usize][q.0 as usize]
    }
}

/// Slots that share bytes in `layout` but whose accesses interleave on some path (one slot's data
/// would be overwritten while still needed): `(a, b)` pairs, empty when the layout is safe.
fn interleaved(f: &Function, layout: &SlotLayout) -> Vec<(usize, usize)> {
    let points = access_points(f);
    let reach = reachability(f);
    let mut bad = Vec::new();
    for a in 0..f.slots.len() {
        for b in 0..f.slots.len() {
            if a == b
                || points[a].is_empty()
                || points[b].is_empty()
                || !slots::overlap(f, layout, SlotId(a as u32), SlotId(b as u32))
            {
                continue;
            }
            let sandwiched = points[b].iter().any(|&pb| {
                points[a]
                    .iter()
                    .any(|&pa| pa == pb || before(&reach, pa, pb))
                    && points[a].iter().any(|&pa| before(&reach, pb, pa))
            });
            if sandwiched {
                bad.push((a, b));
            }
        }
    }
    bad
}

fn shared_layout(f: &Function) -> SlotLayout {
    let rpo = reverse_postorder(f).unwrap();
    slots::layout(f, &rpo, SlotSharing::Shared)
}

#[test]
fn no_two_slots_live_at_once_share_a_byte() {
    let (mut shared_total, mut separate_total, mut shared_pairs) = (0u32, 0u32, 0usize);
    for seed in 0..400 {
        let f = generate(seed);
        let layout = shared_layout(&f);
        let bad = interleaved(&f, &layout);
        assert!(
            bad.is_empty(),
            "seed {seed}: slots {bad:?} overlap in {:?} while both live",
            layout.offsets
        );
        for o in &layout.offsets {
            assert_eq!(o % 8, 0, "seed {seed}: slot base {o} not 8-aligned");
        }
        shared_total += layout.size;
        separate_total += slots::separate(&f).size;
        let n = f.slots.len() as u32;
        shared_pairs += (0..n)
            .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
            .filter(|&(a, b)| slots::overlap(&f, &layout, SlotId(a), SlotId(b)))
            .count();
    }
    // The oracle must have had something to judge: sharing happened, and frames shrank.
    assert!(shared_pairs > 1000, "only {shared_pairs} shared pairs");
    assert!(
        shared_total * 10 < separate_total * 8,
        "shared {shared_total} vs separate {separate_total} bytes"
    );
}

#[test]
fn the_oracle_notices_a_layout_that_puts_every_slot_at_one_offset() {
    // Guards the oracle itself: an everything-overlaps layout must be reported.
    let mut caught = 0;
    for seed in 0..50 {
        let f = generate(seed);
        let clash = SlotLayout {
            offsets: f
                .slots
                .iter()
                .map(|s| -(s.size.div_ceil(8) as i32 * 8))
                .collect(),
            size: 40,
        };
        if !interleaved(&f, &clash).is_empty() {
            caught += 1;
        }
    }
    assert!(caught > 40, "caught only {caught} of 50");
}

fn compile(f: &Function, sharing: SlotSharing) -> Vec<FunctionCode> {
    compile_with_sharing(std::slice::from_ref(f), CodegenOptions::default(), sharing)
        .unwrap()
        .0
}

#[test]
fn shared_frames_compute_what_the_ir_computes() {
    for seed in 0..300 {
        let f = generate(seed);
        let code = compile(&f, SlotSharing::Shared);
        let module = std::slice::from_ref(&f);
        for k in 0..3 {
            let inp = input(seed * 13 + k);
            let want = run_ir(module, "slots_main", &inp).unwrap();
            let got = run_bpf(&code, "slots_main", &inp).unwrap();
            assert_eq!(got, want, "seed {seed}, input {k}");
        }
    }
}

#[test]
fn frames_shrink_and_the_escape_hatch_keeps_separate_slots() {
    let (mut shared, mut separate) = (0u32, 0u32);
    for seed in 0..100 {
        let f = generate(seed);
        let s = compile_with_sharing(
            std::slice::from_ref(&f),
            CodegenOptions::default(),
            SlotSharing::Shared,
        )
        .unwrap()
        .1[0]
            .frame;
        let p = compile_with_sharing(
            std::slice::from_ref(&f),
            CodegenOptions::default(),
            SlotSharing::Separate,
        )
        .unwrap()
        .1[0]
            .frame;
        assert!(s <= p, "seed {seed}: shared frame {s} > separate {p}");
        shared += s;
        separate += p;
        let rpo = reverse_postorder(&f).unwrap();
        assert_eq!(
            slots::layout(&f, &rpo, SlotSharing::Separate),
            slots::separate(&f)
        );
    }
    assert!(shared < separate, "{shared} vs {separate}");
}

/// Two slots: `a` written, then `b` written and read, then `a` read — must not share; a third slot
/// used only afterwards shares with one of them; sibling arms share.
#[test]
fn hand_made_ranges() {
    let mut f = FunctionBuilder::new("hand", Hook::TcIngress);
    let mark = f.load_ctx("mark");
    let a = f.stack_slot(8);
    let b = f.stack_slot(8);
    let c = f.stack_slot(16);
    f.stack_store(a, 0, mark, Size::DW);
    f.stack_store(b, 0, 7, Size::DW);
    let vb = f.stack_load(b, 0, Size::DW);
    let va = f.stack_load(a, 0, Size::DW);
    let x = f.alu(AluOp::Add, va, vb);
    let (t, e, join) = (f.block(), f.block(), f.block());
    let r = f.vreg();
    f.branch(Cond::Gt, x, 10, t, e);
    f.switch_to(t);
    let d = f.stack_slot(8);
    f.stack_store(d, 4, x, Size::W);
    let vd = f.stack_load(d, 4, Size::W);
    f.assign(r, vd);
    f.jump(join);
    f.switch_to(e);
    let e_slot = f.stack_slot(8);
    let p = f.stack_addr(e_slot);
    f.store(p, 0, 99, Size::DW);
    let ve = f.load(p, 0, Size::DW);
    f.assign(r, ve);
    f.jump(join);
    f.switch_to(join);
    f.stack_store(c, 8, r, Size::DW);
    let vc = f.stack_load(c, 8, Size::DW);
    f.ret(vc);
    let func = f.finish().unwrap();
    let layout = shared_layout(&func);
    assert!(!slots::overlap(&func, &layout, a, b), "{layout:?}");
    assert!(slots::overlap(&func, &layout, d, e_slot), "{layout:?}");
    assert!(layout.size <= 24, "{layout:?}");
    assert!(interleaved(&func, &layout).is_empty());
    let inp = input(5);
    let code = compile(&func, SlotSharing::Shared);
    assert_eq!(
        run_bpf(&code, "hand", &inp).unwrap(),
        run_ir(std::slice::from_ref(&func), "hand", &inp).unwrap()
    );
}

#[test]
fn a_loop_keeps_one_region_per_slot() {
    let mut f = FunctionBuilder::new("looping", Hook::TcIngress);
    let a = f.stack_slot(8);
    let b = f.stack_slot(8);
    f.stack_store(a, 0, 1, Size::DW);
    let i = f.vreg();
    f.assign_const(i, 0);
    let (head, body, exit) = (f.block(), f.block(), f.block());
    f.jump(head);
    f.switch_to(head);
    f.branch(Cond::Ge, i, 4, exit, body);
    f.switch_to(body);
    f.stack_store(b, 0, i, Size::DW);
    let vb = f.stack_load(b, 0, Size::DW);
    f.alu_into(i, AluOp::Add, ciliumc_targets::codegen::Width::W64, vb, 1);
    f.jump(head);
    f.switch_to(exit);
    let va = f.stack_load(a, 0, Size::DW);
    f.ret(va);
    let func = f.finish().unwrap();
    let rpo = reverse_postorder(&func).unwrap();
    assert_eq!(slots::live_ranges(&func, &rpo), None);
    assert_eq!(shared_layout(&func), slots::separate(&func));
}

// Kernel: the shared layout through the real verifier and BPF_PROG_TEST_RUN.

#[test]
fn shared_frames_pass_the_verifier_and_match_the_ir() {
    if !kernel_available() {
        return;
    }
    for seed in 0..80 {
        let f = generate(seed);
        let code = compile(&f, SlotSharing::Shared);
        let prog = prog_load(&code[0].insns, BPF_PROG_TYPE_SCHED_CLS)
            .unwrap_or_else(|e| panic!("seed {seed}: verifier refused: {e}"));
        for k in 0..2 {
            let inp = input(seed * 17 + k);
            let want = run_ir(std::slice::from_ref(&f), "slots_main", &inp).unwrap() as u32;
            assert_eq!(test_run(&prog, &inp), want, "seed {seed}, input {k}");
        }
    }
}
