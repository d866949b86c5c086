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
use crate::hooks::{ArgKind, CtxFieldKind, HelperSig, RetKind};

/// The verifier-level type of a virtual register at one program point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    /// Not defined on some path here.
    Undef,
    /// Different, incompatible types on different paths.
    Conflict,
    /// An integer below 2^bits.
    Scalar { bits: u8 },
    Ctx,
    /// `base + off` where `base` is packet data plus a variable part (`base` 0: none);
    /// bytes `[0, range)` from `base` are proven readable; the variable part is at most `var_max`.
    Packet { base: u32, off: i32, var_max: u32, range: u32 },
    PacketEnd,
    PacketMeta,
    /// A packet pointer after a helper that may move packet data.
    Invalid { helper: &'static str },
    MapPtr { map: MapId },
    MapValueOrNull { map: MapId, id: u32 },
    MapValue { map: MapId, off: i32 },
    Stack { slot: SlotId, off: i32 },
    RecordOrNull { id: u32, size: u32 },
    Record { id: u32, size: u32, off: i32 },
}

impl Ty {
    fn describe(&self, func: &Function) -> String {
        match *self {
            Ty::Undef => "an undefined value".into(),
            Ty::Conflict => "different types on different paths".into(),
            Ty::Scalar { bits } => format!("a {bits}-bit scalar"),
            Ty::Ctx => "the context".into(),
            Ty::Packet { .. } => "a packet pointer".into(),
            Ty::PacketEnd => "the packet end".into(),
            Ty::PacketMeta => "the packet metadata pointer".into(),
            Ty::Invalid { helper } => format!("a packet pointer invalidated by {helper}"),
            Ty::MapPtr { map } => format!("map '{}'", map_name(func, map)),
            Ty::MapValueOrNull { map, .. } => format!("a value of map '{}' or null", map_name(func, map)),
            Ty::MapValue { map, .. } => format!("a value of map '{}'", map_name(func, map)),
            Ty::Stack { slot, .. } => format!("a pointer to {slot}"),
            Ty::RecordOrNull { .. } => "a ring-buffer record or null".into(),
            Ty::Record { .. } => "a ring-buffer record".into(),
        }
    }
}

fn map_name(func: &Function, map: MapId) -> &str {
    func.maps.get(map.0 as usize).map(|m| m.name.as_str()).unwrap_or("?")
}

fn join(a: Ty, b: Ty) -> Ty {
    match (a, b) {
        _ if a == b => a,
        (Ty::Undef, _) | (_, Ty::Undef) => Ty::Undef,
        (Ty::Scalar { bits: x }, Ty::Scalar { bits: y }) => Ty::Scalar { bits: x.max(y) },
        (
            Ty::Packet { base, off, var_max, range: r1 },
            Ty::Packet { base: b2, off: o2, var_max: v2, range: r2 },
        ) if base == b2 && off == o2 && var_max == v2 => Ty::Packet { base, off, var_max, range: r1.min(r2) },
        (Ty::MapValueOrNull { map, id }, Ty::MapValue { map: m2, off: 0 })
        | (Ty::MapValue { map: m2, off: 0 }, Ty::MapValueOrNull { map, id })
            if map == m2 =>
        {
            Ty::MapValueOrNull { map, id }
        }
        (Ty::Invalid { helper }, _) | (_, Ty::Invalid { helper }) => Ty::Invalid { helper },
        _ => Ty::Conflict,
    }
}

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

fn bits_of(v: u64) -> u8 {
    (64 - v.leading_zeros()) as u8
}

struct State {
    tys: Vec<Ty>,
    touched: Vec<u32>,
    /// Unreleased ring-buffer records (id, holder).
    refs: Vec<(u32, VReg)>,
    /// Initialized bytes of the user stack area (slot `i` starts at `slot_base[i]`).
    stack: StackInit,
}


/// One bit per byte of the 512-byte frame.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
struct StackInit([u64; 8]);

impl StackInit {
    fn write(&mut self, from: u32, len: u32) {
        for b in from..from + len {
            self.0[(b / 64) as usize] |= 1 << (b % 64);
        }
    }

    fn all_written(&self, from: u32, len: u32) -> bool {
        (from..from + len).all(|b| self.0[(b / 64) as usize] & (1 << (b % 64)) != 0)
    }

