//! The linker/assembler: block layout, branch resolution, jump relaxation and relocations.
//!
//! In: emitted blocks in layout order. Out: one [`FunctionCode`].
//!
//! - A jump to the next block disappears (fall-through); a conditional branch whose "then" block is
//!   next is inverted so the other side falls through.
//! - Jumps whose distance does not fit the short range become long: an unconditional `ja` becomes
//!   `gotol` (JMP32|JA, 32-bit offset in `imm`, cpu v4, same size); a conditional branch becomes an
//!   inverted short branch over a `gotol` (JSET, which has no inverse, becomes `jset +1; ja +1;
//!   gotol`). Lengthening one branch can push another out of range, so relaxation repeats until
//!   nothing changes (it only ever grows, so it terminates).
//! - Every offset is bounds-checked when written.
//! - Source annotations move with their block; several landing on one slot are merged (texts
//!   joined with ` | `, location of the first) because line_info allows one record per slot.
//!
//! The default short range is deliberately below ±32767: with `net.core.bpf_jit_harden=2` the
//! kernel blinds constants, rewriting one instruction into up to three, and a jump that fit before
//! the rewrite fails with ERANGE after it. `gotol` is not rewritten that way.

use super::emit::{ETerm, Emitted};
use super::error::CodegenError;
use super::ir::BlockId;
use crate::isa::RawInsn;
use crate::isa::opcode::*;
use crate::program::{Annotation, FunctionCode, LineAnnotation, Reloc};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkOptions {
    /// Largest |offset| written into a 16-bit jump; farther jumps use `gotol`.
    pub short_jump_limit: i32,
}

impl Default for LinkOptions {
    fn default() -> Self {
        // 3x expansion under constant blinding: 32767 / 3, rounded down for slack.
        LinkOptions {
            short_jump_limit: 10_000,
        }
    }
}

/// A jump to place at the end of a block.
#[derive(Clone, Copy, Debug)]
enum Site {
    Ja {
        target: usize,
    },
    Cond {
        jmp32: bool,
        op: u8,
        dst: u8,
        src: Option<u8>,
        imm: i32,
        target: usize,
        long: bool,
    },
}

impl Site {
    fn size(&self) -> usize {
        match *self {
            Site::Ja { .. } => 1,
            Site::Cond { long: false, .. } => 1,
            Site::Cond { op, long: true, .. } => {
                if op == BPF_JSET {
                    3
                } else {
                    2
                }
            }
        }
    }
}

fn invert(op: u8) -> Option<u8> {
    Some(match op {
        BPF_JEQ => BPF_JNE,
        BPF_JNE => BPF_JEQ,
        BPF_JGT => BPF_JLE,
        BPF_JLE => BPF_JGT,
        BPF_JGE => BPF_JLT,
        BPF_JLT => BPF_JGE,
        BPF_JSGT => BPF_JSLE,
        BPF_JSLE => BPF_JSGT,
        BPF_JSGE => BPF_JSLT,
        BPF_JSLT => BPF_JSGE,
        _ => return None,
    })
}

