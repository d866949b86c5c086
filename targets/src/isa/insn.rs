//! The typed instruction: one `Insn` per eBPF instruction (an `ld_imm64` is one `Insn` over two
//! slots), with operand newtypes and enums that make invalid field combinations unrepresentable
//! where the kernel rejects them structurally (reserved fields, sizes a mode does not allow).
//! Value-dependent checks (shift amounts, division by a zero constant, writes to r10) are the
//! verifier's business and stay representable.

use std::fmt;

/// A general-purpose register r0..=r10 (r10 is the read-only frame pointer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reg(u8);

impl Reg {
    pub const R0: Reg = Reg(0);
    pub const R1: Reg = Reg(1);
    pub const R2: Reg = Reg(2);
    pub const R3: Reg = Reg(3);
    pub const R4: Reg = Reg(4);
    pub const R5: Reg = Reg(5);
    pub const R6: Reg = Reg(6);
    pub const R7: Reg = Reg(7);
    pub const R8: Reg = Reg(8);
    pub const R9: Reg = Reg(9);
    /// The frame pointer.
    pub const R10: Reg = Reg(10);
    pub const FP: Reg = Reg(10);

    /// `None` above r10 (r11 is the kernel's internal auxiliary register, never valid in a program).
    pub const fn new(n: u8) -> Option<Reg> {
        if n <= 10 { Some(Reg(n)) } else { None }
    }

    pub const fn index(self) -> u8 {
        self.0
    }
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// Operand width of an ALU or jump instruction: `Bits32` is class `BPF_ALU`/`BPF_JMP32` (printed
/// with `w` registers), `Bits64` is `BPF_ALU64`/`BPF_JMP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Width {
    Bits32,
    Bits64,
}

/// Memory access size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Size {
    B,
    H,
    W,
    DW,
}

impl Size {
    pub const fn bytes(self) -> u32 {
        match self {
            Size::B => 1,
            Size::H => 2,
            Size::W => 4,
            Size::DW => 8,
        }
    }
}

/// Size of a sign-extending load (`BPF_MEMSX`, cpu v4): no DW form exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SxSize {
    B,
    H,
    W,
}

/// Size of a legacy packet load (`BPF_LD|BPF_ABS/IND`): no DW form exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PktSize {
    B,
    H,
    W,
}

/// Size of an atomic read-modify-write: only 32 and 64 bits exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AtomicSize {
    W,
    DW,
}

/// Binary ALU operations. `SDiv`/`SMod` are the cpu v4 signed forms (`off = 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AluOp {
    Add,
    Sub,
    Mul,
    Div,
    SDiv,
    Or,
    And,
    Lsh,
    Rsh,
    Mod,
    SMod,
    Xor,
    Mov,
    Arsh,
}

impl AluOp {
    pub const ALL: [AluOp; 14] = [
        AluOp::Add,
        AluOp::Sub,
        AluOp::Mul,
        AluOp::Div,
        AluOp::SDiv,
        AluOp::Or,
        AluOp::And,
        AluOp::Lsh,
        AluOp::Rsh,
        AluOp::Mod,
        AluOp::SMod,
        AluOp::Xor,
        AluOp::Mov,
        AluOp::Arsh,
    ];
}

/// The second operand of ALU and conditional-jump instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    Imm(i32),
    Reg(Reg),
}

/// How many low bits a `movsx` sign-extends from. `B32` exists only for 64-bit moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExtFrom {
    B8,
    B16,
    B32,
}

impl ExtFrom {
    pub const fn bits(self) -> i16 {
        match self {
            ExtFrom::B8 => 8,
            ExtFrom::B16 => 16,
            ExtFrom::B32 => 32,
        }
    }
}

/// Byte order target of `BPF_ALU|BPF_END` (`le16`, `be32`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    Le,
    Be,
}

/// Width of a byte swap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SwapBits {
    B16,
    B32,
    B64,
}

impl SwapBits {
    pub const fn bits(self) -> i32 {
        match self {
            SwapBits::B16 => 16,
            SwapBits::B32 => 32,
            SwapBits::B64 => 64,
        }
    }
}

/// Conditional jump comparisons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JmpOp {
    Eq,
    Gt,
    Ge,
    Set,
    Ne,
    Sgt,
    Sge,
    Lt,
    Le,
    Slt,
    Sle,
}

impl JmpOp {
    pub const ALL: [JmpOp; 11] = [
        JmpOp::Eq,
        JmpOp::Gt,
        JmpOp::Ge,
        JmpOp::Set,
        JmpOp::Ne,
        JmpOp::Sgt,
        JmpOp::Sge,
        JmpOp::Lt,
        JmpOp::Le,
        JmpOp::Slt,
        JmpOp::Sle,
    ];
}

