//! The virtual-register IR that the policy compiler lowers into.
//!
//! In: built by [`super::builder::FunctionBuilder`]. Out: read by the checker, instruction selection
//! and register allocation. Values live in unlimited virtual registers (`v0`, `v1`, ...); a virtual
//! register may be assigned more than once (no phis: a value that merges from two branches is simply
//! assigned on both). Every block ends in exactly one terminator.

use std::fmt;
use std::sync::Arc;

use crate::hooks::{CtxField, HelperSig, Hook};
pub use crate::program::Annotation;

/// A virtual register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VReg(pub u32);

impl fmt::Display for VReg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A basic block of one function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub u32);

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}", self.0)
    }
}

/// A stack slot of one function (user data such as map keys; spills are separate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(pub u32);

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slot{}", self.0)
    }
}

/// A map referenced by a function (index into [`Function::maps`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MapId(pub u32);

/// Kernel map type, as far as the checker needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapKind {
    Hash,
    Array,
    PerCpuHash,
    PerCpuArray,
    LruHash,
    LpmTrie,
    ProgArray,
    RingBuf,
}

/// A map as code sees it: its `.maps` symbol name and sizes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MapDecl {
    pub name: String,
    pub kind: MapKind,
    pub key_size: u32,
    pub value_size: u32,
}

/// Access size of a load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Size {
    B,
    H,
    W,
    DW,
}

impl Size {
    pub fn bytes(self) -> u32 {
        match self {
            Size::B => 1,
            Size::H => 2,
            Size::W => 4,
            Size::DW => 8,
        }
    }
}

/// Operation width: 32-bit operations zero-extend their result into the upper half.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Width {
    W32,
    W64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AluOp {
    Add,
    Sub,
    Mul,
    /// Unsigned division; division by zero yields 0 (kernel semantics).
    Div,
    /// Unsigned remainder; remainder by zero leaves the dividend.
    Mod,
    Or,
    And,
    Xor,
    Lsh,
    Rsh,
    Arsh,
}

/// Branch conditions; `Gt`..`Le` are unsigned, `Sgt`..`Sle` signed, `Set` is `a & b != 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cond {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Sgt,
    Sge,
    Slt,
    Sle,
    Set,
}

impl Cond {
    /// The condition that holds exactly when this one does not (`Set` has none in eBPF).
    pub fn inverse(self) -> Option<Cond> {
        Some(match self {
            Cond::Eq => Cond::Ne,
            Cond::Ne => Cond::Eq,
            Cond::Gt => Cond::Le,
            Cond::Le => Cond::Gt,
            Cond::Ge => Cond::Lt,
            Cond::Lt => Cond::Ge,
            Cond::Sgt => Cond::Sle,
            Cond::Sle => Cond::Sgt,
            Cond::Sge => Cond::Slt,
            Cond::Slt => Cond::Sge,
            Cond::Set => return None,
        })
    }

    pub fn is_signed(self) -> bool {
        matches!(self, Cond::Sgt | Cond::Sge | Cond::Slt | Cond::Sle)
    }
}

/// A register or an immediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    Reg(VReg),
    Imm(i64),
}

impl From<VReg> for Operand {
    fn from(v: VReg) -> Self {
        Operand::Reg(v)
    }
}

impl From<i64> for Operand {
    fn from(i: i64) -> Self {
        Operand::Imm(i)
    }
}

impl From<i32> for Operand {
    fn from(i: i32) -> Self {
        Operand::Imm(i64::from(i))
    }
}

impl From<u32> for Operand {
    fn from(i: u32) -> Self {
        Operand::Imm(i64::from(i))
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Reg(v) => write!(f, "{v}"),
            Operand::Imm(i) => write!(f, "{i}"),
        }
    }
}

