//! Random IR programs for property tests here and kernel tests elsewhere.
//!
//! In: a seed and a [`GenConfig`]. Out: a module (entry program `gen_main` first, then the `.text`
//! subprogram `gen_mix` when enabled) that passes the lowering checks: arithmetic DAGs over context
//! fields and packet bytes, stack slots, helper calls that clobber r1–r5, diamonds whose arms assign
//! the same register, bpf-to-bpf calls, and a final fold that keeps many values live at once (register
//! pressure, spills). With `deterministic`, helper results are masked to 0 before use, so the return
//! value depends only on the context and packet: a kernel run (`BPF_PROG_TEST_RUN`) can then be
//! compared with [`super::interp::run_ir`].

use super::builder::FunctionBuilder;
use super::ir::*;
use crate::hooks::{self, HelperSig, Hook};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenConfig {
    /// Roughly how many IR operations the entry program gets.
    pub ops: usize,
    pub helpers: bool,
    pub subprograms: bool,
    /// Parse packet bytes (the program then needs at least `PACKET_MIN` bytes, else returns 1).
    pub packet: bool,
    /// Mask helper results to 0 so the result does not depend on them.
    pub deterministic: bool,
    /// How many values the final fold keeps live together.
    pub fold_width: usize,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            ops: 60,
            helpers: true,
            subprograms: true,
            packet: true,
            deterministic: true,
            fold_width: 20,
        }
    }
}

/// How far back in the value pool operands are picked.
const REACH: usize = 40;

/// Packet bytes a generated program reads when `packet` is set.
pub const PACKET_MIN: u32 = 40;

/// xorshift64*: small, deterministic, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
}

const ALU_OPS: [AluOp; 11] = [
    AluOp::Add,
    AluOp::Sub,
    AluOp::Mul,
    AluOp::Div,
    AluOp::Mod,
    AluOp::Or,
    AluOp::And,
    AluOp::Xor,
    AluOp::Lsh,
    AluOp::Rsh,
    AluOp::Arsh,
];

const CONDS: [Cond; 11] = [
    Cond::Eq,
    Cond::Ne,
    Cond::Gt,
    Cond::Ge,
    Cond::Lt,
    Cond::Le,
    Cond::Sgt,
    Cond::Sge,
    Cond::Slt,
    Cond::Sle,
    Cond::Set,
];

const HELPERS: [&HelperSig; 3] = [
    &hooks::GET_PRANDOM_U32,
    &hooks::KTIME_GET_NS,
    &hooks::GET_SMP_PROCESSOR_ID,
];

struct Gen<'a> {
    rng: Rng,
    cfg: &'a GenConfig,
    f: FunctionBuilder,
    pool: Vec<VReg>,
}

impl Gen<'_> {
    fn imm(&mut self) -> i64 {
        match self.rng.below(6) {
            0 => self.rng.below(16) as i64,
            1 => -(self.rng.below(1000) as i64),
            2 => i64::from(self.rng.next_u64() as u32),
            3 => self.rng.next_u64() as i64,
            4 => i64::from(self.rng.next_u64() as i32),
            _ => self.rng.below(1 << 16) as i64,
        }
    }

    fn value(&mut self) -> VReg {
        // Favor recent values, but reach back so older ones stay live (within a window, so that
        // long programs keep a bounded number of values live and fit the 512-byte frame).
        let n = self.pool.len();
        let reach = if self.rng.below(3) == 0 {
            n.min(REACH)
        } else {
            n.min(6)
        };
        self.pool[n - 1 - self.rng.below(reach)]
    }

    fn alu(&mut self, dst: Option<VReg>) -> VReg {
        let op = self.rng.pick(&ALU_OPS);
        let width = if self.rng.below(3) == 0 {
            Width::W32
        } else {
            Width::W64
        };
        let a = self.value();
        let bits = if width == Width::W32 { 32 } else { 64 };
        let b: Operand = match op {
            AluOp::Lsh | AluOp::Rsh | AluOp::Arsh if self.rng.below(2) == 0 => {
                Operand::Imm(self.rng.below(bits) as i64)
            }
            AluOp::Div | AluOp::Mod if self.rng.below(2) == 0 => {
                Operand::Imm(1 + self.rng.below(1000) as i64)
            }
            AluOp::Lsh | AluOp::Rsh | AluOp::Arsh | AluOp::Div | AluOp::Mod => {
                Operand::Reg(self.value())
            }
            _ if self.rng.below(2) == 0 => Operand::Imm(self.imm()),
            _ => Operand::Reg(self.value()),
        };
        match dst {
            Some(d) => {
                self.f.alu_into(d, op, width, a, b);
                d
            }
            None => match width {
                Width::W32 => self.f.alu32(op, a, b),
                Width::W64 => self.f.alu(op, a, b),
            },
        }
    }

    fn helper(&mut self) -> VReg {
        let h = self.rng.pick(&HELPERS);
        let r = self.f.call(h, &[]);
        if self.cfg.deterministic {
            self.f.alu(AluOp::And, r, 0)
        } else {
            r
        }
    }

    fn diamond(&mut self) {
        let a = self.value();
        let cond = self.rng.pick(&CONDS);
        let b: Operand = if self.rng.below(2) == 0 {
            Operand::Imm(self.imm())
        } else {
            Operand::Reg(self.value())
        };
        let (t, e, join) = (self.f.block(), self.f.block(), self.f.block());
        if self.rng.below(3) == 0 {
            self.f.branch32(cond, a, b, t, e);
        } else {
            self.f.branch(cond, a, b, t, e);
        }
        let x = self.f.vreg();
        let saved = self.pool.len();
        for arm in [t, e] {
            self.f.switch_to(arm);
            for _ in 0..self.rng.below(3) {
                let v = self.alu(None);
                self.pool.push(v);
            }
            if self.cfg.helpers && self.rng.below(3) == 0 {
                let v = self.helper();
                self.f.alu_into(x, AluOp::Add, Width::W64, v, 1);
            } else {
                self.alu(Some(x));
            }
            // Values made in one arm are not defined after the join.
            self.pool.truncate(saved);
            self.f.jump(join);
        }
        self.f.switch_to(join);
        self.pool.push(x);
    }
}

