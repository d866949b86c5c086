//! Opcode field constants, named as in the kernel's `include/uapi/linux/bpf.h` and
//! `bpf_common.h`, so that code reading like the kernel's reads the same here.

// Instruction classes (low 3 bits).
pub const BPF_LD: u8 = 0x00;
pub const BPF_LDX: u8 = 0x01;
pub const BPF_ST: u8 = 0x02;
pub const BPF_STX: u8 = 0x03;
pub const BPF_ALU: u8 = 0x04;
pub const BPF_JMP: u8 = 0x05;
pub const BPF_JMP32: u8 = 0x06;
pub const BPF_ALU64: u8 = 0x07;

// Load/store size (bits 3-4).
pub const BPF_W: u8 = 0x00;
pub const BPF_H: u8 = 0x08;
pub const BPF_B: u8 = 0x10;
pub const BPF_DW: u8 = 0x18;

// Load/store mode (bits 5-7).
pub const BPF_IMM: u8 = 0x00;
pub const BPF_ABS: u8 = 0x20;
pub const BPF_IND: u8 = 0x40;
pub const BPF_MEM: u8 = 0x60;
/// Sign-extending load (cpu v4).
pub const BPF_MEMSX: u8 = 0x80;
pub const BPF_ATOMIC: u8 = 0xc0;

// Source operand (bit 3).
pub const BPF_K: u8 = 0x00;
pub const BPF_X: u8 = 0x08;

// ALU operations (bits 4-7).
pub const BPF_ADD: u8 = 0x00;
pub const BPF_SUB: u8 = 0x10;
pub const BPF_MUL: u8 = 0x20;
pub const BPF_DIV: u8 = 0x30;
pub const BPF_OR: u8 = 0x40;
pub const BPF_AND: u8 = 0x50;
pub const BPF_LSH: u8 = 0x60;
pub const BPF_RSH: u8 = 0x70;
pub const BPF_NEG: u8 = 0x80;
pub const BPF_MOD: u8 = 0x90;
pub const BPF_XOR: u8 = 0xa0;
pub const BPF_MOV: u8 = 0xb0;
pub const BPF_ARSH: u8 = 0xc0;
pub const BPF_END: u8 = 0xd0;

// Byte-swap direction for BPF_END in class BPF_ALU (the source bit); BPF_ALU64|BPF_END is bswap.
pub const BPF_TO_LE: u8 = 0x00;
pub const BPF_TO_BE: u8 = 0x08;

// Jump operations (bits 4-7).
pub const BPF_JA: u8 = 0x00;
pub const BPF_JEQ: u8 = 0x10;
pub const BPF_JGT: u8 = 0x20;
pub const BPF_JGE: u8 = 0x30;
pub const BPF_JSET: u8 = 0x40;
pub const BPF_JNE: u8 = 0x50;
pub const BPF_JSGT: u8 = 0x60;
pub const BPF_JSGE: u8 = 0x70;
pub const BPF_CALL: u8 = 0x80;
pub const BPF_EXIT: u8 = 0x90;
pub const BPF_JLT: u8 = 0xa0;
pub const BPF_JLE: u8 = 0xb0;
pub const BPF_JSLT: u8 = 0xc0;
pub const BPF_JSLE: u8 = 0xd0;

// Atomic operations (in imm of BPF_STX|BPF_ATOMIC).
pub const BPF_FETCH: i32 = 0x01;
pub const BPF_XCHG: i32 = 0xe0 | BPF_FETCH;
pub const BPF_CMPXCHG: i32 = 0xf0 | BPF_FETCH;

// Pseudo sources.
/// ld_imm64 src: imm is a map fd.
pub const BPF_PSEUDO_MAP_FD: u8 = 1;
/// ld_imm64 src: imm is a map fd, second imm an offset into its value.
pub const BPF_PSEUDO_MAP_VALUE: u8 = 2;
/// call src: bpf-to-bpf call, imm is the pc-relative target.
pub const BPF_PSEUDO_CALL: u8 = 1;
/// ld_imm64 src: address of a subprogram.
pub const BPF_PSEUDO_FUNC: u8 = 4;

pub const MAX_REG: u8 = 10;
/// The frame pointer, read-only.
pub const BPF_REG_FP: u8 = 10;
/// call src: kfunc call, imm is a BTF id.
pub const BPF_PSEUDO_KFUNC_CALL: u8 = 2;
/// ld_imm64 src: imm is a BTF id of a kernel variable.
pub const BPF_PSEUDO_BTF_ID: u8 = 3;
/// ld_imm64 src: imm is an index into the fd array.
pub const BPF_PSEUDO_MAP_IDX: u8 = 5;
/// ld_imm64 src: imm is an fd-array index, second imm an offset into the map value.
pub const BPF_PSEUDO_MAP_IDX_VALUE: u8 = 6;
