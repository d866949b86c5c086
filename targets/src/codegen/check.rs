//! The lowering checks: the verifier's rules, applied to the IR before any code is emitted.
//!
//! In: a [`Function`], its block order and liveness, and the signatures of the module's other
//! functions. Out: `Ok(CheckInfo)` (facts instruction selection uses) or the first [`CheckError`]
//! with its function, block and IR value.
//!
//! This is a forward dataflow over the CFG in the verifier's own terms: every live virtual register
//! has a type ([`Ty`]), branch edges refine types (a null check turns "map value or null" into "map
//! value"; a packet bounds check raises the proven range of every packet pointer sharing its variable
//! part), and helpers that move packet data invalidate packet pointers. Block-entry states keep only
//! the live-in registers, so the cost follows live values, not program size.

use std::collections::HashMap;

use super::error::{CheckError, CodegenError};
use super::ir::*;
use super::liveness::Liveness;
use crate::hooks::CtxFieldKind;

#[path = "check_call.rs"]
mod call;
#[path = "check_ty.rs"]
mod ty;

pub use ty::Ty;
use ty::{StackInit, bits_of, join, map_name};

/// What the rest of the pipeline needs from the module's other functions.
#[derive(Clone, Debug)]
pub struct CalleeSig {
    pub params: Vec<ParamKind>,
    /// The callee (or something it calls) may move packet data.
    pub changes_packet: Option<&'static str>,
}

/// Facts instruction selection may rely on.
#[derive(Clone, Debug, Default)]
pub struct CheckInfo {
    /// Per block: the branch's left operand is known to fit in 32 bits (JMP32 may be used for an
    /// unsigned compare against a 32-bit immediate).
    pub narrow_branch: Vec<bool>,
}

const MAX_PACKET_OFF: u32 = 0xffff;

struct State {
    tys: Vec<Ty>,
    touched: Vec<u32>,
    /// Unreleased ring-buffer records (id, holder).
    refs: Vec<(u32, VReg)>,
    /// Initialized bytes of the user stack area (slot `i` starts at `slot_base[i]`).
    stack: StackInit,
}

struct Checker<'a> {
    func: &'a Function,
    callees: &'a HashMap<String, CalleeSig>,
    /// Byte position of each user stack slot in [`StackInit`].
    slot_base: Vec<u32>,
    /// Global index of the instruction being checked; ids derived from it stay the same when a
    /// loop makes the checker visit a block again.
    inst_id: u32,
    st: State,
}

type R<T> = Result<T, CheckError>;

