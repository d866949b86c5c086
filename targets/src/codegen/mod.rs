//! Code generation: a small virtual-register IR lowered to eBPF by our own pipeline.
//!
//! In: [`Function`]s built with [`FunctionBuilder`] (the policy compiler's lowering target).
//! Out: [`FunctionCode`] per function (instructions plus symbolic map and subprogram relocations),
//! which the ELF writer places into sections.
//!
//! Pipeline, per function:
//! 1. [`liveness`]: block order (reverse postorder, also the code layout) and live sets.
//! 2. [`check`]: the verifier's rules on the IR — packet accesses within proven bounds, null checks
//!    before map-value dereferences, accesses within map values and stack slots, defined values,
//!    helper argument kinds (from [`crate::hooks`]), packet pointers invalidated by helpers,
//!    ring-buffer records released. Errors name the function, block and IR value.
//! 3. [`slots`]: stack slot layout — slots whose live ranges do not overlap share bytes (smaller
//!    frames make the kernel verifier's state copies and comparisons cheaper).
//! 4. [`isel`]: instruction selection into two-address machine IR (32-bit subregisters where that
//!    saves an `ld_imm64` or allows a JMP32 compare).
//! 5. [`regalloc`]: linear scan onto r1–r9 with call clobbers and spills.
//! 6. [`emit`] and [`link`]: instructions, branch resolution with jump relaxation (`gotol`),
//!    relocations.
//!
//! Module-level checks: subprogram calls resolve to `.text` functions of the module, no recursion,
//! each frame and each call chain within the 512-byte stack.
//!
//! [`regcheck`] re-checks emitted code (every register read defined on every path, no read of a
//! register clobbered by a call, no read of unwritten stack), [`testgen`] makes random IR
//! programs for property and kernel tests, and [`interp`] runs IR and emitted eBPF side by side
//! (the semantics the random tests compare).

pub mod builder;
pub mod check;
pub mod emit;
pub mod error;
pub mod interp;
pub mod ir;
pub mod isel;
pub mod link;
pub mod liveness;
pub mod regalloc;
pub mod regcheck;
pub mod slots;
pub mod testgen;

use std::collections::{BTreeMap, HashMap};

pub use builder::FunctionBuilder;
pub use error::{CheckError, CodegenError};
pub use ir::{
    AluOp, Annotation, BlockId, Cond, Function, MapDecl, MapId, MapKind, Operand, ParamKind, Size,
    SlotId, VReg, Width,
};
pub use link::LinkOptions;
pub use slots::{SlotLayout, SlotSharing};

use crate::hooks::HelperSig;
use crate::program::FunctionCode;
use check::CalleeSig;

/// Options for [`compile_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodegenOptions {
    pub link: LinkOptions,
}

/// Statistics of one compiled function.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionStats {
    pub name: String,
    pub insns: usize,
    pub spills: u32,
    pub frame: u32,
    /// Long jumps (`gotol`) emitted.
    pub long_jumps: usize,
}

const MAX_STACK: u32 = 512;

/// Compiles a module: entry programs and the `.text` subprograms they call, in the given order.
pub fn compile(funcs: &[Function]) -> Result<Vec<FunctionCode>, CodegenError> {
    compile_with(funcs, CodegenOptions::default()).map(|(code, _)| code)
}

/// [`compile`] with options, also returning per-function statistics.
pub fn compile_with(
    funcs: &[Function],
    opts: CodegenOptions,
) -> Result<(Vec<FunctionCode>, Vec<FunctionStats>), CodegenError> {
    compile_with_sharing(funcs, opts, SlotSharing::from_env())
}

/// [`compile_with`] with an explicit stack slot layout policy (`compile_with` shares slots unless
/// `CILIUMC_STACK_SLOT_SHARING=off`).
pub fn compile_with_sharing(
    funcs: &[Function],
    opts: CodegenOptions,
    sharing: SlotSharing,
) -> Result<(Vec<FunctionCode>, Vec<FunctionStats>), CodegenError> {
    let mut by_name: HashMap<&str, &Function> = HashMap::new();
    for f in funcs {
        validate(f)?;
        if by_name.insert(f.name.as_str(), f).is_some() {
            return Err(CodegenError::Build {
                func: f.name.clone(),
                msg: "two functions with this name".into(),
            });
        }
    }
    let callees = callee_sigs(funcs, &by_name)?;
    let mut out = Vec::with_capacity(funcs.len());
    let mut stats = Vec::with_capacity(funcs.len());
    let mut frames: HashMap<&str, u32> = HashMap::new();
    for f in funcs {
        let (code, st) = if f.recurring {
            compile_recurring(f, &callees, opts, sharing)?
        } else {
            compile_function(f, &callees, opts, sharing)?
        };
        frames.insert(f.name.as_str(), st.frame);
        out.push(code);
        stats.push(st);
    }
    check_call_chains(funcs, &frames)?;
    Ok((out, stats))
}

