//! Two small interpreters that pin down what "the same program" means: one runs the IR, the other
//! the emitted eBPF. Property tests compare them on random programs; kernel tests compare the IR
//! result with `BPF_PROG_TEST_RUN`.
//!
//! In: a module (IR functions, or their [`FunctionCode`]), the entry name and a [`CtxInput`] (a tc
//! context: packet bytes, mark, priority, cb). Out: the returned r0, or an error for anything outside
//! the subset (maps, packet writes through helpers, unknown helpers).
//!
//! Addresses are tagged by region (context, packet, per-frame stack), so pointer arithmetic in both
//! interpreters is plain integer arithmetic. Helpers are deterministic stubs shared by both sides.
//! The eBPF side poisons r1–r5 after every call and starts with poisoned registers and stack, so a
//! value that register allocation failed to keep shows up as a different result.

use std::collections::HashMap;

use super::ir::*;
use super::isel::slot_offsets;
use crate::isa::opcode::*;
use crate::isa::{self, RawInsn, semantics};
use crate::program::{FunctionCode, RelocTarget};

/// The tc context of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CtxInput {
    pub packet: Vec<u8>,
    pub mark: u32,
    pub priority: u32,
    pub cb: [u32; 5],
}

const CTX: u64 = 0x1000_0000_0000;
const PKT: u64 = 0x2000_0000_0000;
const STACK: u64 = 0x3000_0000_0000;
const FRAME: u64 = 0x1_0000;
const POISON: u64 = 0xdead_beef_0bad_f00d;
const MAX_STEPS: u64 = 5_000_000;

struct Machine<'a> {
    input: &'a CtxInput,
    ctx: [u8; 192],
    packet: Vec<u8>,
    stacks: Vec<[u8; 512]>,
    calls: u64,
    steps: u64,
}

type R<T> = Result<T, String>;

impl<'a> Machine<'a> {
    fn new(input: &'a CtxInput) -> Self {
        let mut ctx = [0u8; 192];
        let mut put = |off: usize, v: u32| ctx[off..off + 4].copy_from_slice(&v.to_le_bytes());
        put(0, input.packet.len() as u32);
        put(8, input.mark);
        put(32, input.priority);
        for (i, c) in input.cb.iter().enumerate() {
            put(48 + 4 * i, *c);
        }
        Machine {
            input,
            ctx,
            packet: input.packet.clone(),
            stacks: Vec::new(),
            calls: 0,
            steps: 0,
        }
    }

    fn push_frame(&mut self) -> u64 {
        self.stacks.push([0xaa; 512]);
        STACK + self.stacks.len() as u64 * FRAME + 512
    }

    fn pop_frame(&mut self) {
        self.stacks.pop();
    }

    fn region(&mut self, addr: u64, size: u32) -> R<&mut [u8]> {
        let size = size as u64;
        if (CTX..CTX + 192).contains(&addr) && addr + size <= CTX + 192 {
            let o = (addr - CTX) as usize;
            return Ok(&mut self.ctx[o..o + size as usize]);
        }
        if (PKT..PKT + self.packet.len() as u64).contains(&addr)
            && addr + size <= PKT + self.packet.len() as u64
        {
            let o = (addr - PKT) as usize;
            return Ok(&mut self.packet[o..o + size as usize]);
        }
        if addr >= STACK + FRAME {
            let frame = ((addr - STACK) / FRAME) as usize;
            let base = STACK + frame as u64 * FRAME;
            if frame >= 1 && frame <= self.stacks.len() && addr + size <= base + 512 {
                let o = (addr - base) as usize;
                return Ok(&mut self.stacks[frame - 1][o..o + size as usize]);
            }
        }
        Err(format!(
            "access of {size} bytes at {addr:#x} outside memory"
        ))
    }

    fn load(&mut self, addr: u64, size: u32) -> R<u64> {
        if addr == CTX + 76 && size == 4 {
            return Ok(PKT);
        }
        if addr == CTX + 80 && size == 4 {
            return Ok(PKT + self.input.packet.len() as u64);
        }
        let bytes = self.region(addr, size)?;
        let mut b = [0u8; 8];
        b[..bytes.len()].copy_from_slice(bytes);
        Ok(u64::from_le_bytes(b))
    }

    fn store(&mut self, addr: u64, size: u32, value: u64) -> R<()> {
        if (CTX..CTX + 192).contains(&addr) {
            return Err("store into the context".into());
        }
        let bytes = self.region(addr, size)?;
        let n = bytes.len();
        bytes.copy_from_slice(&value.to_le_bytes()[..n]);
        Ok(())
    }