/// A straight-line instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inst {
    /// `dst = value` (a 64-bit constant).
    Const { dst: VReg, value: i64 },
    /// `dst = ` the 32-bit constant `name`, bound when the object is assembled (the endpoint's
    /// identity): emitted as `mov32 dst, 0` with a [`crate::program::RelocTarget::Constant`]
    /// relocation that [`crate::program::FunctionCode::bind_constant`] fills in. The code is
    /// then the same whatever the value, so a function that differs between endpoints only in
    /// such constants is compiled once for all of them (`Function::recurring`).
    LinkConst { dst: VReg, name: &'static str },
    /// `dst = src` (any type; the copy keeps the source's type).
    Copy { dst: VReg, src: VReg },
    /// `dst = a op b`. Immediates of 32-bit operations are taken modulo 2^32.
    Alu {
        op: AluOp,
        width: Width,
        dst: VReg,
        a: VReg,
        b: Operand,
    },
    /// `dst = -src`.
    Neg { width: Width, dst: VReg, src: VReg },
    /// `dst = byte-swap(src)` of the low `bits` (16, 32, 64): network ↔ host order on little-endian.
    Bswap { bits: u8, dst: VReg, src: VReg },
    /// `dst = ctx->field`.
    LoadCtx {
        dst: VReg,
        ctx: VReg,
        field: &'static CtxField,
    },
    /// `dst = *(size *)(ptr + off)`: packet, map value, stack or ring-buffer record.
    Load {
        dst: VReg,
        ptr: VReg,
        off: i32,
        size: Size,
    },
    /// `*(size *)(ptr + off) = value` (map values, stack, records, packet on tc).
    Store {
        ptr: VReg,
        off: i32,
        value: Operand,
        size: Size,
    },
    /// `dst = ptr + offset`: pointer arithmetic (a variable offset only on packet pointers, where
    /// the offset must have a known bit width so the verifier can bound it).
    PtrAdd {
        dst: VReg,
        ptr: VReg,
        offset: Operand,
    },
    /// `dst = &slot`.
    StackAddr { dst: VReg, slot: SlotId },
    /// `dst = *(size *)(&slot + off)`.
    StackLoad {
        dst: VReg,
        slot: SlotId,
        off: u32,
        size: Size,
    },
    /// `*(size *)(&slot + off) = value`.
    StackStore {
        slot: SlotId,
        off: u32,
        value: Operand,
        size: Size,
    },
    /// `dst = &map` (ld_imm64 with a map relocation).
    LoadMap { dst: VReg, map: MapId },
    /// `dst = helper(args...)`.
    Call {
        dst: Option<VReg>,
        helper: &'static HelperSig,
        args: Vec<Operand>,
    },
    /// `dst = func(args...)`: a bpf-to-bpf call of another function of the module.
    CallLocal {
        dst: Option<VReg>,
        func: String,
        args: Vec<VReg>,
    },
}

impl Inst {
    /// The register this instruction writes.
    pub fn def(&self) -> Option<VReg> {
        match self {
            Inst::Const { dst, .. }
            | Inst::Copy { dst, .. }
            | Inst::Alu { dst, .. }
            | Inst::Neg { dst, .. }
            | Inst::Bswap { dst, .. }
            | Inst::LoadCtx { dst, .. }
            | Inst::Load { dst, .. }
            | Inst::PtrAdd { dst, .. }
            | Inst::StackAddr { dst, .. }
            | Inst::StackLoad { dst, .. }
            | Inst::LoadMap { dst, .. }
            | Inst::LinkConst { dst, .. } => Some(*dst),
            Inst::Call { dst, .. } | Inst::CallLocal { dst, .. } => *dst,
            Inst::Store { .. } | Inst::StackStore { .. } => None,
        }
    }

    /// Calls `f` on every register this instruction reads.
    pub fn for_each_use(&self, mut f: impl FnMut(VReg)) {
        let op = |o: &Operand, f: &mut dyn FnMut(VReg)| {
            if let Operand::Reg(v) = o {
                f(*v)
            }
        };
        match self {
            Inst::Const { .. }
            | Inst::LinkConst { .. }
            | Inst::StackAddr { .. }
            | Inst::StackLoad { .. }
            | Inst::LoadMap { .. } => {}
            Inst::Copy { src, .. } | Inst::Neg { src, .. } | Inst::Bswap { src, .. } => f(*src),
            Inst::Alu { a, b, .. } => {
                f(*a);
                op(b, &mut f);
            }
            Inst::LoadCtx { ctx, .. } => f(*ctx),
            Inst::Load { ptr, .. } => f(*ptr),
            Inst::Store { ptr, value, .. } => {
                f(*ptr);
                op(value, &mut f);
            }
            Inst::PtrAdd { ptr, offset, .. } => {
                f(*ptr);
                op(offset, &mut f);
            }
            Inst::StackStore { value, .. } => op(value, &mut f),
            Inst::Call { args, .. } => args.iter().for_each(|a| op(a, &mut f)),
            Inst::CallLocal { args, .. } => args.iter().for_each(|a| f(*a)),
        }
    }
}