/// Code of recurring functions (`Function::recurring`) compiled in this process, with what it was
/// compiled from; a function equal to one of them (and compiled with the same options) gets the
/// same code back. Bounded: the oldest entry goes first.
type Memo = Vec<(
    Function,
    CodegenOptions,
    SlotSharing,
    FunctionCode,
    FunctionStats,
)>;
static RECURRING: std::sync::Mutex<Memo> = std::sync::Mutex::new(Vec::new());
const RECURRING_MAX: usize = 16;

fn compile_recurring(
    f: &Function,
    callees: &HashMap<String, CalleeSig>,
    opts: CodegenOptions,
    sharing: SlotSharing,
) -> Result<(FunctionCode, FunctionStats), CodegenError> {
    let hit = |memo: &Memo| {
        memo.iter()
            .find(|(g, o, s, _, _)| *o == opts && *s == sharing && g == f)
            .map(|(_, _, _, code, stats)| (code.clone(), stats.clone()))
    };
    // A poisoned lock only means another thread panicked mid-update of a cache: compile anew.
    if let Some(found) = RECURRING.lock().ok().and_then(|m| hit(&m)) {
        return Ok(found);
    }
    let (code, stats) = compile_function(f, callees, opts, sharing)?;
    if let Ok(mut memo) = RECURRING.lock()
        && hit(&memo).is_none()
    {
        if memo.len() >= RECURRING_MAX {
            memo.remove(0);
        }
        memo.push((f.clone(), opts, sharing, code.clone(), stats.clone()));
    }
    Ok((code, stats))
}

fn compile_function(
    f: &Function,
    callees: &HashMap<String, CalleeSig>,
    opts: CodegenOptions,
    sharing: SlotSharing,
) -> Result<(FunctionCode, FunctionStats), CodegenError> {
    let rpo = liveness::reverse_postorder(f).map_err(|b| CodegenError::Build {
        func: f.name.clone(),
        msg: format!("block {b} has no terminator"),
    })?;
    let live = liveness::liveness(f, &rpo);
    let info = check::check_function(f, &rpo, &live, callees)?;
    let layout = slots::layout(f, &rpo, sharing);
    if layout.size > MAX_STACK {
        return Err(CodegenError::StackOverflow {
            func: f.name.clone(),
            needed: layout.size,
            limit: MAX_STACK,
        });
    }
    let m = isel::select_with_layout(f, &rpo, &info, &layout);
    let params: Vec<VReg> = f.params.iter().map(|(v, _)| *v).collect();
    let alloc = regalloc::allocate(&m, &live, &params);
    if alloc.frame > MAX_STACK {
        return Err(CodegenError::StackOverflow {
            func: f.name.clone(),
            needed: alloc.frame,
            limit: MAX_STACK,
        });
    }
    let maps: Vec<String> = f.maps.iter().map(|m| m.name.clone()).collect();
    let blocks = emit::emit(&m, &alloc, &params, &maps);
    let code = link::link(&f.name, &f.section, blocks, f.blocks.len(), opts.link)?;
    let long_jumps = code
        .insns
        .iter()
        .filter(|i| i.code == crate::isa::opcode::BPF_JMP32 | crate::isa::opcode::BPF_JA)
        .count();
    let stats = FunctionStats {
        name: f.name.clone(),
        insns: code.insns.len(),
        spills: alloc.spills,
        frame: alloc.frame,
        long_jumps,
    };
    Ok((code, stats))
}

/// Index sanity of a hand-made or built function.
fn validate(f: &Function) -> Result<(), CodegenError> {
    let err = |msg: String| {
        Err(CodegenError::Build {
            func: f.name.clone(),
            msg,
        })
    };
    if f.blocks.is_empty() {
        return err("no blocks".into());
    }
    if f.params.len() > 5 {
        return err(format!("{} parameters (at most 5)", f.params.len()));
    }
    if f.is_entry && (f.params.len() != 1 || f.params[0].1 != ParamKind::Ctx) {
        return err("an entry program takes exactly the context".into());
    }
    let nv = f.num_vregs;
    let nb = f.blocks.len() as u32;
    for (i, block) in f.blocks.iter().enumerate() {
        let mut bad = None;
        let mut max_v = 0u32;
        let mut see = |v: VReg| max_v = max_v.max(v.0 + 1);
        for inst in &block.insts {
            inst.for_each_use(&mut see);
            if let Some(d) = inst.def() {
                see(d);
            }
            match inst {
                ir::Inst::StackAddr { slot, .. }
                | ir::Inst::StackLoad { slot, .. }
                | ir::Inst::StackStore { slot, .. }
                    if slot.0 as usize >= f.slots.len() =>
                {
                    bad = Some(format!("{slot} out of range in b{i}"));
                }
                ir::Inst::LoadMap { map, .. } if map.0 as usize >= f.maps.len() => {
                    bad = Some(format!("map {} out of range in b{i}", map.0));
                }
                _ => {}
            }
        }
        block.term.for_each_use(&mut see);
        if max_v > nv {
            bad = Some(format!("v{} out of range in b{i}", max_v - 1));
        }
        if block.term.successors().any(|s| s.0 >= nb) {
            bad = Some(format!("jump to a block that does not exist from b{i}"));
        }
        if let Some(msg) = bad {
            return err(msg);
        }
    }
    for (v, _) in &f.params {
        if v.0 >= nv {
            return err(format!("parameter {v} out of range"));
        }
    }
    Ok(())
}