impl Checker<'_> {
    fn get(&self, v: VReg) -> Ty {
        self.st.tys[v.0 as usize]
    }

    fn set(&mut self, v: VReg, t: Ty) {
        if self.st.tys[v.0 as usize] == Ty::Undef {
            self.st.touched.push(v.0);
        }
        self.st.tys[v.0 as usize] = t;
    }

    fn fresh(&mut self) -> u32 {
        self.inst_id + 1
    }

    fn defined(&self, v: VReg) -> R<Ty> {
        match self.get(v) {
            Ty::Undef => Err(CheckError::Undefined { value: v }),
            Ty::Invalid { helper } => Err(CheckError::PacketInvalidated { value: v, helper }),
            t => Ok(t),
        }
    }

    fn wrong(&self, v: VReg, expected: &'static str, found: Ty) -> CheckError {
        CheckError::WrongType {
            value: v.to_string(),
            expected,
            found: found.describe(self.func),
        }
    }

    fn scalar(&self, v: VReg) -> R<u8> {
        match self.defined(v)? {
            Ty::Scalar { bits } => Ok(bits),
            t => Err(self.wrong(v, "a scalar", t)),
        }
    }

    fn operand_bits(&self, o: Operand, width: Width) -> R<u8> {
        match o {
            Operand::Reg(v) => self.scalar(v),
            Operand::Imm(i) if i >= 0 && width == Width::W64 => Ok(bits_of(i as u64)),
            Operand::Imm(i) if width == Width::W32 => Ok(bits_of(u64::from(i as u32))),
            Operand::Imm(_) => Ok(64),
        }
    }

    /// Checks that `size` bytes at `off` from pointer `ptr` may be accessed; `init` whether they
    /// must have been written (stack reads).
    fn access(
        &mut self,
        ptr: VReg,
        value: VReg,
        off: i64,
        size: u32,
        write: bool,
        init: bool,
    ) -> R<()> {
        let access = if write { "store" } else { "load" };
        match self.defined(ptr)? {
            Ty::Packet {
                off: poff, range, ..
            } => {
                let start = i64::from(poff) + off;
                if start < 0 || start + i64::from(size) > i64::from(range) {
                    return Err(CheckError::PacketOutOfRange {
                        value,
                        access,
                        size,
                        off: start,
                        proven: range,
                    });
                }
                Ok(())
            }
            Ty::MapValueOrNull { map, .. } => Err(CheckError::NullDeref {
                value: ptr,
                map: map_name(self.func, map).to_string(),
            }),
            Ty::RecordOrNull { .. } => Err(CheckError::NullDeref {
                value: ptr,
                map: "ring buffer".into(),
            }),
            Ty::MapValue { map, off: moff } => {
                let limit = self.func.maps[map.0 as usize].value_size;
                let start = i64::from(moff) + off;
                bounds(value, access, start, size, limit, "map value")
            }
            Ty::Record {
                size: limit,
                off: roff,
                ..
            } => bounds(
                value,
                access,
                i64::from(roff) + off,
                size,
                limit,
                "ring-buffer record",
            ),
            Ty::Stack { slot, off: soff } => {
                let limit = self.func.slots[slot.0 as usize].size;
                let start = i64::from(soff) + off;
                bounds(value, access, start, size, limit, "stack slot")?;
                let at = self.slot_base[slot.0 as usize] + start as u32;
                if write {
                    self.st.stack.write(at, size);
                } else if init && !self.st.stack.all_written(at, size) {
                    return Err(CheckError::StackUninit {
                        slot,
                        off: start as u32,
                        size,
                    });
                }
                Ok(())
            }
            t => Err(self.wrong(ptr, "a pointer to packet, map value, record or stack", t)),
        }
    }

    fn inst(&mut self, inst: &Inst) -> R<()> {
        match inst {
            Inst::Const { dst, value } => {
                let bits = if *value < 0 {
                    64
                } else {
                    bits_of(*value as u64)
                };
                self.set(*dst, Ty::Scalar { bits });
            }
            Inst::Copy { dst, src } => {
                let t = self.defined(*src)?;
                if t == Ty::Conflict {
                    return Err(self.wrong(*src, "one type on every path", t));
                }
                self.set(*dst, t);
            }
            Inst::Alu {
                op,
                width,
                dst,
                a,
                b,
            } => {
                let x = self.scalar(*a)?;
                let y = self.operand_bits(*b, *width)?;
                let imm = match b {
                    Operand::Imm(i) => Some(*i),
                    Operand::Reg(_) => None,
                };
                let limit = if *width == Width::W32 { 32 } else { 64 };
                match (op, imm) {
                    (AluOp::Lsh | AluOp::Rsh | AluOp::Arsh, Some(k))
                        if !(0..limit).contains(&k) =>
                    {
                        return Err(CheckError::Other(format!(
                            "{dst}: shift by {k} (must be below {limit})"
                        )));
                    }
                    (AluOp::Div | AluOp::Mod, Some(0)) => {
                        return Err(CheckError::Other(format!(
                            "{dst}: division by the constant 0"
                        )));
                    }
                    _ => {}
                }
                let full = 64u8;
                let bits = match op {
                    AluOp::Add => x.max(y).saturating_add(1).min(full),
                    AluOp::Sub => full,
                    AluOp::Mul => x.saturating_add(y).min(full),
                    AluOp::Div | AluOp::Mod => x,
                    AluOp::Or | AluOp::Xor => x.max(y),
                    AluOp::And => x.min(y),
                    AluOp::Lsh => match imm {
                        Some(k @ 0..=63) => x.saturating_add(k as u8).min(full),
                        _ => full,
                    },
                    AluOp::Rsh => match imm {
                        Some(k @ 0..=63) => x.saturating_sub(k as u8),
                        _ => x,
                    },
                    AluOp::Arsh => match (imm, width) {
                        (Some(k @ 0..=63), Width::W64) if x < 64 => x.saturating_sub(k as u8),
                        (Some(k @ 0..=31), Width::W32) if x < 32 => x.saturating_sub(k as u8),
                        _ => full,
                    },
                };
                let bits = if *width == Width::W32 {
                    bits.min(32)
                } else {
                    bits
                };
                self.set(*dst, Ty::Scalar { bits });
            }
            Inst::Neg { width, dst, src } => {
                self.scalar(*src)?;
                self.set(
                    *dst,
                    Ty::Scalar {
                        bits: if *width == Width::W32 { 32 } else { 64 },
                    },
                );
            }
            Inst::Bswap { bits, dst, src } => {
                self.scalar(*src)?;
                self.set(*dst, Ty::Scalar { bits: *bits });
            }
            Inst::LoadCtx { dst, ctx, field } => {
                match self.defined(*ctx)? {
                    Ty::Ctx => {}
                    t => return Err(self.wrong(*ctx, "the context", t)),
                }
                let t = match field.kind {
                    CtxFieldKind::Scalar => Ty::Scalar {
                        bits: field.size * 8,
                    },
                    CtxFieldKind::PacketStart => Ty::Packet {
                        base: 0,
                        off: 0,
                        var_max: 0,
                        range: 0,
                    },
                    CtxFieldKind::PacketEnd => Ty::PacketEnd,
                    CtxFieldKind::PacketMeta => Ty::PacketMeta,
                };
                self.set(*dst, t);
            }
            Inst::Load {
                dst,
                ptr,
                off,
                size,
            } => {
                self.access(*ptr, *dst, i64::from(*off), size.bytes(), false, true)?;
                self.set(
                    *dst,
                    Ty::Scalar {
                        bits: (size.bytes() * 8) as u8,
                    },
                );
            }
            Inst::Store {
                ptr,
                off,
                value,
                size,
            } => {
                if let Operand::Reg(v) = value {
                    self.scalar(*v)?;
                }
                self.access(*ptr, *ptr, i64::from(*off), size.bytes(), true, false)?;
            }
            Inst::PtrAdd { dst, ptr, offset } => {
                let t = self.ptr_add(*dst, *ptr, *offset)?;
                self.set(*dst, t);
            }
            Inst::StackAddr { dst, slot } => self.set(
                *dst,
                Ty::Stack {
                    slot: *slot,
                    off: 0,
                },
            ),
            Inst::StackLoad {
                dst,
                slot,
                off,
                size,
            } => {
                self.stack_access(*slot, *dst, *off, size.bytes(), false)?;
                self.set(
                    *dst,
                    Ty::Scalar {
                        bits: (size.bytes() * 8) as u8,
                    },
                );
            }
            Inst::StackStore {
                slot,
                off,
                value,
                size,
            } => {
                if let Operand::Reg(v) = value {
                    self.scalar(*v)?;
                }
                let value = match value {
                    Operand::Reg(v) => *v,
                    Operand::Imm(_) => VReg(u32::MAX),
                };
                self.stack_access(*slot, value, *off, size.bytes(), true)?;
            }
            Inst::LoadMap { dst, map } => self.set(*dst, Ty::MapPtr { map: *map }),
            Inst::LinkConst { dst, .. } => self.set(*dst, Ty::Scalar { bits: 32 }),
            Inst::Call { dst, helper, args } => self.call(*dst, helper, args)?,
            Inst::CallLocal { dst, func, args } => {
                let sig = self
                    .callees
                    .get(func)
                    .ok_or_else(|| CheckError::Other(format!("unknown function {func}")))?;
                if sig.params.len() != args.len() {
                    return Err(CheckError::Other(format!(
                        "{func} takes {} arguments, got {}",
                        sig.params.len(),
                        args.len()
                    )));
                }
                for (a, p) in args.iter().zip(&sig.params) {
                    match (self.defined(*a)?, p) {
                        (Ty::Ctx, ParamKind::Ctx) | (Ty::Scalar { .. }, ParamKind::Scalar) => {}
                        (t, ParamKind::Ctx) => return Err(self.wrong(*a, "the context", t)),
                        (t, ParamKind::Scalar) => return Err(self.wrong(*a, "a scalar", t)),
                    }
                }
                if let Some(helper) = sig.changes_packet {
                    self.invalidate_packet(helper);
                }
                if let Some(d) = dst {
                    self.set(*d, Ty::Scalar { bits: 64 });
                }
            }
        }
        Ok(())
    }

    fn stack_access(
        &mut self,
        slot: SlotId,
        value: VReg,
        off: u32,
        size: u32,
        write: bool,
    ) -> R<()> {
        let limit = self.func.slots[slot.0 as usize].size;
        bounds(
            value,
            if write { "store" } else { "load" },
            i64::from(off),
            size,
            limit,
            "stack slot",
        )?;
        let at = self.slot_base[slot.0 as usize] + off;
        if write {
            self.st.stack.write(at, size);
        } else if !self.st.stack.all_written(at, size) {
            return Err(CheckError::StackUninit { slot, off, size });
        }
        Ok(())
    }

    fn terminator(&mut self, term: &Terminator) -> R<()> {
        match term {
            Terminator::None | Terminator::Jump(_) => {}
            Terminator::Branch {
                cond, width, a, b, ..
            } => {
                let ta = self.defined(*a)?;
                match ta {
                    Ty::Scalar { .. } => {
                        self.operand_bits(*b, *width)?;
                    }
                    Ty::MapValueOrNull { .. }
                    | Ty::RecordOrNull { .. }
                    | Ty::MapValue { .. }
                    | Ty::Record { .. }
                        if *b == Operand::Imm(0)
                            && matches!(cond, Cond::Eq | Cond::Ne)
                            && *width == Width::W64 => {}
                    t => {
                        return Err(self.wrong(*a, "a scalar (or a null check of a map value)", t));
                    }
                }
            }
            Terminator::CheckPacketBounds { ptr, end, len, .. } => {
                match self.defined(*end)? {
                    Ty::PacketEnd => {}
                    t => return Err(self.wrong(*end, "the packet end", t)),
                }
                match self.defined(*ptr)? {
                    Ty::Packet { off, var_max, .. } => {
                        if var_max + off as u32 + len > MAX_PACKET_OFF {
                            return Err(CheckError::Other(format!(
                                "{ptr}: bounds check of {len} bytes beyond the verifier's 64 KiB packet range"
                            )));
                        }
                    }
                    t => return Err(self.wrong(*ptr, "a packet pointer", t)),
                }
            }
            Terminator::Return(v) => {
                if let Operand::Reg(v) = v {
                    self.scalar(*v)?;
                }
                if let Some(&(_, v)) = self.st.refs.first() {
                    return Err(CheckError::RecordLeak { value: v });
                }
            }
        }
        Ok(())
    }

    /// The type of `v` on the edge `term` → `succ`.
    fn refine(&self, term: &Terminator, succ: BlockId, t: Ty) -> Ty {
        match *term {
            Terminator::Branch {
                cond,
                a,
                b: Operand::Imm(0),
                then_,
                else_,
                ..
            } if matches!(cond, Cond::Eq | Cond::Ne) && then_ != else_ => {
                let null_edge = (cond == Cond::Eq) == (succ == then_);
                let id = match self.get(a) {
                    Ty::MapValueOrNull { id, .. } | Ty::RecordOrNull { id, .. } => id,
                    _ => return t,
                };
                match t {
                    Ty::MapValueOrNull { map, id: i } if i == id => {
                        if null_edge {
                            Ty::Scalar { bits: 0 }
                        } else {
                            Ty::MapValue { map, off: 0 }
                        }
                    }
                    Ty::RecordOrNull { id: i, size } if i == id => {
                        if null_edge {
                            Ty::Scalar { bits: 0 }
                        } else {
                            Ty::Record { id, size, off: 0 }
                        }
                    }
                    _ => t,
                }
            }
            Terminator::CheckPacketBounds {
                ptr, len, ok, fail, ..
            } if succ == ok && ok != fail => match (self.get(ptr), t) {
                (
                    Ty::Packet { base, off, .. },
                    Ty::Packet {
                        base: b2,
                        off: o2,
                        var_max,
                        range,
                    },
                ) if base == b2 => {
                    let proven = (off as u32).saturating_add(len);
                    Ty::Packet {
                        base,
                        off: o2,
                        var_max,
                        range: range.max(proven),
                    }
                }
                _ => t,
            },
            _ => t,
        }
    }

    fn edge_refs(&self, term: &Terminator, succ: BlockId) -> Vec<(u32, VReg)> {
        let mut refs = self.st.refs.clone();
        if let Terminator::Branch {
            cond,
            a,
            b: Operand::Imm(0),
            then_,
            else_,
            ..
        } = *term
            && matches!(cond, Cond::Eq | Cond::Ne)
            && then_ != else_
            && (cond == Cond::Eq) == (succ == then_)
            && let Ty::RecordOrNull { id, .. } = self.get(a)
        {
            refs.retain(|r| r.0 != id);
        }
        refs
    }
}