/// Atomic read-modify-write operations (`BPF_STX|BPF_ATOMIC`, the operation in `imm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AtomicOp {
    Add,
    Or,
    And,
    Xor,
    FetchAdd,
    FetchOr,
    FetchAnd,
    FetchXor,
    /// Exchange: `src = xchg(*(dst + off), src)`.
    Xchg,
    /// Compare-exchange: `r0 = cmpxchg(*(dst + off), r0, src)`.
    CmpXchg,
}

impl AtomicOp {
    pub const ALL: [AtomicOp; 10] = [
        AtomicOp::Add,
        AtomicOp::Or,
        AtomicOp::And,
        AtomicOp::Xor,
        AtomicOp::FetchAdd,
        AtomicOp::FetchOr,
        AtomicOp::FetchAnd,
        AtomicOp::FetchXor,
        AtomicOp::Xchg,
        AtomicOp::CmpXchg,
    ];
}

/// `ld_imm64` pseudo sources 1..=6 (`src_reg` of the first slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PseudoKind {
    /// 1: `imm` is a map fd.
    MapFd,
    /// 2: `imm` is a map fd, `next_imm` an offset into its value.
    MapValue,
    /// 3: `imm` is a kernel BTF id of a variable (`next_imm` a module BTF fd or 0).
    BtfId,
    /// 4: `imm` is the pc-relative address of a subprogram.
    Func,
    /// 5: `imm` is an index into the fd array passed at load.
    MapIdx,
    /// 6: like `MapIdx`, `next_imm` an offset into the map value.
    MapIdxValue,
}

impl PseudoKind {
    pub const ALL: [PseudoKind; 6] = [
        PseudoKind::MapFd,
        PseudoKind::MapValue,
        PseudoKind::BtfId,
        PseudoKind::Func,
        PseudoKind::MapIdx,
        PseudoKind::MapIdxValue,
    ];

    pub const fn src(self) -> u8 {
        match self {
            PseudoKind::MapFd => 1,
            PseudoKind::MapValue => 2,
            PseudoKind::BtfId => 3,
            PseudoKind::Func => 4,
            PseudoKind::MapIdx => 5,
            PseudoKind::MapIdxValue => 6,
        }
    }

    pub const fn from_src(src: u8) -> Option<PseudoKind> {
        match src {
            1 => Some(PseudoKind::MapFd),
            2 => Some(PseudoKind::MapValue),
            3 => Some(PseudoKind::BtfId),
            4 => Some(PseudoKind::Func),
            5 => Some(PseudoKind::MapIdx),
            6 => Some(PseudoKind::MapIdxValue),
            _ => None,
        }
    }
}

/// One eBPF instruction, cpu v1..v4. This enum is the source of truth: `encode` and `decode`
/// map it to and from raw slots one-to-one for every valid encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Insn {
    /// `dst op= src` (`Mov` included). `SDiv`/`SMod` are cpu v4.
    Alu {
        width: Width,
        op: AluOp,
        dst: Reg,
        src: Operand,
    },
    /// `dst = -dst`.
    Neg {
        width: Width,
        dst: Reg,
    },
    /// `dst = (sN)src` (cpu v4). A 32-bit `movsx` cannot extend from 32 bits.
    MovSx {
        width: Width,
        dst: Reg,
        src: Reg,
        from: ExtFrom,
    },
    /// `dst = le16/be32/... dst` (class `BPF_ALU`, converts from host order; on a little-endian
    /// host `le*` only truncates).
    Endian {
        order: ByteOrder,
        bits: SwapBits,
        dst: Reg,
    },
    /// `dst = bswapN dst`, unconditional swap (class `BPF_ALU64`, cpu v4).
    Bswap {
        bits: SwapBits,
        dst: Reg,
    },
    /// `if dst op src goto +off` (`off` in slots, relative to the next slot).
    Jmp {
        width: Width,
        op: JmpOp,
        dst: Reg,
        src: Operand,
        off: i16,
    },
    /// `goto +off`.
    Ja {
        off: i16,
    },
    /// `gotol +imm`: `JMP32|JA` with a 32-bit offset (cpu v4).
    Gotol {
        imm: i32,
    },
    /// Helper call by id (`src = 0`); tail calls are `CallHelper { id: 12 }`.
    CallHelper {
        id: i32,
    },
    /// bpf-to-bpf call (`src = 1`), target `pc + imm + 1`.
    CallLocal {
        imm: i32,
    },
    /// kfunc call (`src = 2`), `imm` a BTF id, `off` an fd-array index of the module BTF (0 = vmlinux).
    CallKfunc {
        btf_id: i32,
        off: i16,
    },
    Exit,
    /// `dst = *(size *)(src + off)`, zero-extending.
    Ldx {
        size: Size,
        dst: Reg,
        src: Reg,
        off: i16,
    },
    /// `dst = *(sN *)(src + off)`, sign-extending (cpu v4).
    LdxSx {
        size: SxSize,
        dst: Reg,
        src: Reg,
        off: i16,
    },
    /// `*(size *)(dst + off) = imm`.
    St {
        size: Size,
        dst: Reg,
        off: i16,
        imm: i32,
    },
    /// `*(size *)(dst + off) = src`.
    Stx {
        size: Size,
        dst: Reg,
        src: Reg,
        off: i16,
    },
    /// Atomic read-modify-write on `*(size *)(dst + off)` with `src`.
    Atomic {
        size: AtomicSize,
        op: AtomicOp,
        dst: Reg,
        src: Reg,
        off: i16,
    },
    /// `dst = imm ll` (two slots).
    LdImm64 {
        dst: Reg,
        imm: i64,
    },
    /// `ld_imm64` with a pseudo source (two slots).
    LdPseudo {
        dst: Reg,
        kind: PseudoKind,
        imm: i32,
        next_imm: i32,
    },
    /// Legacy `r0 = *(size *)skb[imm]` (network byte order, clobbers r1-r5).
    LdAbs {
        size: PktSize,
        imm: i32,
    },
    /// Legacy `r0 = *(size *)skb[src + imm]`.
    LdInd {
        size: PktSize,
        src: Reg,
        imm: i32,
    },
}

