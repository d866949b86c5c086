//! The instruction loop: cpu v4 semantics as the kernel's interpreter defines them (division by
//! zero gives 0, modulo by zero keeps the dividend, shift amounts masked, 32-bit results
//! zero-extended), bpf-to-bpf calls with callee-saved r6–r9 and a fresh 512-byte frame, and
//! tail calls that replace the running program.
//!
//! In: decoded [`Code`], the maps, a packet and context. Out: r0 at the outermost `exit`, or the
//! fault, with the section and slot where it happened.

use super::helpers;
use super::maps::UserMap;
use super::memory::{
    CTX_DATA, CTX_DATA_END, CTX_DATA_META, CTX_SIZE, Fault, MAX_FRAMES, Memory, Region,
};
use super::object::{Code, Op};
use super::{Location, SkbContext, VmError};
use crate::isa::semantics::{alu, jump_taken, swap};
use crate::isa::{
    AluOp, AtomicOp, AtomicSize, ByteOrder, ExtFrom, Insn, Operand, PktSize, Reg, SwapBits, SxSize,
    Width,
};

/// The kernel's `MAX_TAIL_CALL_CNT`.
pub(crate) const MAX_TAIL_CALLS: u32 = 33;

struct Frame {
    section: usize,
    return_pc: usize,
    callee_saved: [u64; 4],
    frame_pointer: u64,
}

/// What an instruction or helper does to control flow.
pub(crate) enum Flow {
    Next,
    Exit(u64),
    /// A successful tail call: continue at this entry with a fresh frame.
    TailCall {
        section: usize,
        slot: usize,
    },
}

pub(crate) struct Machine<'a> {
    code: &'a Code,
    pub maps: &'a mut [UserMap],
    pub mem: Memory,
    pub regs: [u64; 11],
    frames: Vec<Frame>,
    section: usize,
    pc: usize,
    steps: u64,
    limit: u64,
    pub clock_ns: &'a mut u64,
    pub tail_calls: u32,
}