    fn meet(&self, o: &StackInit) -> StackInit {
        let mut r = *self;
        for (a, b) in r.0.iter_mut().zip(&o.0) {
            *a &= b;
        }
        r
    }
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
        CheckError::WrongType { value: v.to_string(), expected, found: found.describe(self.func) }
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
    fn access(&mut self, ptr: VReg, value: VReg, off: i64, size: u32, write: bool, init: bool) -> R<()> {
        let access = if write { "store" } else { "load" };
        match self.defined(ptr)? {
            Ty::Packet { off: poff, range, .. } => {
                let start = i64::from(poff) + off;
                if start < 0 || start + i64::from(size) > i64::from(range) {
                    return Err(CheckError::PacketOutOfRange { value, access, size, off: start, proven: range });
                }
                Ok(())
            }
            Ty::MapValueOrNull { map, .. } => {
                Err(CheckError::NullDeref { value: ptr, map: map_name(self.func, map).to_string() })
            }
            Ty::RecordOrNull { .. } => Err(CheckError::NullDeref { value: ptr, map: "ring buffer".into() }),
            Ty::MapValue { map, off: moff } => {
                let limit = self.func.maps[map.0 as usize].value_size;
                let start = i64::from(moff) + off;
                bounds(value, access, start, size, limit, "map value")
            }
            Ty::Record { size: limit, off: roff, .. } => {
                bounds(value, access, i64::from(roff) + off, size, limit, "ring-buffer record")
            }
            Ty::Stack { slot, off: soff } => {
                let limit = self.func.slots[slot.0 as usize].size;
                let start = i64::from(soff) + off;
                bounds(value, access, start, size, limit, "stack slot")?;
                let at = self.slot_base[slot.0 as usize] + start as u32;
                if write {
                    self.st.stack.write(at, size);
                } else if init && !self.st.stack.all_written(at, size) {
                    return Err(CheckError::StackUninit { slot, off: start as u32, size });
                }
                Ok(())
            }
            t => Err(self.wrong(ptr, "a pointer to packet, map value, record or stack", t)),
        }
    }

