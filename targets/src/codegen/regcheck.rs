//! A check of emitted code: registers and stack defined before they are read, on every path.
//!
//! In: the raw instructions of one function and the number of registers that arrive defined
//! (r1..rN; the context of an entry program is r1). Out: `Ok(())` or a message naming the
//! instruction. This is the part of the verifier's discipline that register allocation can break:
//! reading a register never written on some path, reading r1–r5 after a call clobbered them, reading
//! r0 after a call without a result, reading stack bytes never written. Also checks that every jump
//! lands on an instruction (not past the end, not inside an `ld_imm64`) and that `exit` is reached
//! with r0 defined.

use crate::hooks;
use crate::isa::RawInsn;
use crate::isa::opcode::*;

#[derive(Clone, Copy, PartialEq, Eq)]
struct State {
    regs: u16,
    stack: [u64; 8],
}

impl State {
    fn join(&self, o: &State) -> State {
        let mut stack = [0; 8];
        for (i, s) in stack.iter_mut().enumerate() {
            *s = self.stack[i] & o.stack[i];
        }
        State {
            regs: self.regs & o.regs,
            stack,
        }
    }

    fn stack_range(off: i16, size: u32) -> Option<std::ops::Range<usize>> {
        let start = 512 + i32::from(off);
        let end = start + size as i32;
        if start < 0 || end > 512 {
            return None;
        }
        Some(start as usize..end as usize)
    }

    fn stack_init(&self, r: std::ops::Range<usize>) -> bool {
        r.into_iter()
            .all(|b| self.stack[b / 64] & (1 << (b % 64)) != 0)
    }

    fn stack_write(&mut self, r: std::ops::Range<usize>) {
        for b in r {
            self.stack[b / 64] |= 1 << (b % 64);
        }
    }
}

fn size_of(code: u8) -> u32 {
    match code & 0x18 {
        BPF_B => 1,
        BPF_H => 2,
        BPF_W => 4,
        _ => 8,
    }
}

/// Checks `insns`; `defined_args` registers r1.. arrive defined.
pub fn check_defined(insns: &[RawInsn], defined_args: u8) -> Result<(), String> {
    let n = insns.len();
    if n == 0 {
        return Err("empty program".into());
    }
    // Second halves of ld_imm64 are not instructions.
    let mut is_second = vec![false; n];
    let mut i = 0;
    while i < n {
        if insns[i].code == BPF_LD | BPF_DW | BPF_IMM {
            if i + 1 >= n {
                return Err(format!("insn {i}: ld_imm64 without its second half"));
            }
            is_second[i + 1] = true;
            i += 2;
        } else {
            i += 1;
        }
    }
    let mut entry = State {
        regs: 1 << BPF_REG_FP,
        stack: [0; 8],
    };
    for r in 1..=defined_args.min(5) {
        entry.regs |= 1 << r;
    }
    let mut states: Vec<Option<State>> = vec![None; n];
    states[0] = Some(entry);
    let mut work = vec![0usize];
    let mut queued = vec![false; n];
    queued[0] = true;
    while let Some(pc) = work.pop() {
        queued[pc] = false;
        let Some(mut st) = states[pc] else { continue };
        let ins = insns[pc];
        let need = |st: &State, r: u8, what: &str| -> Result<(), String> {
            if r > 10 || st.regs & (1 << r) == 0 {
                return Err(format!(
                    "insn {pc}: {what} reads r{r}, which is not defined on every path"
                ));
            }
            Ok(())
        };
        let class = ins.code & 0x07;
        let mut succs: [Option<i64>; 2] = [Some(pc as i64 + 1), None];
        match class {
            BPF_LD => {
                if ins.code != BPF_LD | BPF_DW | BPF_IMM {
                    return Err(format!("insn {pc}: unsupported LD opcode {:#x}", ins.code));
                }
                st.regs |= 1 << ins.dst;
                succs[0] = Some(pc as i64 + 2);
            }
            BPF_LDX => {
                need(&st, ins.src, "load")?;
                if ins.src == BPF_REG_FP {
                    let r = State::stack_range(ins.off, size_of(ins.code))
                        .ok_or_else(|| format!("insn {pc}: stack read out of the frame"))?;
                    if !st.stack_init(r) {
                        return Err(format!(
                            "insn {pc}: reads stack at {} before writing it",
                            ins.off
                        ));
                    }
                }
                st.regs |= 1 << ins.dst;
            }
            BPF_ST | BPF_STX => {
                need(&st, ins.dst, "store")?;
                if class == BPF_STX {
                    need(&st, ins.src, "store")?;
                }
                if ins.dst == BPF_REG_FP {
                    let r = State::stack_range(ins.off, size_of(ins.code))
                        .ok_or_else(|| format!("insn {pc}: stack write out of the frame"))?;
                    st.stack_write(r);
                }
            }
            BPF_ALU | BPF_ALU64 => {
                let op = ins.code & 0xf0;
                let x = ins.code & BPF_X != 0;
                if ins.dst == BPF_REG_FP {
                    return Err(format!("insn {pc}: writes the frame pointer"));
                }
                if op != BPF_MOV {
                    need(&st, ins.dst, "alu")?;
                }
                if x && op != BPF_NEG && op != BPF_END {
                    need(&st, ins.src, "alu")?;
                }
                st.regs |= 1 << ins.dst;
            }
            BPF_JMP | BPF_JMP32 => {
                let op = ins.code & 0xf0;
                match op {
                    BPF_JA => {
                        let off = if class == BPF_JMP32 {
                            i64::from(ins.imm)
                        } else {
                            i64::from(ins.off)
                        };
                        succs[0] = Some(pc as i64 + 1 + off);
                    }
                    BPF_CALL => {
                        let mut returns = true;
                        if ins.src == 0 {
                            let h = hooks::helper_by_id(ins.imm)
                                .ok_or_else(|| format!("insn {pc}: unknown helper {}", ins.imm))?;
                            for r in 1..=h.args.len() as u8 {
                                need(&st, r, h.name)?;
                            }
                            returns = h.ret != hooks::RetKind::Void;
                        }
                        st.regs &= !0b11_1111;
                        if returns {
                            st.regs |= 1;
                        }
                    }
                    BPF_EXIT => {
                        need(&st, 0, "exit")?;
                        succs[0] = None;
                    }
                    _ => {
                        need(&st, ins.dst, "branch")?;
                        if ins.code & BPF_X != 0 {
                            need(&st, ins.src, "branch")?;
                        }
                        succs[1] = Some(pc as i64 + 1 + i64::from(ins.off));
                    }
                }
            }
            _ => return Err(format!("insn {pc}: unknown class {class}")),
        }
        for s in succs.into_iter().flatten() {
            if s < 0 || s as usize >= n {
                return Err(format!(
                    "insn {pc}: jump or fall-through to {s}, outside 0..{n}"
                ));
            }
            let s = s as usize;
            if is_second[s] {
                return Err(format!(
                    "insn {pc}: jump into the middle of an ld_imm64 at {s}"
                ));
            }
            let merged = match states[s] {
                None => st,
                Some(old) => old.join(&st),
            };
            if states[s] != Some(merged) {
                states[s] = Some(merged);
                if !queued[s] {
                    queued[s] = true;
                    work.push(s);
                }
            }
        }
    }
    Ok(())
}