fn put_u32(ctx: &mut [u8; CTX_SIZE], off: usize, v: u32) {
    ctx[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn context_bytes(packet: &[u8], c: &SkbContext) -> [u8; CTX_SIZE] {
    let mut ctx = [0u8; CTX_SIZE];
    let len = u32::try_from(packet.len()).unwrap_or(u32::MAX);
    put_u32(&mut ctx, 0, len);
    put_u32(&mut ctx, 8, c.mark);
    put_u32(&mut ctx, 12, c.queue_mapping);
    // `skb->protocol` is the frame's EtherType in network order, as the kernel stores it.
    let proto = packet
        .get(12..14)
        .map_or(0, |b| u32::from(u16::from_le_bytes([b[0], b[1]])));
    put_u32(&mut ctx, 16, proto);
    put_u32(&mut ctx, 32, c.priority);
    put_u32(&mut ctx, 36, c.ingress_ifindex);
    put_u32(&mut ctx, 40, c.ifindex);
    put_u32(&mut ctx, 44, c.tc_index);
    for (i, v) in c.cb.iter().enumerate() {
        put_u32(&mut ctx, 48 + 4 * i, *v);
    }
    put_u32(&mut ctx, 68, c.hash);
    put_u32(&mut ctx, 72, c.tc_classid);
    put_u32(&mut ctx, 160, len);
    put_u32(&mut ctx, 164, 1);
    ctx
}

fn get_u32(ctx: &[u8; CTX_SIZE], off: usize) -> u32 {
    u32::from_le_bytes([ctx[off], ctx[off + 1], ctx[off + 2], ctx[off + 3]])
}

fn truncate(bits: SwapBits, v: u64) -> u64 {
    match bits {
        SwapBits::B16 => v & 0xffff,
        SwapBits::B32 => v & 0xffff_ffff,
        SwapBits::B64 => v,
    }
}

fn sign_extend(v: u64, bits: u32) -> u64 {
    let shift = 64 - bits;
    (((v << shift) as i64) >> shift) as u64
}

impl<'a> Machine<'a> {
    pub fn new(
        code: &'a Code,
        maps: &'a mut [UserMap],
        clock_ns: &'a mut u64,
        limit: u64,
        packet: &[u8],
        ctx: &SkbContext,
    ) -> Machine<'a> {
        Machine {
            code,
            maps,
            mem: Memory::new(packet, context_bytes(packet, ctx)),
            regs: [0; 11],
            frames: Vec::new(),
            section: 0,
            pc: 0,
            steps: 0,
            limit,
            clock_ns,
            tail_calls: 0,
        }
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The writable context fields after the run.
    pub fn context_after(&self) -> SkbContext {
        let c = &self.mem.ctx;
        let mut cb = [0u32; 5];
        for (i, v) in cb.iter_mut().enumerate() {
            *v = get_u32(c, 48 + 4 * i);
        }
        SkbContext {
            mark: get_u32(c, 8),
            priority: get_u32(c, 32),
            ifindex: get_u32(c, 40),
            ingress_ifindex: get_u32(c, 36),
            tc_index: get_u32(c, 44),
            cb,
            hash: get_u32(c, 68),
            tc_classid: get_u32(c, 72),
            queue_mapping: get_u32(c, 12),
        }
    }

    /// The location of the instruction being executed.
    pub fn location(&self) -> Location {
        Location {
            section: self
                .code
                .sections
                .get(self.section)
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            slot: self.pc.saturating_sub(1),
        }
    }

    pub fn fault(&self, what: impl Into<String>) -> VmError {
        VmError::Fault {
            at: self.location(),
            what: what.into(),
        }
    }

    pub fn memory_fault(&self, f: Fault) -> VmError {
        match f {
            Fault::OutOfBounds { addr, size, region } => VmError::OutOfBounds {
                at: self.location(),
                addr,
                size,
                region,
            },
            Fault::Other(what) => self.fault(what),
        }
    }

    pub fn in_subprogram(&self) -> bool {
        !self.frames.is_empty()
    }

    /// The section and slot of entry program `name`.
    pub fn entry(&self, name: &str) -> Option<(usize, usize)> {
        self.code.entries.get(name).copied()
    }

    /// Reads `len` bytes at `addr` (helpers' memory arguments).
    pub fn read_bytes(&mut self, addr: u64, len: u64) -> Result<Vec<u8>, VmError> {
        match self.mem.slice(self.maps, addr, len, false) {
            Ok(s) => Ok(s.to_vec()),
            Err(f) => Err(self.memory_fault(f)),
        }
    }

    /// Writes `bytes` at `addr` (helpers' output arguments).
    pub fn write_bytes(&mut self, addr: u64, bytes: &[u8]) -> Result<(), VmError> {
        match self.mem.slice(self.maps, addr, bytes.len() as u64, true) {
            Ok(s) => {
                s.copy_from_slice(bytes);
                Ok(())
            }
            Err(f) => Err(self.memory_fault(f)),
        }
    }

    fn load(&mut self, addr: u64, size: u64) -> Result<u64, VmError> {
        if let Some((Region::Ctx, off)) = self.mem.locate(addr)
            && matches!(off, CTX_DATA | CTX_DATA_END | CTX_DATA_META)
        {
            if size != 4 {
                return Err(self.fault(format!("{size}-byte load of a packet pointer")));
            }
            return Ok(if off == CTX_DATA_END {
                self.mem.packet_end()
            } else {
                self.mem.packet_addr()
            });
        }
        let bytes = self.read_bytes(addr, size)?;
        let mut b = [0u8; 8];
        b[..bytes.len()].copy_from_slice(&bytes);
        Ok(u64::from_le_bytes(b))
    }

    fn store(&mut self, addr: u64, size: u64, value: u64) -> Result<(), VmError> {
        let bytes = value.to_le_bytes();
        self.write_bytes(addr, &bytes[..size as usize])
    }

    fn reg(&self, r: Reg) -> u64 {
        self.regs[usize::from(r.index())]
    }

    fn set(&mut self, r: Reg, v: u64) -> Result<(), VmError> {
        if r == Reg::R10 {
            return Err(self.fault("write to the read-only frame pointer r10"));
        }
        self.regs[usize::from(r.index())] = v;
        Ok(())
    }

    fn operand(&self, src: Operand) -> u64 {
        match src {
            Operand::Reg(r) => self.reg(r),
            Operand::Imm(i) => i64::from(i) as u64,
        }
    }

    fn jump(&mut self, off: i64) -> Result<(), VmError> {
        let target = self.pc as i64 + off;
        self.pc = usize::try_from(target)
            .map_err(|_| self.fault(format!("jump to slot {target}, before the section")))?;
        Ok(())
    }

    /// Runs from `slot` of `section` until the outermost `exit`.
    pub fn run(&mut self, section: usize, slot: usize) -> Result<u64, VmError> {
        self.start(section, slot);
        loop {
            self.steps += 1;
            if self.steps > self.limit {
                return Err(VmError::StepLimit(self.limit));
            }
            let Some(&op) = self
                .code
                .sections
                .get(self.section)
                .and_then(|s| s.ops.get(self.pc))
            else {
                self.pc += 1;
                return Err(self.fault("control left the section"));
            };
            self.pc += 1;
            let flow = match op {
                Op::Tail => return Err(self.fault("jump into the second slot of an ld_imm64")),
                Op::LoadMap { dst, map } => {
                    self.set(dst, super::memory::MAP_HANDLE_BASE + map as u64)?;
                    self.pc += 1;
                    Flow::Next
                }
                Op::Call { section, slot } => {
                    self.call(section, slot)?;
                    Flow::Next
                }
                Op::Insn(insn) => self.step(insn)?,
            };
            match flow {
                Flow::Next => {}
                Flow::Exit(r0) => return Ok(r0),
                Flow::TailCall { section, slot } => self.start(section, slot),
            }
        }
    }

    /// Starts a program: r1 the context, a fresh outermost frame.
    fn start(&mut self, section: usize, slot: usize) {
        let ctx = Memory::ctx_addr();
        self.regs = [0; 11];
        self.regs[1] = ctx;
        self.frames.clear();
        self.regs[10] = self.mem.enter_frame(0);
        self.section = section;
        self.pc = slot;
    }

    fn call(&mut self, section: usize, slot: usize) -> Result<(), VmError> {
        let depth = self.frames.len() + 1;
        if depth >= MAX_FRAMES {
            return Err(self.fault(format!("call depth over {MAX_FRAMES} frames")));
        }
        self.frames.push(Frame {
            section: self.section,
            return_pc: self.pc,
            callee_saved: [self.regs[6], self.regs[7], self.regs[8], self.regs[9]],
            frame_pointer: self.regs[10],
        });
        self.regs[10] = self.mem.enter_frame(depth);
        self.section = section;
        self.pc = slot;
        Ok(())
    }

    fn step(&mut self, insn: Insn) -> Result<Flow, VmError> {
        match insn {
            Insn::Alu {
                width,
                op,
                dst,
                src,
            } => {
                let v = alu(op, width, self.reg(dst), self.operand(src));
                self.set(dst, v)?;
            }
            Insn::Neg { width, dst } => {
                let a = self.reg(dst);
                let v = match width {
                    Width::Bits32 => u64::from((a as u32).wrapping_neg()),
                    Width::Bits64 => a.wrapping_neg(),
                };
                self.set(dst, v)?;
            }
            Insn::MovSx {
                width,
                dst,
                src,
                from,
            } => {
                let bits = match from {
                    ExtFrom::B8 => 8,
                    ExtFrom::B16 => 16,
                    ExtFrom::B32 => 32,
                };
                let v = sign_extend(self.reg(src), bits);
                let v = if width == Width::Bits32 {
                    u64::from(v as u32)
                } else {
                    v
                };
                self.set(dst, v)?;
            }
            Insn::Endian { order, bits, dst } => {
                let a = self.reg(dst);
                let v = match order {
                    ByteOrder::Le => truncate(bits, a),
                    ByteOrder::Be => swap(bits, a),
                };
                self.set(dst, v)?;
            }
            Insn::Bswap { bits, dst } => {
                let v = swap(bits, self.reg(dst));
                self.set(dst, v)?;
            }
            Insn::Jmp {
                width,
                op,
                dst,
                src,
                off,
            } => {
                if jump_taken(op, width, self.reg(dst), self.operand(src)) {
                    self.jump(i64::from(off))?;
                }
            }
            Insn::Ja { off } => self.jump(i64::from(off))?,
            Insn::Gotol { imm } => self.jump(i64::from(imm))?,
            Insn::CallHelper { id } => return helpers::call(self, id),
            Insn::CallLocal { .. } => return Err(self.fault("unresolved bpf-to-bpf call")),
            Insn::CallKfunc { btf_id, .. } => {
                return Err(self.fault(format!("kfunc {btf_id} is not supported")));
            }
            Insn::Exit => {
                let Some(frame) = self.frames.pop() else {
                    return Ok(Flow::Exit(self.regs[0]));
                };
                self.regs[6..10].copy_from_slice(&frame.callee_saved);
                self.regs[10] = frame.frame_pointer;
                self.section = frame.section;
                self.pc = frame.return_pc;
            }
            Insn::Ldx {
                size,
                dst,
                src,
                off,
            } => {
                let addr = self.reg(src).wrapping_add(i64::from(off) as u64);
                let v = self.load(addr, u64::from(size.bytes()))?;
                self.set(dst, v)?;
            }
            Insn::LdxSx {
                size,
                dst,
                src,
                off,
            } => {
                let addr = self.reg(src).wrapping_add(i64::from(off) as u64);
                let bits = match size {
                    SxSize::B => 8,
                    SxSize::H => 16,
                    SxSize::W => 32,
                };
                let v = self.load(addr, u64::from(bits / 8))?;
                self.set(dst, sign_extend(v, bits))?;
            }
            Insn::St {
                size,
                dst,
                off,
                imm,
            } => {
                let addr = self.reg(dst).wrapping_add(i64::from(off) as u64);
                self.store(addr, u64::from(size.bytes()), i64::from(imm) as u64)?;
            }
            Insn::Stx {
                size,
                dst,
                src,
                off,
            } => {
                let addr = self.reg(dst).wrapping_add(i64::from(off) as u64);
                self.store(addr, u64::from(size.bytes()), self.reg(src))?;
            }
            Insn::Atomic {
                size,
                op,
                dst,
                src,
                off,
            } => self.atomic(size, op, dst, src, off)?,
            Insn::LdImm64 { dst, imm } => {
                self.set(dst, imm as u64)?;
                self.pc += 1;
            }
            Insn::LdPseudo { kind, .. } => {
                return Err(self.fault(format!("unresolved ld_imm64 pseudo source {kind:?}")));
            }
            Insn::LdAbs { size, imm } => return self.legacy_packet_load(size, i64::from(imm)),
            Insn::LdInd { size, src, imm } => {
                let off = (self.reg(src) as u32 as i64).wrapping_add(i64::from(imm));
                return self.legacy_packet_load(size, off);
            }
        }
        Ok(Flow::Next)
    }

    fn atomic(
        &mut self,
        size: AtomicSize,
        op: AtomicOp,
        dst: Reg,
        src: Reg,
        off: i16,
    ) -> Result<(), VmError> {
        let (bytes, width) = match size {
            AtomicSize::W => (4, Width::Bits32),
            AtomicSize::DW => (8, Width::Bits64),
        };
        let addr = self.reg(dst).wrapping_add(i64::from(off) as u64);
        let old = self.load(addr, bytes)?;
        let operand = self.reg(src);
        let narrow = |v: u64| if bytes == 4 { u64::from(v as u32) } else { v };
        let (new, fetch) = match op {
            AtomicOp::Add => (alu(AluOp::Add, width, old, operand), false),
            AtomicOp::Or => (old | operand, false),
            AtomicOp::And => (old & operand, false),
            AtomicOp::Xor => (old ^ operand, false),
            AtomicOp::FetchAdd => (alu(AluOp::Add, width, old, operand), true),
            AtomicOp::FetchOr => (old | operand, true),
            AtomicOp::FetchAnd => (old & operand, true),
            AtomicOp::FetchXor => (old ^ operand, true),
            AtomicOp::Xchg => (operand, true),
            AtomicOp::CmpXchg => {
                let expected = narrow(self.regs[0]);
                if old == expected {
                    self.store(addr, bytes, operand)?;
                }
                self.regs[0] = old;
                return Ok(());
            }
        };
        self.store(addr, bytes, narrow(new))?;
        if fetch {
            self.set(src, old)?;
        }
        Ok(())
    }

    /// `LD_ABS`/`LD_IND`: a big-endian packet load; out of bounds ends the program with r0 = 0, as
    /// in the kernel.
    fn legacy_packet_load(&mut self, size: PktSize, off: i64) -> Result<Flow, VmError> {
        let n = match size {
            PktSize::B => 1,
            PktSize::H => 2,
            PktSize::W => 4,
        };
        let Some(bytes) = usize::try_from(off)
            .ok()
            .and_then(|o| self.mem.packet.get(o..o.checked_add(n)?))
        else {
            return Ok(Flow::Exit(0));
        };
        let v = bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        for r in 1..=5 {
            self.regs[r] = 0;
        }
        self.regs[0] = v;
        Ok(Flow::Next)
    }
}