    fn helper(&mut self, id: i32) -> R<u64> {
        self.calls += 1;
        match id {
            5 | 125 | 160 => Ok(1_000_000 * self.calls),
            7 => Ok(u64::from((self.calls as u32).wrapping_mul(0x9e37_79b9))),
            8 => Ok(0),
            _ => Err(format!("helper {id} not supported by the interpreter")),
        }
    }

    fn tick(&mut self) -> R<()> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err("step limit".into());
        }
        Ok(())
    }
}

fn width(w32: bool) -> isa::Width {
    if w32 {
        isa::Width::Bits32
    } else {
        isa::Width::Bits64
    }
}

/// The IR's operations are a subset of the ISA's: both interpreters compute them with
/// `isa::semantics`, as the VM does.
fn alu(op: AluOp, w32: bool, a: u64, b: u64) -> u64 {
    let op = match op {
        AluOp::Add => isa::AluOp::Add,
        AluOp::Sub => isa::AluOp::Sub,
        AluOp::Mul => isa::AluOp::Mul,
        AluOp::Div => isa::AluOp::Div,
        AluOp::Mod => isa::AluOp::Mod,
        AluOp::Or => isa::AluOp::Or,
        AluOp::And => isa::AluOp::And,
        AluOp::Xor => isa::AluOp::Xor,
        AluOp::Lsh => isa::AluOp::Lsh,
        AluOp::Rsh => isa::AluOp::Rsh,
        AluOp::Arsh => isa::AluOp::Arsh,
    };
    semantics::alu(op, width(w32), a, b)
}

fn cond(c: Cond, w32: bool, a: u64, b: u64) -> bool {
    let op = match c {
        Cond::Eq => isa::JmpOp::Eq,
        Cond::Ne => isa::JmpOp::Ne,
        Cond::Gt => isa::JmpOp::Gt,
        Cond::Ge => isa::JmpOp::Ge,
        Cond::Lt => isa::JmpOp::Lt,
        Cond::Le => isa::JmpOp::Le,
        Cond::Sgt => isa::JmpOp::Sgt,
        Cond::Sge => isa::JmpOp::Sge,
        Cond::Slt => isa::JmpOp::Slt,
        Cond::Sle => isa::JmpOp::Sle,
        Cond::Set => isa::JmpOp::Set,
    };
    semantics::jump_taken(op, width(w32), a, b)
}

fn bswap(bits: u8, a: u64) -> u64 {
    let bits = match bits {
        16 => isa::SwapBits::B16,
        32 => isa::SwapBits::B32,
        _ => isa::SwapBits::B64,
    };
    semantics::swap(bits, a)
}

/// Runs IR function `entry` of `module`.
pub fn run_ir(module: &[Function], entry: &str, input: &CtxInput) -> R<u64> {
    let funcs: HashMap<&str, &Function> = module.iter().map(|f| (f.name.as_str(), f)).collect();
    let mut m = Machine::new(input);
    let f = funcs
        .get(entry)
        .ok_or_else(|| format!("no function {entry}"))?;
    ir_call(&mut m, &funcs, f, &[CTX])
}