/// How a block ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Terminator {
    /// Not yet terminated (only while building).
    None,
    Jump(BlockId),
    /// `if a cond b goto then_ else goto else_`.
    Branch {
        cond: Cond,
        width: Width,
        a: VReg,
        b: Operand,
        then_: BlockId,
        else_: BlockId,
    },
    /// `if ptr + len > end goto fail else goto ok`: proves `len` bytes readable from `ptr` (and from
    /// every pointer with the same variable part) in `ok`.
    CheckPacketBounds {
        ptr: VReg,
        end: VReg,
        len: u32,
        ok: BlockId,
        fail: BlockId,
    },
    Return(Operand),
}

impl Terminator {
    pub fn successors(&self) -> impl Iterator<Item = BlockId> {
        let (a, b) = match *self {
            Terminator::None | Terminator::Return(_) => (None, None),
            Terminator::Jump(t) => (Some(t), None),
            Terminator::Branch { then_, else_, .. } => (Some(then_), Some(else_)),
            Terminator::CheckPacketBounds { ok, fail, .. } => (Some(ok), Some(fail)),
        };
        a.into_iter().chain(b)
    }

    pub fn for_each_use(&self, mut f: impl FnMut(VReg)) {
        let op = |o: &Operand, f: &mut dyn FnMut(VReg)| {
            if let Operand::Reg(v) = o {
                f(*v)
            }
        };
        match self {
            Terminator::None | Terminator::Jump(_) => {}
            Terminator::Branch { a, b, .. } => {
                f(*a);
                op(b, &mut f);
            }
            Terminator::CheckPacketBounds { ptr, end, .. } => {
                f(*ptr);
                f(*end);
            }
            Terminator::Return(v) => op(v, &mut f),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub insts: Vec<Inst>,
    pub term: Terminator,
    /// `(i, a)`: the code of `insts[i]` onwards (the terminator when `i == insts.len()`) comes
    /// from `a`. Sorted by `i`; several at one `i` are kept in order.
    pub annotations: Vec<(usize, Annotation)>,
}

/// The declared kind of a function parameter (arrives in r1..r5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamKind {
    Ctx,
    Scalar,
}

/// A stack slot declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlotDecl {
    pub size: u32,
}

/// One function: an entry program (hook, own section) or a `.text` subprogram.
#[derive(Clone, Debug, PartialEq)]
pub struct Function {
    pub name: String,
    pub hook: Hook,
    /// `true` for an entry program, `false` for a `.text` subprogram.
    pub is_entry: bool,
    /// ELF section of an entry program (default: the hook's).
    pub section: String,
    /// Parameters in order; `params[i]` arrives in r(i+1). Entry programs have one: the ctx.
    pub params: Vec<(VReg, ParamKind)>,
    /// Shared, so that cloning a function (a recurring subprogram in every module) is cheap and
    /// comparing two clones stops at the pointer.
    pub blocks: Arc<Vec<Block>>,
    pub slots: Vec<SlotDecl>,
    pub maps: Vec<MapDecl>,
    /// Number of virtual registers in use (`v0..vN`).
    pub num_vregs: u32,
    /// The same function recurs unchanged in many modules (a generated subprogram that does not
    /// depend on its caller's input): codegen keeps its code for the next module
    /// ([`crate::codegen::compile_with`]).
    pub recurring: bool,
}

impl Function {
    pub fn entry(&self) -> BlockId {
        BlockId(0)
    }

    pub fn block(&self, b: BlockId) -> &Block {
        &self.blocks[b.0 as usize]
    }
}
