//! The builder API through which the policy compiler writes IR.
//!
//! In: calls like `let v = f.load(data, 12, Size::H)`. Out: a [`Function`] (from [`FunctionBuilder::finish`]).
//! Instructions go to the *current* block; terminators end it. Builder misuse (an unknown context
//! field, an instruction after a terminator, an unterminated block) is collected and reported by
//! `finish`, so that building code reads straight without `?` on every line. Typing errors (packet
//! ranges, null checks, ...) are found later by the checker.
//!
//! ```
//! use ciliumc_targets::codegen::{FunctionBuilder, Cond, Size};
//! use ciliumc_targets::hooks::{Hook, TC_ACT_OK, TC_ACT_SHOT};
//! let mut f = FunctionBuilder::new("ingress", Hook::TcIngress);
//! let drop = f.block();
//! let data = f.load_ctx("data");
//! let end = f.load_ctx("data_end");
//! f.check_packet_bounds(data, end, 14, drop); // continues in the "bounds ok" block
//! let proto = f.load(data, 12, Size::H);
//! let pass = f.block();
//! f.branch(Cond::Eq, proto, 0x0008, pass, drop);
//! f.switch_to(pass);
//! f.ret(TC_ACT_OK);
//! f.switch_to(drop);
//! f.ret(TC_ACT_SHOT);
//! let func = f.finish().unwrap();
//! assert_eq!(func.blocks.len(), 4);
//! ```

use super::error::CodegenError;
use super::ir::*;
use crate::hooks::{self, HelperSig, Hook};

pub struct FunctionBuilder {
    /// Everything but the blocks, which are built in `blocks`.
    func: Function,
    blocks: Vec<Block>,
    cur: BlockId,
    errors: Vec<String>,
}

impl FunctionBuilder {
    /// An entry program for `hook`; the context arrives in the first parameter ([`Self::ctx`]).
    pub fn new(name: &str, hook: Hook) -> Self {
        Self::with_params(name, hook, true, &[ParamKind::Ctx])
    }

    /// A `.text` subprogram called with `params` (at most 5) from functions of the same hook.
    pub fn subprogram(name: &str, hook: Hook, params: &[ParamKind]) -> Self {
        Self::with_params(name, hook, false, params)
    }

    fn with_params(name: &str, hook: Hook, is_entry: bool, params: &[ParamKind]) -> Self {
        let mut b = FunctionBuilder {
            func: Function {
                name: name.to_string(),
                hook,
                is_entry,
                section: if is_entry {
                    hook.section().to_string()
                } else {
                    ".text".to_string()
                },
                params: Vec::new(),
                blocks: Default::default(),
                slots: Vec::new(),
                maps: Vec::new(),
                num_vregs: 0,
                recurring: false,
            },
            blocks: vec![Block {
                insts: Vec::new(),
                term: Terminator::None,
                annotations: Vec::new(),
            }],
            cur: BlockId(0),
            errors: Vec::new(),
        };
        if params.len() > 5 {
            b.errors
                .push(format!("{} parameters (at most 5)", params.len()));
        }
        for &p in params {
            let v = b.vreg();
            b.func.params.push((v, p));
        }
        b
    }

    /// Marks the function as recurring unchanged across modules: codegen compiles it once per
    /// process and reuses the code (same bytes) while an equal function comes again.
    pub fn set_recurring(&mut self) {
        self.func.recurring = true;
    }

    /// Places an entry program in another ELF section (e.g. `classifier/ingress`).
    pub fn set_section(&mut self, section: &str) {
        self.func.section = section.to_string();
    }

    /// The context parameter. For a subprogram without a ctx parameter this reports an error at
    /// `finish` and returns a fresh (undefined) register.
    pub fn ctx(&mut self) -> VReg {
        match self.func.params.iter().find(|(_, k)| *k == ParamKind::Ctx) {
            Some((v, _)) => *v,
            None => {
                self.errors
                    .push("ctx() in a function without a ctx parameter".into());
                self.vreg()
            }
        }
    }