/// Links the blocks of one function (the first block is the entry).
pub fn link(
    name: &str,
    section: &str,
    code: Emitted,
    num_block_ids: usize,
    opts: LinkOptions,
) -> Result<FunctionCode, CodegenError> {
    let limit = i64::from(opts.short_jump_limit.clamp(1, i32::from(i16::MAX)));
    let blocks = &code.blocks;
    let nb = blocks.len();
    let mut index = vec![usize::MAX; num_block_ids];
    for (i, b) in blocks.iter().enumerate() {
        match index.get_mut(b.id.0 as usize) {
            Some(slot) => *slot = i,
            None => {
                return Err(internal(
                    name,
                    format!("block id {} beyond {num_block_ids}", b.id),
                ));
            }
        }
    }
    let idx = |b: BlockId| -> Result<usize, CodegenError> {
        index
            .get(b.0 as usize)
            .copied()
            .filter(|&i| i != usize::MAX)
            .ok_or_else(|| internal(name, format!("jump to a block that was not emitted: {b}")))
    };
    // Turn terminators into jump sites, knowing which block comes next. Block i's sites are
    // `sites[site_off[i]..site_off[i + 1]]`.
    let mut sites: Vec<Site> = Vec::with_capacity(nb + nb / 2);
    let mut site_off = Vec::with_capacity(nb + 1);
    for (i, b) in blocks.iter().enumerate() {
        site_off.push(sites.len());
        let next = i + 1;
        match b.term {
            ETerm::Exit => {}
            ETerm::Jump(t) => {
                let t = idx(t)?;
                if t != next {
                    sites.push(Site::Ja { target: t });
                }
            }
            ETerm::Cond {
                jmp32,
                op,
                dst,
                src,
                imm,
                then_,
                else_,
            } => {
                let (t, e) = (idx(then_)?, idx(else_)?);
                if t == e {
                    if t != next {
                        sites.push(Site::Ja { target: t });
                    }
                } else if e == next {
                    sites.push(Site::Cond {
                        jmp32,
                        op,
                        dst,
                        src,
                        imm,
                        target: t,
                        long: false,
                    });
                } else if let (true, Some(inv)) = (t == next, invert(op)) {
                    sites.push(Site::Cond {
                        jmp32,
                        op: inv,
                        dst,
                        src,
                        imm,
                        target: e,
                        long: false,
                    });
                } else {
                    sites.push(Site::Cond {
                        jmp32,
                        op,
                        dst,
                        src,
                        imm,
                        target: t,
                        long: false,
                    });
                    sites.push(Site::Ja { target: e });
                }
            }
        }
    }
    site_off.push(sites.len());
    // Relaxation: lengthen out-of-range conditional branches until nothing changes.
    let mut start = vec![0usize; nb + 1];
    loop {
        let mut pos = 0usize;
        for (i, b) in blocks.iter().enumerate() {
            start[i] = pos;
            pos += b.end - b.start
                + sites[site_off[i]..site_off[i + 1]]
                    .iter()
                    .map(Site::size)
                    .sum::<usize>();
        }
        start[nb] = pos;
        let mut changed = false;
        for (i, b) in blocks.iter().enumerate() {
            let mut at = start[i] + (b.end - b.start);
            for site in &mut sites[site_off[i]..site_off[i + 1]] {
                if let Site::Cond { target, long, .. } = site
                    && !*long
                {
                    let off = start[*target] as i64 - (at as i64 + 1);
                    if off.abs() > limit {
                        *long = true;
                        changed = true;
                    }
                }
                at += site.size();
            }
        }
        if !changed {
            break;
        }
    }
    // Emission with bounds-checked fixups.
    let total = start[nb];
    let mut insns = Vec::with_capacity(total);
    let mut relocs = Vec::with_capacity(code.relocs.len());
    let mut pending_relocs = code.relocs.into_iter().peekable();
    let short = |from: usize, to: usize| -> Result<i16, CodegenError> {
        let off = to as i64 - (from as i64 + 1);
        match i16::try_from(off) {
            Ok(o) if off.abs() <= limit => Ok(o),
            _ => Err(CodegenError::JumpOutOfRange {
                func: name.to_string(),
                from,
                to,
                why: "16-bit offset",
            }),
        }
    };
    let long = |from: usize, to: usize| -> Result<i32, CodegenError> {
        i32::try_from(to as i64 - (from as i64 + 1)).map_err(|_| CodegenError::JumpOutOfRange {
            func: name.to_string(),
            from,
            to,
            why: "32-bit offset",
        })
    };
    for (i, b) in blocks.iter().enumerate() {
        let base = insns.len();
        while let Some((at, _)) = pending_relocs.peek() {
            if *at >= b.end {
                break;
            }
            let (at, target) = pending_relocs
                .next()
                .ok_or_else(|| internal(name, "reloc".into()))?;
            if at < b.start {
                return Err(internal(
                    name,
                    format!("relocation at {at} outside every block"),
                ));
            }
            relocs.push(Reloc {
                insn: base + (at - b.start),
                target,
            });
        }
        insns.extend_from_slice(&code.insns[b.start..b.end]);
        for site in &sites[site_off[i]..site_off[i + 1]] {
            let at = insns.len();
            match *site {
                Site::Ja { target } => {
                    let to = start[target];
                    let off = to as i64 - (at as i64 + 1);
                    if off.abs() <= limit {
                        insns.push(RawInsn {
                            code: BPF_JMP | BPF_JA,
                            dst: 0,
                            src: 0,
                            off: short(at, to)?,
                            imm: 0,
                        });
                    } else {
                        insns.push(RawInsn {
                            code: BPF_JMP32 | BPF_JA,
                            dst: 0,
                            src: 0,
                            off: 0,
                            imm: long(at, to)?,
                        });
                    }
                }
                Site::Cond {
                    jmp32,
                    op,
                    dst,
                    src,
                    imm,
                    target,
                    long: is_long,
                } => {
                    let class = if jmp32 { BPF_JMP32 } else { BPF_JMP };
                    let (x, s) = match src {
                        Some(r) => (BPF_X, r),
                        None => (BPF_K, 0),
                    };
                    let to = start[target];
                    if !is_long {
                        insns.push(RawInsn {
                            code: class | op | x,
                            dst,
                            src: s,
                            off: short(at, to)?,
                            imm,
                        });
                    } else if let Some(inv) = invert(op) {
                        insns.push(RawInsn {
                            code: class | inv | x,
                            dst,
                            src: s,
                            off: 1,
                            imm,
                        });
                        insns.push(RawInsn {
                            code: BPF_JMP32 | BPF_JA,
                            dst: 0,
                            src: 0,
                            off: 0,
                            imm: long(at + 1, to)?,
                        });
                    } else {
                        insns.push(RawInsn {
                            code: class | op | x,
                            dst,
                            src: s,
                            off: 1,
                            imm,
                        });
                        insns.push(RawInsn {
                            code: BPF_JMP | BPF_JA,
                            dst: 0,
                            src: 0,
                            off: 1,
                            imm: 0,
                        });
                        insns.push(RawInsn {
                            code: BPF_JMP32 | BPF_JA,
                            dst: 0,
                            src: 0,
                            off: 0,
                            imm: long(at + 2, to)?,
                        });
                    }
                }
            }
        }
        if insns.len() != start[i + 1] {
            return Err(internal(
                name,
                format!(
                    "block {} laid out at {} but ends at {}",
                    b.id,
                    start[i + 1],
                    insns.len()
                ),
            ));
        }
    }
    if pending_relocs.next().is_some() {
        return Err(internal(name, "relocation past the last block".into()));
    }
    let mut line_info: Vec<LineAnnotation> = Vec::with_capacity(code.annotations.len());
    for a in code.annotations {
        let Some(b) = blocks.get(a.block) else {
            return Err(internal(
                name,
                format!("annotation in block {} of {nb}", a.block),
            ));
        };
        if a.insn < b.start || a.insn > b.end {
            return Err(internal(
                name,
                format!("annotation at {} outside its block", a.insn),
            ));
        }
        let insn = start[a.block] + (a.insn - b.start);
        // An annotation on a jump that fell through at the very end has no code to describe.
        if insn >= total {
            continue;
        }
        match line_info.last_mut() {
            Some(last) if last.insn == insn => merge(&mut last.source, &a.source),
            Some(last) if last.insn > insn => {
                return Err(internal(
                    name,
                    format!("annotations out of order at {insn}"),
                ));
            }
            _ => line_info.push(LineAnnotation {
                insn,
                source: a.source,
            }),
        }
    }
    Ok(FunctionCode {
        name: name.to_string(),
        section: section.to_string(),
        insns,
        relocs,
        line_info,
    })
}

fn merge(into: &mut Annotation, next: &Annotation) {
    if into.text != next.text {
        into.text.push_str(" | ");
        into.text.push_str(&next.text);
    }
}

fn internal(func: &str, msg: String) -> CodegenError {
    CodegenError::Internal {
        func: func.to_string(),
        msg,
    }
}