    fn inst(&mut self, inst: &Inst) -> R<()> {
        match inst {
            Inst::Const { dst, value } => {
                let bits = if *value < 0 { 64 } else { bits_of(*value as u64) };
                self.set(*dst, Ty::Scalar { bits });
            }
            Inst::Copy { dst, src } => {
                let t = self.defined(*src)?;
                if t == Ty::Conflict {
                    return Err(self.wrong(*src, "one type on every path", t));
                }
                self.set(*dst, t);
            }
            Inst::Alu { op, width, dst, a, b } => {
                let x = self.scalar(*a)?;
                let y = self.operand_bits(*b, *width)?;
                let imm = match b {
                    Operand::Imm(i) => Some(*i),
                    Operand::Reg(_) => None,
                };
                let limit = if *width == Width::W32 { 32 } else { 64 };
                match (op, imm) {
                    (AluOp::Lsh | AluOp::Rsh | AluOp::Arsh, Some(k)) if !(0..limit).contains(&k) => {
                        return Err(CheckError::Other(format!("{dst}: shift by {k} (must be below {limit})")));
                    }
                    (AluOp::Div | AluOp::Mod, Some(0)) => {
                        return Err(CheckError::Other(format!("{dst}: division by the constant 0")));
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
                let bits = if *width == Width::W32 { bits.min(32) } else { bits };
                self.set(*dst, Ty::Scalar { bits });
            }
            Inst::Neg { width, dst, src } => {
                self.scalar(*src)?;
                self.set(*dst, Ty::Scalar { bits: if *width == Width::W32 { 32 } else { 64 } });
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
                    CtxFieldKind::Scalar => Ty::Scalar { bits: field.size * 8 },
                    CtxFieldKind::PacketStart => Ty::Packet { base: 0, off: 0, var_max: 0, range: 0 },
                    CtxFieldKind::PacketEnd => Ty::PacketEnd,
                    CtxFieldKind::PacketMeta => Ty::PacketMeta,
                };
                self.set(*dst, t);
            }
            Inst::Load { dst, ptr, off, size } => {
                self.access(*ptr, *dst, i64::from(*off), size.bytes(), false, true)?;
                self.set(*dst, Ty::Scalar { bits: (size.bytes() * 8) as u8 });
            }
            Inst::Store { ptr, off, value, size } => {
                if let Operand::Reg(v) = value {
                    self.scalar(*v)?;
                }
                self.access(*ptr, *ptr, i64::from(*off), size.bytes(), true, false)?;
            }
            Inst::PtrAdd { dst, ptr, offset } => {
                let t = self.ptr_add(*dst, *ptr, *offset)?;
                self.set(*dst, t);
            }
            Inst::StackAddr { dst, slot } => self.set(*dst, Ty::Stack { slot: *slot, off: 0 }),
            Inst::StackLoad { dst, slot, off, size } => {
                self.stack_access(*slot, *dst, *off, size.bytes(), false)?;
                self.set(*dst, Ty::Scalar { bits: (size.bytes() * 8) as u8 });
            }
            Inst::StackStore { slot, off, value, size } => {
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
            Inst::Call { dst, helper, args } => self.call(*dst, helper, args)?,
            Inst::CallLocal { dst, func, args } => {
                let sig = self.callees.get(func).ok_or_else(|| CheckError::Other(format!("unknown function {func}")))?;
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

    fn stack_access(&mut self, slot: SlotId, value: VReg, off: u32, size: u32, write: bool) -> R<()> {
        let limit = self.func.slots[slot.0 as usize].size;
        bounds(value, if write { "store" } else { "load" }, i64::from(off), size, limit, "stack slot")?;
        let at = self.slot_base[slot.0 as usize] + off;
        if write {
            self.st.stack.write(at, size);
        } else if !self.st.stack.all_written(at, size) {
            return Err(CheckError::StackUninit { slot, off, size });
        }
        Ok(())
    }

    fn ptr_add(&mut self, dst: VReg, ptr: VReg, offset: Operand) -> R<Ty> {
        let t = self.defined(ptr)?;
        let bad_off = |o: i64| CheckError::Other(format!("{dst}: pointer offset {o} out of range"));
        Ok(match (t, offset) {
            (Ty::Packet { base, off, var_max, range }, Operand::Imm(k)) => {
                let o = i64::from(off) + k;
                if !(0..=i64::from(MAX_PACKET_OFF)).contains(&o) {
                    return Err(bad_off(o));
                }
                Ty::Packet { base, off: o as i32, var_max, range }
            }
            (Ty::Packet { off, var_max, .. }, Operand::Reg(v)) => {
                let bits = self.scalar(v)?;
                if bits > 16 {
                    return Err(CheckError::UnboundedOffset { value: v, bits });
                }
                let var_max = var_max.saturating_add((1u32 << bits) - 1);
                if var_max > MAX_PACKET_OFF {
                    return Err(CheckError::UnboundedOffset { value: v, bits });
                }
                Ty::Packet { base: self.fresh(), off, var_max, range: 0 }
            }
            (Ty::MapValue { map, off }, Operand::Imm(k)) => {
                let o = i64::from(off) + k;
                if o < 0 || o > i64::from(self.func.maps[map.0 as usize].value_size) {
                    return Err(bad_off(o));
                }
                Ty::MapValue { map, off: o as i32 }
            }
            (Ty::Stack { slot, off }, Operand::Imm(k)) => {
                let o = i64::from(off) + k;
                if o < 0 || o > i64::from(self.func.slots[slot.0 as usize].size) {
                    return Err(bad_off(o));
                }
                Ty::Stack { slot, off: o as i32 }
            }
            (Ty::Record { id, size, off }, Operand::Imm(k)) => {
                let o = i64::from(off) + k;
                if o < 0 || o > i64::from(size) {
                    return Err(bad_off(o));
                }
                Ty::Record { id, size, off: o as i32 }
            }
            (t, Operand::Reg(_)) => return Err(self.wrong(ptr, "a packet pointer (variable offsets)", t)),
            (t, Operand::Imm(_)) => return Err(self.wrong(ptr, "a pointer", t)),
        })
    }

    fn invalidate_packet(&mut self, helper: &'static str) {
        for &v in &self.st.touched {
            let t = &mut self.st.tys[v as usize];
            if matches!(t, Ty::Packet { .. } | Ty::PacketEnd | Ty::PacketMeta) {
                *t = Ty::Invalid { helper };
            }
        }
    }

    fn call(&mut self, dst: Option<VReg>, helper: &'static HelperSig, args: &[Operand]) -> R<()> {
        if !self.func.hook.allows_helper(helper) {
            return Err(CheckError::HelperNotAllowed { helper: helper.name, hook: format!("{:?}", self.func.hook) });
        }
        if args.len() != helper.args.len() {
            return Err(CheckError::HelperArity { helper: helper.name, expected: helper.args.len(), found: args.len() });
        }
        let mut map: Option<MapId> = None;
        let mut alloc = 0u32;
        let mut released = None;
        let mut uninit_writes = Vec::new();
        for (i, (&a, &kind)) in args.iter().zip(helper.args).enumerate() {
            let arg_err = |_: &Self, expected: String, found: String| CheckError::HelperArg {
                value: a.to_string(),
                helper: helper.name,
                index: i + 1,
                expected,
                found,
            };
            let ty = match a {
                Operand::Reg(v) => self.defined(v)?,
                Operand::Imm(k) => Ty::Scalar { bits: if k < 0 { 64 } else { bits_of(k as u64) } },
            };
            let found = ty.describe(self.func);
            let next_size = || match args.get(i + 1) {
                Some(Operand::Imm(k)) if (0..=512).contains(k) => Some(*k as u32),
                _ => None,
            };
            match kind {
                ArgKind::Ctx => {
                    if ty != Ty::Ctx {
                        return Err(arg_err(self, "the context".into(), found));
                    }
                }
                ArgKind::Map | ArgKind::ProgArray | ArgKind::RingBuf => {
                    let Ty::MapPtr { map: m } = ty else {
                        return Err(arg_err(self, "a map".into(), found));
                    };
                    let k = self.func.maps[m.0 as usize].kind;
                    let ok = match kind {
                        ArgKind::ProgArray => k == MapKind::ProgArray,
                        ArgKind::RingBuf => k == MapKind::RingBuf,
                        _ => !matches!(k, MapKind::ProgArray | MapKind::RingBuf),
                    };
                    if !ok {
                        return Err(arg_err(self, format!("a map usable here ({kind:?})"), format!("{found} ({k:?})")));
                    }
                    map = Some(m);
                }
                ArgKind::MapKey | ArgKind::MapValue => {
                    let Some(m) = map else {
                        return Err(CheckError::Other(format!("helper {}: key without a map", helper.name)));
                    };
                    let decl = &self.func.maps[m.0 as usize];
                    let size = if kind == ArgKind::MapKey { decl.key_size } else { decl.value_size };
                    self.mem_arg(a, size, false).map_err(|e| arg_err(self, format!("{size} readable bytes"), e))?;
                }
                ArgKind::Mem | ArgKind::MemOrNull | ArgKind::UninitMem => {
                    let Some(size) = next_size() else {
                        return Err(arg_err(self, "memory followed by a constant size (0..=512)".into(), found));
                    };
                    if kind == ArgKind::MemOrNull && a == Operand::Imm(0) {
                        if size != 0 {
                            return Err(arg_err(self, "size 0 with a null pointer".into(), found));
                        }
                        continue;
                    }
                    if size == 0 {
                        return Err(arg_err(self, "a non-zero size".into(), found));
                    }
                    let write = kind == ArgKind::UninitMem;
                    self.mem_arg(a, size, write).map_err(|e| arg_err(self, format!("{size} accessible bytes"), e))?;
                    if write {
                        uninit_writes.push((a, size));
                    }
                }
                ArgKind::Size => {
                    if !matches!(a, Operand::Imm(0..=512)) {
                        return Err(arg_err(self, "a constant size".into(), found));
                    }
                }
                ArgKind::AllocSize => match a {
                    Operand::Imm(k @ 1..=0x7fff_ffff) => alloc = k as u32,
                    _ => return Err(arg_err(self, "a constant size".into(), found)),
                },
                ArgKind::RingBufRecord => match ty {
                    Ty::Record { id, off: 0, .. } => released = Some(id),
                    _ => return Err(arg_err(self, "a non-null ring-buffer record".into(), found)),
                },
                ArgKind::Scalar => {
                    if !matches!(ty, Ty::Scalar { .. }) {
                        return Err(arg_err(self, "a scalar".into(), found));
                    }
                }
            }
        }
        if helper.id == crate::hooks::TAIL_CALL.id
            && let Some(&(_, v)) = self.st.refs.first()
        {
            return Err(CheckError::RecordLeak { value: v });
        }
        if let Some(id) = released {
            self.st.refs.retain(|r| r.0 != id);
            for &v in &self.st.touched {
                let t = &mut self.st.tys[v as usize];
                if matches!(t, Ty::Record { id: i, .. } if *i == id) {
                    *t = Ty::Undef;
                }
            }
        }
        if helper.changes_packet {
            self.invalidate_packet(helper.name);
        }
        if let Some(d) = dst {
            let t = match helper.ret {
                RetKind::Scalar => Ty::Scalar { bits: if matches!(helper.id, 7 | 8) { 32 } else { 64 } },
                RetKind::MapValueOrNull => match map {
                    Some(map) => Ty::MapValueOrNull { map, id: self.fresh() },
                    None => return Err(CheckError::Other(format!("helper {}: no map argument", helper.name))),
                },
                RetKind::Void => {
                    return Err(CheckError::Other(format!("{d}: helper {} returns nothing", helper.name)));
                }
                RetKind::RingBufRecordOrNull => {
                    let id = self.fresh();
                    self.st.refs.push((id, d));
                    Ty::RecordOrNull { id, size: alloc }
                }
            };
            self.set(d, t);
        } else if helper.ret == RetKind::RingBufRecordOrNull {
            return Err(CheckError::Other(format!("result of {} must be kept", helper.name)));
        }
        Ok(())
    }

    /// A pointer argument: `size` bytes accessible (and initialized unless written by the helper).
    fn mem_arg(&mut self, a: Operand, size: u32, write: bool) -> Result<(), String> {
        let Operand::Reg(v) = a else {
            return Err("a constant".into());
        };
        self.access(v, v, 0, size, write, !write).map_err(|e| e.to_string())
    }

    fn terminator(&mut self, term: &Terminator) -> R<()> {
        match term {
            Terminator::None | Terminator::Jump(_) => {}
            Terminator::Branch { cond, width, a, b, .. } => {
                let ta = self.defined(*a)?;
                match ta {
                    Ty::Scalar { .. } => {
                        self.operand_bits(*b, *width)?;
                    }
                    Ty::MapValueOrNull { .. } | Ty::RecordOrNull { .. } | Ty::MapValue { .. } | Ty::Record { .. }
                        if *b == Operand::Imm(0) && matches!(cond, Cond::Eq | Cond::Ne) && *width == Width::W64 => {}
                    t => return Err(self.wrong(*a, "a scalar (or a null check of a map value)", t)),
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
            Terminator::Branch { cond, a, b: Operand::Imm(0), then_, else_, .. }
                if matches!(cond, Cond::Eq | Cond::Ne) && then_ != else_ =>
            {
                let null_edge = (cond == Cond::Eq) == (succ == then_);
                let id = match self.get(a) {
                    Ty::MapValueOrNull { id, .. } | Ty::RecordOrNull { id, .. } => id,
                    _ => return t,
                };
                match t {
                    Ty::MapValueOrNull { map, id: i } if i == id => {
                        if null_edge { Ty::Scalar { bits: 0 } } else { Ty::MapValue { map, off: 0 } }
                    }
                    Ty::RecordOrNull { id: i, size } if i == id => {
                        if null_edge { Ty::Scalar { bits: 0 } } else { Ty::Record { id, size, off: 0 } }
                    }
                    _ => t,
                }
            }
            Terminator::CheckPacketBounds { ptr, len, ok, fail, .. } if succ == ok && ok != fail => {
                match (self.get(ptr), t) {
                    (Ty::Packet { base, off, .. }, Ty::Packet { base: b2, off: o2, var_max, range }) if base == b2 => {
                        let proven = (off as u32).saturating_add(len);
                        Ty::Packet { base, off: o2, var_max, range: range.max(proven) }
                    }
                    _ => t,
                }
            }
            _ => t,
        }
    }

    fn edge_refs(&self, term: &Terminator, succ: BlockId) -> Vec<(u32, VReg)> {
        let mut refs = self.st.refs.clone();
        if let Terminator::Branch { cond, a, b: Operand::Imm(0), then_, else_, .. } = *term
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

fn bounds(value: VReg, access: &'static str, start: i64, size: u32, limit: u32, what: &'static str) -> R<()> {
    if start < 0 || start + i64::from(size) > i64::from(limit) {
        return Err(CheckError::OutOfBounds { value, access, size, off: start, limit, what });
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
    let mut info = CheckInfo { narrow_branch: vec![false; nb] };
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
    for b in 0..nb {
        in_off[b] = in_vregs.len();
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
        return Err(CodegenError::StackOverflow { func: func.name.clone(), needed: total, limit: 512 });
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
    let fail = |b: BlockId, error| CodegenError::Check { func: func.name.clone(), block: b, error };
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
                    let n = if first { t } else { join(in_tys[k], t) };
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
    Err(CodegenError::Internal { func: func.name.clone(), msg: "type check did not converge (loop)".into() })
}