fn helpers_of(f: &Function) -> impl Iterator<Item = &'static HelperSig> + '_ {
    f.blocks
        .iter()
        .flat_map(|b| b.insts.iter())
        .filter_map(|i| match i {
            ir::Inst::Call { helper, .. } => Some(*helper),
            _ => None,
        })
}

fn local_calls(f: &Function) -> impl Iterator<Item = &str> + '_ {
    f.blocks
        .iter()
        .flat_map(|b| b.insts.iter())
        .filter_map(|i| match i {
            ir::Inst::CallLocal { func, .. } => Some(func.as_str()),
            _ => None,
        })
}

/// Parameter kinds of every subprogram and whether it (transitively) moves packet data.
fn callee_sigs(
    funcs: &[Function],
    by_name: &HashMap<&str, &Function>,
) -> Result<HashMap<String, CalleeSig>, CodegenError> {
    for f in funcs {
        for c in local_calls(f) {
            match by_name.get(c) {
                None => {
                    return Err(CodegenError::UnknownFunction {
                        func: f.name.clone(),
                        callee: c.to_string(),
                    });
                }
                Some(g) if g.is_entry => {
                    return Err(CodegenError::Build {
                        func: f.name.clone(),
                        msg: format!(
                            "calls entry program {c}; only .text subprograms can be called"
                        ),
                    });
                }
                Some(g) if g.hook != f.hook => {
                    return Err(CodegenError::Build {
                        func: f.name.clone(),
                        msg: format!("calls {c}, built for another hook"),
                    });
                }
                _ => {}
            }
        }
    }
    let mut changes: BTreeMap<&str, Option<&'static str>> = funcs
        .iter()
        .map(|f| {
            (
                f.name.as_str(),
                helpers_of(f).find(|h| h.changes_packet).map(|h| h.name),
            )
        })
        .collect();
    loop {
        let mut changed = false;
        for f in funcs {
            if changes[f.name.as_str()].is_some() {
                continue;
            }
            if let Some(h) = local_calls(f).find_map(|c| changes.get(c).copied().flatten()) {
                changes.insert(f.name.as_str(), Some(h));
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    Ok(funcs
        .iter()
        .map(|f| {
            let sig = CalleeSig {
                params: f.params.iter().map(|(_, k)| *k).collect(),
                changes_packet: changes[f.name.as_str()],
            };
            (f.name.clone(), sig)
        })
        .collect())
}

/// No recursion; every call chain within 512 bytes of stack (each frame rounded up to 32 bytes, as
/// the verifier counts), and at most 256 bytes below a function that tail-calls.
fn check_call_chains(funcs: &[Function], frames: &HashMap<&str, u32>) -> Result<(), CodegenError> {
    let by_name: HashMap<&str, &Function> = funcs.iter().map(|f| (f.name.as_str(), f)).collect();
    fn walk<'a>(
        f: &'a Function,
        by_name: &HashMap<&str, &'a Function>,
        frames: &HashMap<&str, u32>,
        chain: &mut Vec<&'a str>,
        depth: u32,
        root: &str,
    ) -> Result<(), CodegenError> {
        if chain.contains(&f.name.as_str()) {
            chain.push(&f.name);
            return Err(CodegenError::Recursion {
                chain: chain.join(" -> "),
            });
        }
        let own = frames
            .get(f.name.as_str())
            .copied()
            .unwrap_or(0)
            .max(1)
            .div_ceil(32)
            * 32;
        let depth = depth + own;
        chain.push(&f.name);
        if depth > MAX_STACK {
            return Err(CodegenError::CallChainStack {
                func: root.to_string(),
                chain: chain.join(" -> "),
                needed: depth,
            });
        }
        if chain.len() > 1
            && depth - own > 256
            && helpers_of(f).any(|h| h.id == crate::hooks::TAIL_CALL.id)
        {
            return Err(CodegenError::CallChainStack {
                func: root.to_string(),
                chain: chain.join(" -> "),
                needed: depth,
            });
        }
        if chain.len() > 8 {
            return Err(CodegenError::Build {
                func: root.to_string(),
                msg: format!("call chain deeper than 8 frames: {}", chain.join(" -> ")),
            });
        }
        let mut seen: Vec<&str> = Vec::new();
        for c in local_calls(f) {
            if seen.contains(&c) {
                continue;
            }
            seen.push(c);
            if let Some(g) = by_name.get(c) {
                walk(g, by_name, frames, chain, depth, root)?;
            }
        }
        chain.pop();
        Ok(())
    }
    for f in funcs.iter().filter(|f| f.is_entry) {
        walk(f, &by_name, frames, &mut Vec::new(), 0, &f.name)?;
    }
    // Recursion among subprograms no entry reaches is still refused.
    for f in funcs.iter().filter(|f| !f.is_entry) {
        let mut chain = Vec::new();
        if let Err(e @ CodegenError::Recursion { .. }) =
            walk(f, &by_name, frames, &mut chain, 0, &f.name)
        {
            return Err(e);
        }
    }
    Ok(())
}