    /// Parameter `i` (arrives in r(i+1)).
    pub fn param(&self, i: usize) -> Option<VReg> {
        self.func.params.get(i).map(|(v, _)| *v)
    }

    /// A fresh virtual register (defined by a later `assign*`).
    pub fn vreg(&mut self) -> VReg {
        let v = VReg(self.func.num_vregs);
        self.func.num_vregs += 1;
        v
    }

    /// A new, empty block (does not switch to it).
    pub fn block(&mut self) -> BlockId {
        self.blocks.push(Block {
            insts: Vec::new(),
            term: Terminator::None,
            annotations: Vec::new(),
        });
        BlockId(self.blocks.len() as u32 - 1)
    }

    /// Makes `b` the block that following instructions go to.
    pub fn switch_to(&mut self, b: BlockId) {
        if (b.0 as usize) < self.blocks.len() {
            self.cur = b;
        } else {
            self.errors.push(format!("switch_to unknown block {b}"));
        }
    }

    pub fn current(&self) -> BlockId {
        self.cur
    }

    /// Whether the current block already has its terminator.
    pub fn is_terminated(&self) -> bool {
        self.blocks[self.cur.0 as usize].term != Terminator::None
    }

    /// Attaches `annotation` to the next instruction of the current block (its terminator if no
    /// instruction follows). It ends up as `.BTF.ext` line_info on the first eBPF instruction
    /// generated for it (spill reloads and argument moves included), so that `bpftool prog dump
    /// xlated` and `ciliumc disasm` print `; text` above that code.
    pub fn annotate(&mut self, annotation: Annotation) {
        let cur = self.cur;
        let block = &mut self.blocks[cur.0 as usize];
        if block.term != Terminator::None {
            self.errors
                .push(format!("annotation after the terminator of {cur}"));
            return;
        }
        let at = block.insts.len();
        block.annotations.push((at, annotation));
    }

    fn push(&mut self, inst: Inst) {
        let cur = self.cur;
        let block = &mut self.blocks[cur.0 as usize];
        if block.term != Terminator::None {
            self.errors
                .push(format!("instruction after the terminator of {cur}"));
            return;
        }
        block.insts.push(inst);
    }

    fn terminate(&mut self, term: Terminator) {
        let cur = self.cur;
        let block = &mut self.blocks[cur.0 as usize];
        if block.term != Terminator::None {
            self.errors.push(format!("second terminator in {cur}"));
            return;
        }
        block.term = term;
    }

    fn def(&mut self, make: impl FnOnce(VReg) -> Inst) -> VReg {
        let v = self.vreg();
        self.push(make(v));
        v
    }

    pub fn constant(&mut self, value: i64) -> VReg {
        self.def(|dst| Inst::Const { dst, value })
    }

    /// `dst = value` into an existing register.
    pub fn assign_const(&mut self, dst: VReg, value: i64) {
        self.push(Inst::Const { dst, value });
    }

    /// `dst = src` into an existing register (how values merge across branches).
    pub fn assign(&mut self, dst: VReg, src: VReg) {
        self.push(Inst::Copy { dst, src });
    }

    pub fn copy(&mut self, src: VReg) -> VReg {
        self.def(|dst| Inst::Copy { dst, src })
    }

    /// 64-bit `a op b`.
    pub fn alu(&mut self, op: AluOp, a: VReg, b: impl Into<Operand>) -> VReg {
        let b = b.into();
        self.def(|dst| Inst::Alu {
            op,
            width: Width::W64,
            dst,
            a,
            b,
        })
    }

    /// 32-bit `a op b` (result zero-extended).
    pub fn alu32(&mut self, op: AluOp, a: VReg, b: impl Into<Operand>) -> VReg {
        let b = b.into();
        self.def(|dst| Inst::Alu {
            op,
            width: Width::W32,
            dst,
            a,
            b,
        })
    }

    /// `dst = a op b` into an existing register.
    pub fn alu_into(&mut self, dst: VReg, op: AluOp, width: Width, a: VReg, b: impl Into<Operand>) {
        let b = b.into();
        self.push(Inst::Alu {
            op,
            width,
            dst,
            a,
            b,
        });
    }