fn ir_call(
    m: &mut Machine,
    funcs: &HashMap<&str, &Function>,
    f: &Function,
    args: &[u64],
) -> R<u64> {
    let fp = m.push_frame();
    let (slot_off, _) = slot_offsets(f);
    let mut regs = vec![POISON; f.num_vregs as usize];
    for ((v, _), a) in f.params.iter().zip(args) {
        regs[v.0 as usize] = *a;
    }
    let op = |regs: &[u64], o: Operand| match o {
        Operand::Reg(v) => regs[v.0 as usize],
        Operand::Imm(i) => i as u64,
    };
    let mut b = f.entry();
    let result = loop {
        let block = f.block(b);
        for inst in &block.insts {
            m.tick()?;
            match inst {
                Inst::Const { dst, value } => regs[dst.0 as usize] = *value as u64,
                Inst::Copy { dst, src } => regs[dst.0 as usize] = regs[src.0 as usize],
                Inst::Alu {
                    op: o,
                    width,
                    dst,
                    a,
                    b,
                } => {
                    regs[dst.0 as usize] =
                        alu(*o, *width == Width::W32, regs[a.0 as usize], op(&regs, *b))
                }
                Inst::Neg { width, dst, src } => {
                    let a = regs[src.0 as usize];
                    regs[dst.0 as usize] = if *width == Width::W32 {
                        u64::from((a as u32).wrapping_neg())
                    } else {
                        a.wrapping_neg()
                    };
                }
                Inst::Bswap { bits, dst, src } => {
                    regs[dst.0 as usize] = bswap(*bits, regs[src.0 as usize])
                }
                Inst::LoadCtx { dst, ctx, field } => {
                    regs[dst.0 as usize] = m.load(
                        regs[ctx.0 as usize] + u64::from(field.offset),
                        u32::from(field.size),
                    )?
                }
                Inst::Load {
                    dst,
                    ptr,
                    off,
                    size,
                } => {
                    regs[dst.0 as usize] =
                        m.load(regs[ptr.0 as usize].wrapping_add(*off as u64), size.bytes())?
                }
                Inst::Store {
                    ptr,
                    off,
                    value,
                    size,
                } => m.store(
                    regs[ptr.0 as usize].wrapping_add(*off as u64),
                    size.bytes(),
                    op(&regs, *value),
                )?,
                Inst::PtrAdd { dst, ptr, offset } => {
                    regs[dst.0 as usize] = regs[ptr.0 as usize].wrapping_add(op(&regs, *offset))
                }
                Inst::StackAddr { dst, slot } => {
                    regs[dst.0 as usize] = fp.wrapping_add(slot_off[slot.0 as usize] as u64)
                }
                Inst::StackLoad {
                    dst,
                    slot,
                    off,
                    size,
                } => {
                    let addr = fp.wrapping_add(slot_off[slot.0 as usize] as u64) + u64::from(*off);
                    regs[dst.0 as usize] = m.load(addr, size.bytes())?;
                }
                Inst::StackStore {
                    slot,
                    off,
                    value,
                    size,
                } => {
                    let addr = fp.wrapping_add(slot_off[slot.0 as usize] as u64) + u64::from(*off);
                    m.store(addr, size.bytes(), op(&regs, *value))?;
                }
                Inst::LoadMap { .. } => {
                    return Err("maps are not supported by the interpreter".into());
                }
                Inst::LinkConst { name, .. } => {
                    return Err(format!("constant {name} is bound only in emitted code"));
                }
                Inst::Call { dst, helper, .. } => {
                    let r = m.helper(helper.id)?;
                    if let Some(d) = dst {
                        regs[d.0 as usize] = r;
                    }
                }
                Inst::CallLocal { dst, func, args } => {
                    let g = funcs
                        .get(func.as_str())
                        .ok_or_else(|| format!("no function {func}"))?;
                    let vals: Vec<u64> = args.iter().map(|a| regs[a.0 as usize]).collect();
                    let r = ir_call(m, funcs, g, &vals)?;
                    if let Some(d) = dst {
                        regs[d.0 as usize] = r;
                    }
                }
            }
        }
        m.tick()?;
        b = match &block.term {
            Terminator::None => return Err(format!("{b} has no terminator")),
            Terminator::Jump(t) => *t,
            Terminator::Branch {
                cond: c,
                width,
                a,
                b: o,
                then_,
                else_,
            } => {
                let w32 = *width == Width::W32;
                if cond(*c, w32, regs[a.0 as usize], op(&regs, *o)) {
                    *then_
                } else {
                    *else_
                }
            }
            Terminator::CheckPacketBounds {
                ptr,
                end,
                len,
                ok,
                fail,
            } => {
                if regs[ptr.0 as usize].wrapping_add(u64::from(*len)) > regs[end.0 as usize] {
                    *fail
                } else {
                    *ok
                }
            }
            Terminator::Return(o) => break op(&regs, *o),
        };
    };
    m.pop_frame();
    Ok(result)
}

/// Runs emitted function `entry` of `code`.
pub fn run_bpf(code: &[FunctionCode], entry: &str, input: &CtxInput) -> R<u64> {
    let funcs: HashMap<&str, &FunctionCode> = code.iter().map(|f| (f.name.as_str(), f)).collect();
    let mut m = Machine::new(input);
    let f = funcs
        .get(entry)
        .ok_or_else(|| format!("no function {entry}"))?;
    let mut args = [POISON; 5];
    args[0] = CTX;
    bpf_call(&mut m, &funcs, f, args)
}

fn jmp_cond(op: u8) -> Option<Cond> {
    Some(match op {
        BPF_JEQ => Cond::Eq,
        BPF_JNE => Cond::Ne,
        BPF_JGT => Cond::Gt,
        BPF_JGE => Cond::Ge,
        BPF_JLT => Cond::Lt,
        BPF_JLE => Cond::Le,
        BPF_JSGT => Cond::Sgt,
        BPF_JSGE => Cond::Sge,
        BPF_JSLT => Cond::Slt,
        BPF_JSLE => Cond::Sle,
        BPF_JSET => Cond::Set,
        _ => return None,
    })
}

fn alu_op(op: u8) -> Option<AluOp> {
    Some(match op {
        BPF_ADD => AluOp::Add,
        BPF_SUB => AluOp::Sub,
        BPF_MUL => AluOp::Mul,
        BPF_DIV => AluOp::Div,
        BPF_MOD => AluOp::Mod,
        BPF_OR => AluOp::Or,
        BPF_AND => AluOp::And,
        BPF_XOR => AluOp::Xor,
        BPF_LSH => AluOp::Lsh,
        BPF_RSH => AluOp::Rsh,
        BPF_ARSH => AluOp::Arsh,
        _ => return None,
    })
}

