//! Helper calls and pointer arithmetic, for the checker: argument kinds from the helper's
//! signature ([`crate::hooks`]), the memory each pointer argument must cover, result types, and the
//! side effects the verifier applies (packet pointers invalidated, ring-buffer records released).
//!
//! In: the checker's current state. Out: the updated state or a [`CheckError`] naming the value.

use super::ty::{Ty, bits_of};
use super::{Checker, MAX_PACKET_OFF, R};
use crate::codegen::error::CheckError;
use crate::codegen::ir::*;
use crate::hooks::{ArgKind, HelperSig, RetKind};

impl Checker<'_> {
    pub(super) fn ptr_add(&mut self, dst: VReg, ptr: VReg, offset: Operand) -> R<Ty> {
        let t = self.defined(ptr)?;
        let bad_off = |o: i64| CheckError::Other(format!("{dst}: pointer offset {o} out of range"));
        Ok(match (t, offset) {
            (
                Ty::Packet {
                    base,
                    off,
                    var_max,
                    range,
                },
                Operand::Imm(k),
            ) => {
                let o = i64::from(off) + k;
                if !(0..=i64::from(MAX_PACKET_OFF)).contains(&o) {
                    return Err(bad_off(o));
                }
                Ty::Packet {
                    base,
                    off: o as i32,
                    var_max,
                    range,
                }
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
                Ty::Packet {
                    base: self.fresh(),
                    off,
                    var_max,
                    range: 0,
                }
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
                Ty::Stack {
                    slot,
                    off: o as i32,
                }
            }
            (Ty::Record { id, size, off }, Operand::Imm(k)) => {
                let o = i64::from(off) + k;
                if o < 0 || o > i64::from(size) {
                    return Err(bad_off(o));
                }
                Ty::Record {
                    id,
                    size,
                    off: o as i32,
                }
            }
            (t, Operand::Reg(_)) => {
                return Err(self.wrong(ptr, "a packet pointer (variable offsets)", t));
            }
            (t, Operand::Imm(_)) => return Err(self.wrong(ptr, "a pointer", t)),
        })
    }

    pub(super) fn invalidate_packet(&mut self, helper: &'static str) {
        for &v in &self.st.touched {
            let t = &mut self.st.tys[v as usize];
            if matches!(t, Ty::Packet { .. } | Ty::PacketEnd | Ty::PacketMeta) {
                *t = Ty::Invalid { helper };
            }
        }
    }

    pub(super) fn call(
        &mut self,
        dst: Option<VReg>,
        helper: &'static HelperSig,
        args: &[Operand],
    ) -> R<()> {
        if !self.func.hook.allows_helper(helper) {
            return Err(CheckError::HelperNotAllowed {
                helper: helper.name,
                hook: format!("{:?}", self.func.hook),
            });
        }
        if args.len() != helper.args.len() {
            return Err(CheckError::HelperArity {
                helper: helper.name,
                expected: helper.args.len(),
                found: args.len(),
            });
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
                Operand::Imm(k) => Ty::Scalar {
                    bits: if k < 0 { 64 } else { bits_of(k as u64) },
                },
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
                        return Err(arg_err(
                            self,
                            format!("a map usable here ({kind:?})"),
                            format!("{found} ({k:?})"),
                        ));
                    }
                    map = Some(m);
                }
                ArgKind::MapKey | ArgKind::MapValue => {
                    let Some(m) = map else {
                        return Err(CheckError::Other(format!(
                            "helper {}: key without a map",
                            helper.name
                        )));
                    };
                    let decl = &self.func.maps[m.0 as usize];
                    let size = if kind == ArgKind::MapKey {
                        decl.key_size
                    } else {
                        decl.value_size
                    };
                    self.mem_arg(a, size, false)
                        .map_err(|e| arg_err(self, format!("{size} readable bytes"), e))?;
                }
                ArgKind::Mem | ArgKind::MemOrNull | ArgKind::UninitMem => {
                    let Some(size) = next_size() else {
                        return Err(arg_err(
                            self,
                            "memory followed by a constant size (0..=512)".into(),
                            found,
                        ));
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
                    self.mem_arg(a, size, write)
                        .map_err(|e| arg_err(self, format!("{size} accessible bytes"), e))?;
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
                RetKind::Scalar => Ty::Scalar {
                    bits: if matches!(helper.id, 7 | 8) { 32 } else { 64 },
                },
                RetKind::MapValueOrNull => match map {
                    Some(map) => Ty::MapValueOrNull {
                        map,
                        id: self.fresh(),
                    },
                    None => {
                        return Err(CheckError::Other(format!(
                            "helper {}: no map argument",
                            helper.name
                        )));
                    }
                },
                RetKind::Void => {
                    return Err(CheckError::Other(format!(
                        "{d}: helper {} returns nothing",
                        helper.name
                    )));
                }
                RetKind::RingBufRecordOrNull => {
                    let id = self.fresh();
                    self.st.refs.push((id, d));
                    Ty::RecordOrNull { id, size: alloc }
                }
            };
            self.set(d, t);
        } else if helper.ret == RetKind::RingBufRecordOrNull {
            return Err(CheckError::Other(format!(
                "result of {} must be kept",
                helper.name
            )));
        }
        Ok(())
    }

    /// A pointer argument: `size` bytes accessible (and initialized unless written by the helper).
    fn mem_arg(&mut self, a: Operand, size: u32, write: bool) -> Result<(), String> {
        let Operand::Reg(v) = a else {
            return Err("a constant".into());
        };
        self.access(v, v, 0, size, write, !write)
            .map_err(|e| e.to_string())
    }
}