    pub fn neg(&mut self, width: Width, src: VReg) -> VReg {
        self.def(|dst| Inst::Neg { width, dst, src })
    }

    /// Byte-swap of the low `bits` (16, 32 or 64): network ↔ host order.
    pub fn bswap(&mut self, bits: u8, src: VReg) -> VReg {
        if !matches!(bits, 16 | 32 | 64) {
            self.errors
                .push(format!("bswap of {bits} bits (16, 32 or 64)"));
        }
        self.def(|dst| Inst::Bswap { bits, dst, src })
    }

    /// `ctx->field` through the hook's context layout (`"data"`, `"mark"`, `"cb[0]"`, ...).
    pub fn load_ctx(&mut self, field: &str) -> VReg {
        let ctx = self.ctx();
        match self.func.hook.ctx_field(field) {
            Some(field) if field.readable => self.def(|dst| Inst::LoadCtx { dst, ctx, field }),
            Some(_) => {
                self.errors.push(format!(
                    "{:?} programs may not read context field {field:?}",
                    self.func.hook
                ));
                self.constant(0)
            }
            None => {
                self.errors.push(format!(
                    "{:?} has no context field {field:?}",
                    self.func.hook
                ));
                self.constant(0)
            }
        }
    }

    /// `*(size *)(ptr + off)`.
    pub fn load(&mut self, ptr: VReg, off: i32, size: Size) -> VReg {
        self.def(|dst| Inst::Load {
            dst,
            ptr,
            off,
            size,
        })
    }

    /// `*(size *)(ptr + off) = value`.
    pub fn store(&mut self, ptr: VReg, off: i32, value: impl Into<Operand>, size: Size) {
        let value = value.into();
        self.push(Inst::Store {
            ptr,
            off,
            value,
            size,
        });
    }

    /// `ptr + offset` (pointer arithmetic).
    pub fn ptr_add(&mut self, ptr: VReg, offset: impl Into<Operand>) -> VReg {
        let offset = offset.into();
        self.def(|dst| Inst::PtrAdd { dst, ptr, offset })
    }

    /// A stack slot of `size` bytes (8-aligned).
    pub fn stack_slot(&mut self, size: u32) -> SlotId {
        self.func.slots.push(SlotDecl { size });
        SlotId(self.func.slots.len() as u32 - 1)
    }

    pub fn stack_addr(&mut self, slot: SlotId) -> VReg {
        self.def(|dst| Inst::StackAddr { dst, slot })
    }

    pub fn stack_load(&mut self, slot: SlotId, off: u32, size: Size) -> VReg {
        self.def(|dst| Inst::StackLoad {
            dst,
            slot,
            off,
            size,
        })
    }

    pub fn stack_store(&mut self, slot: SlotId, off: u32, value: impl Into<Operand>, size: Size) {
        let value = value.into();
        self.push(Inst::StackStore {
            slot,
            off,
            value,
            size,
        });
    }

    /// Declares a map this function references (the same name twice yields the same id).
    pub fn map(&mut self, decl: MapDecl) -> MapId {
        if let Some(i) = self.func.maps.iter().position(|m| m.name == decl.name) {
            if self.func.maps[i] != decl {
                self.errors.push(format!(
                    "map {} declared twice with different shapes",
                    decl.name
                ));
            }
            return MapId(i as u32);
        }
        self.func.maps.push(decl);
        MapId(self.func.maps.len() as u32 - 1)
    }

    /// The 32-bit constant `name`, bound when the object is assembled ([`Inst::LinkConst`]).
    pub fn link_const(&mut self, name: &'static str) -> VReg {
        self.def(|dst| Inst::LinkConst { dst, name })
    }

    /// `&map` (ld_imm64 with a map relocation).
    pub fn load_map(&mut self, map: MapId) -> VReg {
        self.def(|dst| Inst::LoadMap { dst, map })
    }