impl Insn {
    /// Number of 8-byte slots: 2 for `ld_imm64`, 1 otherwise.
    pub const fn slots(&self) -> usize {
        match self {
            Insn::LdImm64 { .. } | Insn::LdPseudo { .. } => 2,
            _ => 1,
        }
    }

    /// True for instructions that may transfer control somewhere other than the next slot
    /// (jumps, `exit`; calls return, so they are not included).
    pub const fn is_branch(&self) -> bool {
        matches!(
            self,
            Insn::Jmp { .. } | Insn::Ja { .. } | Insn::Gotol { .. } | Insn::Exit
        )
    }

    pub const fn alu64(op: AluOp, dst: Reg, src: Operand) -> Insn {
        Insn::Alu {
            width: Width::Bits64,
            op,
            dst,
            src,
        }
    }

    pub const fn alu32(op: AluOp, dst: Reg, src: Operand) -> Insn {
        Insn::Alu {
            width: Width::Bits32,
            op,
            dst,
            src,
        }
    }

    pub const fn mov64_imm(dst: Reg, imm: i32) -> Insn {
        Insn::alu64(AluOp::Mov, dst, Operand::Imm(imm))
    }

    pub const fn mov64_reg(dst: Reg, src: Reg) -> Insn {
        Insn::alu64(AluOp::Mov, dst, Operand::Reg(src))
    }

    pub const fn mov32_imm(dst: Reg, imm: i32) -> Insn {
        Insn::alu32(AluOp::Mov, dst, Operand::Imm(imm))
    }

    pub const fn mov32_reg(dst: Reg, src: Reg) -> Insn {
        Insn::alu32(AluOp::Mov, dst, Operand::Reg(src))
    }

    pub const fn add64_imm(dst: Reg, imm: i32) -> Insn {
        Insn::alu64(AluOp::Add, dst, Operand::Imm(imm))
    }

    pub const fn ld_imm64(dst: Reg, imm: i64) -> Insn {
        Insn::LdImm64 { dst, imm }
    }

    pub const fn ld_map_fd(dst: Reg, fd: i32) -> Insn {
        Insn::LdPseudo {
            dst,
            kind: PseudoKind::MapFd,
            imm: fd,
            next_imm: 0,
        }
    }

    pub const fn ldx(size: Size, dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::Ldx {
            size,
            dst,
            src,
            off,
        }
    }

    pub const fn stx(size: Size, dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::Stx {
            size,
            dst,
            src,
            off,
        }
    }

    pub const fn st(size: Size, dst: Reg, off: i16, imm: i32) -> Insn {
        Insn::St {
            size,
            dst,
            off,
            imm,
        }
    }

    pub const fn jmp_imm(op: JmpOp, dst: Reg, imm: i32, off: i16) -> Insn {
        Insn::Jmp {
            width: Width::Bits64,
            op,
            dst,
            src: Operand::Imm(imm),
            off,
        }
    }

    pub const fn jmp_reg(op: JmpOp, dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::Jmp {
            width: Width::Bits64,
            op,
            dst,
            src: Operand::Reg(src),
            off,
        }
    }

    pub const fn call(helper_id: i32) -> Insn {
        Insn::CallHelper { id: helper_id }
    }

    pub const fn exit() -> Insn {
        Insn::Exit
    }
}