fn size_bytes(code: u8) -> u32 {
    match code & 0x18 {
        BPF_B => 1,
        BPF_H => 2,
        BPF_W => 4,
        _ => 8,
    }
}

fn bpf_call(
    m: &mut Machine,
    funcs: &HashMap<&str, &FunctionCode>,
    f: &FunctionCode,
    args: [u64; 5],
) -> R<u64> {
    let mut r = [POISON; 11];
    r[1..6].copy_from_slice(&args);
    r[10] = m.push_frame();
    let insns: &[RawInsn] = &f.insns;
    let mut pc = 0usize;
    let result = loop {
        m.tick()?;
        let i = *insns
            .get(pc)
            .ok_or_else(|| format!("{}: pc {pc} out of range", f.name))?;
        let (d, s) = (i.dst as usize, i.src as usize);
        if d > 10 || s > 10 {
            return Err(format!("pc {pc}: bad register"));
        }
        let class = i.code & 7;
        let op = i.code & 0xf0;
        let x = i.code & BPF_X != 0;
        pc += 1;
        match class {
            BPF_ALU | BPF_ALU64 => {
                let w32 = class == BPF_ALU;
                let src = if x {
                    r[s]
                } else if w32 {
                    u64::from(i.imm as u32)
                } else {
                    i.imm as i64 as u64
                };
                r[d] = match op {
                    BPF_MOV if w32 => u64::from(src as u32),
                    BPF_MOV => src,
                    BPF_NEG if w32 => u64::from((r[d] as u32).wrapping_neg()),
                    BPF_NEG => r[d].wrapping_neg(),
                    BPF_END if i.code & BPF_TO_BE != 0 => bswap(i.imm as u8, r[d]),
                    BPF_END => r[d] & (u64::MAX >> (64 - i.imm.clamp(1, 64))),
                    _ => alu(
                        alu_op(op).ok_or_else(|| format!("pc {}: alu op {op:#x}", pc - 1))?,
                        w32,
                        r[d],
                        src,
                    ),
                };
            }
            BPF_LD => {
                let hi = insns.get(pc).ok_or("ld_imm64 at the end")?;
                if i.src != 0 {
                    return Err("map loads are not supported by the interpreter".into());
                }
                r[d] = u64::from(i.imm as u32) | (u64::from(hi.imm as u32) << 32);
                pc += 1;
            }
            BPF_LDX => r[d] = m.load(r[s].wrapping_add(i.off as i64 as u64), size_bytes(i.code))?,
            BPF_ST => m.store(
                r[d].wrapping_add(i.off as i64 as u64),
                size_bytes(i.code),
                i.imm as i64 as u64,
            )?,
            BPF_STX => m.store(
                r[d].wrapping_add(i.off as i64 as u64),
                size_bytes(i.code),
                r[s],
            )?,
            BPF_JMP | BPF_JMP32 => {
                let w32 = class == BPF_JMP32;
                match op {
                    BPF_JA => {
                        let off = if w32 {
                            i64::from(i.imm)
                        } else {
                            i64::from(i.off)
                        };
                        pc = (pc as i64 + off) as usize;
                    }
                    BPF_EXIT => break r[0],
                    BPF_CALL => {
                        let at = pc - 1;
                        r[0] = if i.src == BPF_PSEUDO_CALL {
                            let name = f
                                .relocs
                                .iter()
                                .find_map(|rel| match &rel.target {
                                    RelocTarget::Subprogram(n) if rel.insn == at => {
                                        Some(n.as_str())
                                    }
                                    _ => None,
                                })
                                .ok_or_else(|| format!("pc {at}: call without relocation"))?;
                            let g = funcs
                                .get(name)
                                .ok_or_else(|| format!("no function {name}"))?;
                            bpf_call(m, funcs, g, [r[1], r[2], r[3], r[4], r[5]])?
                        } else {
                            m.helper(i.imm)?
                        };
                        for (k, reg) in r.iter_mut().enumerate().take(6).skip(1) {
                            *reg = POISON ^ k as u64;
                        }
                    }
                    _ => {
                        let c = jmp_cond(op)
                            .ok_or_else(|| format!("pc {}: jump op {op:#x}", pc - 1))?;
                        let b = if x {
                            r[s]
                        } else if w32 {
                            u64::from(i.imm as u32)
                        } else {
                            i.imm as i64 as u64
                        };
                        if cond(c, w32, r[d], b) {
                            pc = (pc as i64 + i64::from(i.off)) as usize;
                        }
                    }
                }
            }
            _ => return Err(format!("pc {}: class {class}", pc - 1)),
        }
    };
    m.pop_frame();
    Ok(result)
}