    /// `helper(args...)`; returns r0. For a helper that returns nothing (`RetKind::Void`) the
    /// returned register stays undefined, and using it is an error.
    pub fn call(&mut self, helper: &'static HelperSig, args: &[Operand]) -> VReg {
        let args = args.to_vec();
        if helper.ret == hooks::RetKind::Void {
            self.push(Inst::Call {
                dst: None,
                helper,
                args,
            });
            return self.vreg();
        }
        self.def(|dst| Inst::Call {
            dst: Some(dst),
            helper,
            args,
        })
    }

    /// `map_lookup_elem(&map, key)`: a map value or null; null-check it with [`Self::branch_null`].
    pub fn map_lookup(&mut self, map: MapId, key: VReg) -> VReg {
        let m = self.load_map(map);
        self.call(&hooks::MAP_LOOKUP_ELEM, &[m.into(), key.into()])
    }

    /// [`Self::map_lookup`] with a `u32` key (an array index, an identity), passed through a
    /// 4-byte stack slot of its own.
    pub fn map_lookup_u32(&mut self, map: MapId, key: impl Into<Operand>) -> VReg {
        let slot = self.stack_slot(4);
        self.stack_store(slot, 0, key, Size::W);
        let key = self.stack_addr(slot);
        self.map_lookup(map, key)
    }

    /// `tail_call(ctx, &map, index)`; execution continues here when the slot is empty.
    pub fn tail_call(&mut self, map: MapId, index: impl Into<Operand>) {
        let ctx = self.ctx();
        let m = self.load_map(map);
        let index = index.into();
        self.push(Inst::Call {
            dst: None,
            helper: &hooks::TAIL_CALL,
            args: vec![ctx.into(), m.into(), index],
        });
    }

    /// A bpf-to-bpf call of function `func` of the same module; returns its r0.
    pub fn call_local(&mut self, func: &str, args: &[VReg]) -> VReg {
        let args = args.to_vec();
        let func = func.to_string();
        self.def(|dst| Inst::CallLocal {
            dst: Some(dst),
            func,
            args,
        })
    }

    pub fn jump(&mut self, target: BlockId) {
        self.terminate(Terminator::Jump(target));
    }

    /// 64-bit `if a cond b goto then_ else goto else_`.
    pub fn branch(
        &mut self,
        cond: Cond,
        a: VReg,
        b: impl Into<Operand>,
        then_: BlockId,
        else_: BlockId,
    ) {
        let b = b.into();
        self.terminate(Terminator::Branch {
            cond,
            width: Width::W64,
            a,
            b,
            then_,
            else_,
        });
    }

    /// 32-bit compare of the low halves (JMP32).
    pub fn branch32(
        &mut self,
        cond: Cond,
        a: VReg,
        b: impl Into<Operand>,
        then_: BlockId,
        else_: BlockId,
    ) {
        let b = b.into();
        self.terminate(Terminator::Branch {
            cond,
            width: Width::W32,
            a,
            b,
            then_,
            else_,
        });
    }

    /// `if v == NULL goto is_null else goto not_null`; in `not_null` a map value or record is usable.
    pub fn branch_null(&mut self, v: VReg, is_null: BlockId, not_null: BlockId) {
        self.branch(Cond::Eq, v, 0, is_null, not_null);
    }

    /// `if ptr + len > end goto fail`; continues in a new block where `len` bytes from `ptr` are
    /// readable, and returns it.
    pub fn check_packet_bounds(
        &mut self,
        ptr: VReg,
        end: VReg,
        len: u32,
        fail: BlockId,
    ) -> BlockId {
        let ok = self.block();
        self.terminate(Terminator::CheckPacketBounds {
            ptr,
            end,
            len,
            ok,
            fail,
        });
        self.cur = ok;
        ok
    }

    pub fn ret(&mut self, value: impl Into<Operand>) {
        let value = value.into();
        self.terminate(Terminator::Return(value));
    }

    /// The finished function, or the first builder misuse.
    pub fn finish(self) -> Result<Function, CodegenError> {
        let name = self.func.name.clone();
        if let Some(msg) = self.errors.into_iter().next() {
            return Err(CodegenError::Build { func: name, msg });
        }
        let mut func = self.func;
        func.blocks = self.blocks.into();
        Ok(func)
    }
}