fn gen_mix(seed: u64, cfg: &GenConfig) -> Function {
    let mut f = FunctionBuilder::subprogram(
        "gen_mix",
        Hook::TcIngress,
        &[ParamKind::Scalar, ParamKind::Scalar],
    );
    let (a, b) = (VReg(0), VReg(1));
    let m = f.alu(AluOp::Mul, a, 31 + (seed % 7) as i64);
    let mut t = f.alu(AluOp::Add, m, b);
    if cfg.helpers {
        let r = f.call(&hooks::GET_PRANDOM_U32, &[]);
        let r = if cfg.deterministic {
            f.alu(AluOp::And, r, 0)
        } else {
            r
        };
        t = f.alu(AluOp::Xor, t, r);
    }
    let s = f.alu(AluOp::Rsh, t, 7);
    let out = f.alu(AluOp::Xor, t, s);
    f.ret(out);
    f.finish().unwrap_or_else(|_| unreachable_function())
}

fn unreachable_function() -> Function {
    // The generator only builds well-formed functions; this keeps the API total without a panic.
    let mut f = FunctionBuilder::new("gen_main", Hook::TcIngress);
    f.ret(0);
    match f.finish() {
        Ok(func) => func,
        Err(_) => Function {
            name: "gen_main".into(),
            hook: Hook::TcIngress,
            is_entry: true,
            section: "classifier".into(),
            params: Vec::new(),
            blocks: Vec::new().into(),
            slots: Vec::new(),
            maps: Vec::new(),
            num_vregs: 0,
            recurring: false,
        },
    }
}

/// A random module: `gen_main` (entry, tc) and, with `subprograms`, `gen_mix(a, b)`.
pub fn generate(seed: u64, cfg: &GenConfig) -> Vec<Function> {
    let mut g = Gen {
        rng: Rng::new(seed),
        cfg,
        f: FunctionBuilder::new("gen_main", Hook::TcIngress),
        pool: Vec::new(),
    };
    for field in ["len", "mark", "priority", "cb[0]", "cb[1]"] {
        let v = g.f.load_ctx(field);
        g.pool.push(v);
    }
    let c = g.f.constant(g.rng.next_u64() as i64);
    g.pool.push(c);
    let mut packet = None;
    if cfg.packet {
        let short = g.f.block();
        let data = g.f.load_ctx("data");
        let end = g.f.load_ctx("data_end");
        g.f.check_packet_bounds(data, end, PACKET_MIN, short);
        let body = g.f.current();
        g.f.switch_to(short);
        g.f.ret(1);
        g.f.switch_to(body);
        packet = Some(data);
    }
    let slot = g.f.stack_slot(32);
    let mut written = [false; 4];
    for _ in 0..cfg.ops {
        match g.rng.below(100) {
            0..=49 => {
                let v = g.alu(None);
                g.pool.push(v);
            }
            50..=54 => {
                let i = g.imm();
                let v = g.f.constant(i);
                g.pool.push(v);
            }
            55..=62 if cfg.helpers => {
                let v = g.helper();
                g.pool.push(v);
            }
            63..=70 => {
                let k = g.rng.below(4);
                let v = g.value();
                g.f.stack_store(slot, k as u32 * 8, v, Size::DW);
                written[k] = true;
            }
            71..=76 => {
                let r = g.rng.below(4);
                if let Some(k) = (0..4).map(|k| (k + r) % 4).find(|&k| written[k]) {
                    let v = g.f.stack_load(slot, k as u32 * 8, Size::DW);
                    g.pool.push(v);
                }
            }
            77..=84 => g.diamond(),
            85..=89 if cfg.subprograms => {
                let (a, b) = (g.value(), g.value());
                let v = g.f.call_local("gen_mix", &[a, b]);
                g.pool.push(v);
            }
            90..=99 => {
                if let Some(data) = packet {
                    let size = g.rng.pick(&[Size::B, Size::H, Size::W, Size::DW]);
                    let off = g.rng.below((PACKET_MIN - size.bytes() + 1) as usize) as i32;
                    let v = g.f.load(data, off, size);
                    g.pool.push(v);
                }
            }
            _ => {}
        }
    }
    let width = cfg.fold_width.clamp(1, g.pool.len());
    let live: Vec<VReg> = g.pool[g.pool.len() - width..].to_vec();
    let mut acc = live[0];
    for (i, &v) in live.iter().enumerate().skip(1) {
        acc =
            g.f.alu(if i % 2 == 0 { AluOp::Xor } else { AluOp::Add }, acc, v);
    }
    g.f.ret(acc);
    let main = g.f.finish().unwrap_or_else(|_| unreachable_function());
    let mut module = vec![main];
    if cfg.subprograms {
        module.push(gen_mix(seed, cfg));
    }
    module
}