fn bounds(
    value: VReg,
    access: &'static str,
    start: i64,
    size: u32,
    limit: u32,
    what: &'static str,
) -> R<()> {
    if start < 0 || start + i64::from(size) > i64::from(limit) {
        return Err(CheckError::OutOfBounds {
            value,
            access,
            size,
            off: start,
            limit,
            what,
        });
    }
    Ok(())
}

/// Runs the checks over `func` (blocks in `rpo`, liveness `live`).
pub fn check_function(
    func: &Function,
    rpo: &[BlockId],
    live: &Liveness,
    callees: &HashMap<String, CalleeSig>,
) -> Result<CheckInfo, CodegenError> {
    let nb = func.blocks.len();
    let mut info = CheckInfo {
        narrow_branch: vec![false; nb],
    };
    let mut first_inst = vec![0u32; nb];
    let mut count = 0u32;
    for (i, block) in func.blocks.iter().enumerate() {
        first_inst[i] = count;
        count = count.saturating_add(block.insts.len() as u32);
    }
    // Block-entry states in flat arrays: block b's live-in registers and their types are
    // `in_vregs[in_off[b]..in_off[b + 1]]` and `in_tys[..]` (no allocation per block or edge).
    let mut in_off = vec![0usize; nb + 1];
    let mut in_vregs: Vec<u32> = Vec::new();
    for (b, off) in in_off.iter_mut().enumerate().take(nb) {
        *off = in_vregs.len();
        in_vregs.extend(live.live_in(BlockId(b as u32)).map(|v| v as u32));
    }
    in_off[nb] = in_vregs.len();
    let mut in_tys: Vec<Ty> = vec![Ty::Undef; in_vregs.len()];
    let mut has_entry = vec![false; nb];
    let mut in_refs: Vec<Vec<(u32, VReg)>> = vec![Vec::new(); nb];
    let mut in_stack: Vec<StackInit> = vec![StackInit::default(); nb];
    for k in in_off[0]..in_off[1] {
        let v = in_vregs[k] as usize;
        in_tys[k] = match func.params.iter().find(|(p, _)| p.0 as usize == v) {
            Some((_, ParamKind::Ctx)) => Ty::Ctx,
            Some((_, ParamKind::Scalar)) => Ty::Scalar { bits: 64 },
            None => Ty::Undef,
        };
    }
    has_entry[0] = true;
    let mut slot_base = Vec::with_capacity(func.slots.len());
    let mut total = 0u32;
    for s in &func.slots {
        slot_base.push(total);
        total = total.saturating_add(s.size.div_ceil(8) * 8);
    }
    if total > 512 {
        return Err(CodegenError::StackOverflow {
            func: func.name.clone(),
            needed: total,
            limit: 512,
        });
    }
    let mut ck = Checker {
        func,
        callees,
        slot_base,
        inst_id: 0,
        st: State {
            tys: vec![Ty::Undef; func.num_vregs as usize],
            touched: Vec::new(),
            refs: Vec::new(),
            stack: StackInit::default(),
        },
    };
    let fail = |b: BlockId, error| CodegenError::Check {
        func: func.name.clone(),
        block: b,
        error: Box::new(error),
    };
    let mut dirty = vec![false; nb];
    dirty[0] = true;
    for _pass in 0..64 {
        let mut any = false;
        for &b in rpo {
            let bi = b.0 as usize;
            if !dirty[bi] || !has_entry[bi] {
                continue;
            }
            dirty[bi] = false;
            any = true;
            for &v in &ck.st.touched {
                ck.st.tys[v as usize] = Ty::Undef;
            }
            ck.st.touched.clear();
            for k in in_off[bi]..in_off[bi + 1] {
                ck.set(VReg(in_vregs[k]), in_tys[k]);
            }
            ck.st.refs.clone_from(&in_refs[bi]);
            ck.st.stack = in_stack[bi];
            let block = func.block(b);
            for (k, inst) in block.insts.iter().enumerate() {
                ck.inst_id = first_inst[bi] + k as u32;
                ck.inst(inst).map_err(|e| fail(b, e))?;
            }
            ck.terminator(&block.term).map_err(|e| fail(b, e))?;
            if let Terminator::Branch { a, .. } = block.term {
                info.narrow_branch[bi] = matches!(ck.get(a), Ty::Scalar { bits } if bits <= 32);
            }
            for s in block.term.successors() {
                let si = s.0 as usize;
                let first = !has_entry[si];
                let mut changed = first;
                for k in in_off[si]..in_off[si + 1] {
                    let t = ck.refine(&block.term, s, ck.get(VReg(in_vregs[k])));
                    let n = match (first, join(in_tys[k], t)) {
                        (true, _) => t,
                        // Widen scalars that grow at a merge (loops): their bit width would
                        // otherwise creep up by one per pass.
                        (false, Ty::Scalar { bits }) if in_tys[k] != (Ty::Scalar { bits }) => {
                            Ty::Scalar { bits: 64 }
                        }
                        (false, j) => j,
                    };
                    changed |= n != in_tys[k];
                    in_tys[k] = n;
                }
                let refs = ck.edge_refs(&block.term, s);
                if first {
                    in_refs[si] = refs;
                    in_stack[si] = ck.st.stack;
                } else {
                    for r in refs {
                        if !in_refs[si].iter().any(|x| x.0 == r.0) {
                            in_refs[si].push(r);
                            changed = true;
                        }
                    }
                    let met = in_stack[si].meet(&ck.st.stack);
                    changed |= met != in_stack[si];
                    in_stack[si] = met;
                }
                has_entry[si] = true;
                if changed {
                    dirty[si] = true;
                }
            }
        }
        if !any {
            return Ok(info);
        }
    }
    Err(CodegenError::Internal {
        func: func.name.clone(),
        msg: "type check did not converge (loop)".into(),
    })
}
