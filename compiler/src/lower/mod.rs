//! Lowering: one endpoint's policy IR → two tc programs in the codegen IR.
//!
//! In: one direction's [`DirectionPolicy`] and the endpoint's identity. Out: codegen
//! [`Function`]s (the identity left as a link-time constant, [`LOCAL_IDENTITY`]) named as Cilium
//! names the endpoint programs: `cil_from_container` (traffic from the endpoint: its egress
//! policy, attached at tc ingress of the host-side interface) and `cil_to_container` (traffic to
//! the endpoint: its ingress policy, attached at tc egress of the host-side interface).
//!
//! Each program: `parse` → connection tracking (an existing flow or the reply of one passes) →
//! the peer's identity (`ipcache`: buckets, exact-match maps, trie; a miss is world) → `decide`
//! (a large decision calls its parts, global subprograms: `dispatch::Parts`) → on allow, record
//! the flow in CT; on every verdict of a new flow and every drop, an event (`events`). The parts
//! follow the entry program in the output.

pub mod budget;
pub mod decide;
pub mod dispatch;
pub mod events;
pub mod flatten;
pub mod ipcache;
pub mod maps;
pub mod parse;

use ciliumc_ir::identity::NumericIdentity;
use ciliumc_ir::policy::{Direction, DirectionPolicy};
use ciliumc_targets::codegen::Annotation;
use ciliumc_targets::codegen::{
    AluOp, Cond, Function, FunctionBuilder, Operand, Size, SlotId, VReg,
};
use ciliumc_targets::hooks::{self, Hook, TC_ACT_OK, TC_ACT_SHOT};

use self::events::{EVENT_DROP, EVENT_POLICY_VERDICT, EventFields};

/// Program for traffic from the endpoint (its egress policy).
pub const FROM_CONTAINER: &str = "cil_from_container";
/// Program for traffic to the endpoint (its ingress policy).
pub const TO_CONTAINER: &str = "cil_to_container";

/// Where a policy direction's program attaches on the endpoint's host-side interface.
pub fn program_for(direction: Direction) -> (&'static str, Hook) {
    match direction {
        Direction::Egress => (FROM_CONTAINER, Hook::TcIngress),
        Direction::Ingress => (TO_CONTAINER, Hook::TcEgress),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("endpoint {endpoint}: building the {direction} program: {source}")]
    Build {
        endpoint: String,
        direction: Direction,
        source: ciliumc_targets::codegen::CodegenError,
    },
}

/// A map that belongs to one program (large identity sets), with its initial entries.
#[derive(Debug, Clone)]
pub struct ProgramMap {
    pub def: ciliumc_targets::elf::MapDef,
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// One direction lowered: the entry program first, then the subprograms it calls, and the
/// program's own maps.
#[derive(Debug, Clone)]
pub struct Lowered {
    pub functions: Vec<Function>,
    pub maps: Vec<ProgramMap>,
    /// BTF signatures the object must declare (global subprograms), by function name.
    pub signatures: Vec<(String, ciliumc_targets::elf::FuncSignature)>,
    /// Values of the constants the code loads ([`LOCAL_IDENTITY`]), for [`Lowered::bind`].
    pub constants: Vec<(&'static str, u32)>,
}

/// The constant events carry as the endpoint's identity. The programs load it as a link-time
/// constant (`FunctionBuilder::link_const`), bound in the compiled code by [`Lowered::bind`], so
/// that a program which differs between endpoints only in it (an unenforced direction) is
/// compiled once per process.
pub const LOCAL_IDENTITY: &str = "local_identity";

impl Lowered {
    /// Writes the constants' values into the compiled code of these functions.
    pub fn bind(&self, code: &mut [ciliumc_targets::program::FunctionCode]) {
        bind_constants(code, &self.constants);
    }
}

/// Writes `constants` (name, value) into every function of `code` that loads them.
pub fn bind_constants(
    code: &mut [ciliumc_targets::program::FunctionCode],
    constants: &[(&'static str, u32)],
) {
    for c in code {
        for (name, value) in constants {
            c.bind_constant(name, *value);
        }
    }
}

/// Choices of [`lower_direction_with`].
#[derive(Debug, Clone)]
pub struct LowerOptions {
    /// Prefix of the program's own map names (at most 8 characters kept), so that objects of
    /// different endpoints do not share them; `None` keeps every set in code.
    pub map_tag: Option<String>,
    /// Per rule id, the annotation placed on the code that decides for that rule (kept in the
    /// object as BTF line info: `ciliumc disasm` and `bpftool prog dump xlated` show it).
    pub rule_notes: Option<RuleNotes>,
}

/// Rule id → where the rule came from, shared by every endpoint of a compilation.
pub type RuleNotes = std::sync::Arc<std::collections::BTreeMap<u32, Annotation>>;

/// The annotation of every rule: `rule 17: CiliumNetworkPolicy default/rule1 ingress[0] (file:line:col)`.
pub fn rule_notes(
    origins: &std::collections::BTreeMap<
        ciliumc_ir::policy::RuleId,
        ciliumc_ir::policy::RuleOrigin,
    >,
) -> RuleNotes {
    let notes = origins
        .iter()
        .map(|(id, origin)| {
            let loc = origin.source.as_ref();
            let what = origin.describe();
            let note = Annotation {
                file: loc.map_or_else(|| "ciliumc".into(), |l| l.file.clone()),
                // Line 0 is never shown by objdump-style tools.
                line: loc.map_or(1, |l| l.line.max(1)),
                column: loc.map_or(0, |l| l.column),
                text: match loc {
                    Some(l) => format!("rule {id}: {what} ({l})"),
                    None => format!("rule {id}: {what}"),
                },
            };
            (id.0, note)
        })
        .collect();
    std::sync::Arc::new(notes)
}

impl LowerOptions {
    pub fn for_tag(tag: &str) -> Self {
        LowerOptions {
            map_tag: Some(tag.to_string()),
            rule_notes: None,
        }
    }
}

/// One direction with its own maps where the optimizer picks them.
pub fn lower_direction_with(
    local_identity: NumericIdentity,
    policy: &DirectionPolicy,
    direction: Direction,
    options: &LowerOptions,
) -> Result<Lowered, ciliumc_targets::codegen::CodegenError> {
    let names = options.map_tag.as_deref().map(|t| map_names(t, direction));
    let notes = options.rule_notes.as_deref();
    let (functions, maps) = if policy.enforced {
        lower_program(policy, direction, names.as_ref(), notes)?
    } else {
        (unenforced(direction)?, Vec::new())
    };
    let signatures = functions
        .iter()
        .skip(1)
        .map(|f| (f.name.clone(), global_signature(f)))
        .collect();
    Ok(Lowered {
        functions,
        maps,
        signatures,
        constants: vec![(LOCAL_IDENTITY, local_identity.0)],
    })
}

/// The program of an unenforced direction and its subprograms: the same for every endpoint
/// (the identity is a link-time constant), so built once per process and marked recurring, so
/// that codegen compiles it once too.
fn unenforced(
    direction: Direction,
) -> Result<Vec<Function>, ciliumc_targets::codegen::CodegenError> {
    static BUILT: PerDirection = PerDirection::new();
    BUILT.get_or_build(direction, || {
        lower_program(&DirectionPolicy::unenforced(), direction, None, None).map(|(f, _)| f)
    })
}

/// Functions that depend on nothing but the direction, built once per process for each
/// direction and marked recurring, so that codegen compiles them once too.
pub(crate) struct PerDirection(
    [std::sync::OnceLock<Result<Vec<Function>, ciliumc_targets::codegen::CodegenError>>; 2],
);

impl PerDirection {
    pub(crate) const fn new() -> Self {
        PerDirection([std::sync::OnceLock::new(), std::sync::OnceLock::new()])
    }

    /// The functions built for `direction` (by `build`, the first time), as clones (cheap: the
    /// blocks are shared).
    pub(crate) fn get_or_build(
        &self,
        direction: Direction,
        build: impl FnOnce() -> Result<Vec<Function>, ciliumc_targets::codegen::CodegenError>,
    ) -> Result<Vec<Function>, ciliumc_targets::codegen::CodegenError> {
        let cell = match direction {
            Direction::Ingress => &self.0[0],
            Direction::Egress => &self.0[1],
        };
        cell.get_or_init(|| {
            let mut functions = build()?;
            for f in &mut functions {
                f.recurring = true;
            }
            Ok(functions)
        })
        .clone()
    }
}

/// The BTF signature of one of our subprograms: global linkage (the kernel verifies it once, on
/// its own), the context as `struct __sk_buff *` (or `struct xdp_md *`), 64-bit scalars, a 64-bit
/// result.
pub fn global_signature(function: &Function) -> ciliumc_targets::elf::FuncSignature {
    use ciliumc_targets::codegen::ParamKind;
    use ciliumc_targets::elf::{FuncLinkage, FuncSignature, ParamType, ReturnType};
    let ctx = function.hook.ctx_struct();
    let params = function
        .params
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| match kind {
            ParamKind::Ctx => ("ctx".to_string(), ParamType::Ctx(ctx.to_string())),
            ParamKind::Scalar => (format!("arg{i}"), ParamType::Scalar { bytes: 8 }),
        })
        .collect();
    FuncSignature {
        linkage: FuncLinkage::Global,
        params,
        returns: ReturnType::U64,
    }
}

/// Names of a program's own maps: `cid_<8 hex digits of sha256(tag)>_<i|e>` (identity → leaf)
/// and `cpl_…` (leaf, protocol, port → outcome); 14 characters, within the kernel's 15, distinct
/// per endpoint and direction.
pub fn map_names(tag: &str, direction: Direction) -> dispatch::MapNames {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(tag.as_bytes());
    let d = match direction {
        Direction::Ingress => 'i',
        Direction::Egress => 'e',
    };
    let h = &hex::encode(digest)[..8];
    dispatch::MapNames {
        identity: format!("cid_{h}_{d}"),
        leaves: format!("cpl_{h}_{d}"),
    }
}

/// One direction's program and the subprograms it calls, every set in code (no maps of its own).
pub fn lower_direction(
    local_identity: NumericIdentity,
    policy: &DirectionPolicy,
    direction: Direction,
) -> Result<Lowered, ciliumc_targets::codegen::CodegenError> {
    lower_direction_with(
        local_identity,
        policy,
        direction,
        &LowerOptions {
            map_tag: None,
            rule_notes: None,
        },
    )
}

/// Family, protocol and policy port are read from the stack where parsing left them, each time
/// they are needed, rather than kept in registers.
///
/// Why from the stack: each parse path ends with some of them known to the verifier as constants
/// (the TCP path knows the protocol is 6, the IPv6 path that the family is 6...). Once a later
/// branch on such a constant is decided, the verifier marks it precise and can no longer prune
/// one path's states against another's, so everything after parsing would be verified once per
/// protocol and family. Values read back from bytes the verifier tracks as plain memory are
/// unknown scalars, the same on every path, and what follows parsing is verified once. Parsing
/// stores family and protocol at unaligned offsets of the flow key, which the verifier keeps as
/// bytes; the port goes through [`store_forgotten`]. Why each time: kept in registers across
/// the CT and ipcache lookups (calls, which leave only r6–r9), they were spilled anyway.
fn flow_key_byte(f: &mut FunctionBuilder, parsed: &parse::Parsed, off: u32) -> VReg {
    f.stack_load(parsed.flow_key, off, Size::B)
}

/// Stores `value` (below 2^31) in `slot` where the verifier keeps only plain bytes: at an
/// unaligned offset (aligned narrow spills keep their value), with a high tag bit so that a
/// constant 0 is not remembered as a zeroed slot. [`load_forgotten`] reads it back.
fn store_forgotten(f: &mut FunctionBuilder, slot: SlotId, value: impl Into<Operand>) {
    const TAG: i64 = 0x8000_0000u32 as i32 as i64;
    let tagged = match value.into() {
        Operand::Imm(k) => Operand::Imm(k | TAG),
        Operand::Reg(v) => f.alu32(AluOp::Or, v, TAG).into(),
    };
    f.stack_store(slot, 4, tagged, Size::W);
}

/// What [`store_forgotten`] left in `slot`, `& mask`: an unknown scalar within the mask.
fn load_forgotten(f: &mut FunctionBuilder, slot: SlotId, mask: i64) -> VReg {
    let tagged = f.stack_load(slot, 4, Size::W);
    f.alu32(AluOp::And, tagged, mask)
}

/// `value & mask` (`mask` < 2^31) as a scalar the verifier knows nothing about beyond the mask,
/// through a round trip in `scratch` (an 8-byte slot, [`store_forgotten`]). Costs three
/// instructions at run time and lets verifier states of different paths meet (see
/// [`flow_key_byte`]).
pub(crate) fn forget_value(
    f: &mut FunctionBuilder,
    scratch: SlotId,
    value: VReg,
    mask: i64,
) -> VReg {
    store_forgotten(f, scratch, value);
    load_forgotten(f, scratch, mask)
}

fn lower_program(
    policy: &DirectionPolicy,
    direction: Direction,
    names: Option<&dispatch::MapNames>,
    notes: Option<&std::collections::BTreeMap<u32, Annotation>>,
) -> Result<(Vec<Function>, Vec<ProgramMap>), ciliumc_targets::codegen::CodegenError> {
    let (name, hook) = program_for(direction);
    let mut f = FunctionBuilder::new(name, hook);
    let ct = f.map(maps::ct_decl());
    let ipc = ipcache::IpcacheMaps::declare(&mut f);
    let events = events::EventMaps {
        ring: f.map(maps::events_decl()),
        lost: f.map(maps::events_lost_decl()),
    };

    // What the event reports, set where it becomes known: a drop sets `reason` (an allowed flow
    // clears it), the decision `rule`, the identity lookup `remote`, parsing the policy port (in
    // `port_slot`). Drops while parsing set them all in one block. Each is live only from where
    // it is set to the event code, not through the whole program, so it holds no register
    // meanwhile.
    let reason = f.vreg();
    let rule = f.vreg();
    let remote = f.vreg();
    let port_slot = f.stack_slot(8);
    let drop = f.block();
    let pass = f.block();
    let allow = f.block();
    let parse_drop = f.block();
    let exits = parse::Exits {
        drop: parse_drop,
        reason,
        pass,
    };
    let parsed = parse::emit_parse(&mut f, direction, &exits);
    let after_parse = f.current();
    f.switch_to(parse_drop);
    f.assign_const(rule, 0);
    f.assign_const(remote, 0);
    store_forgotten(&mut f, port_slot, 0i64);
    f.jump(drop);
    f.switch_to(after_parse);
    store_forgotten(&mut f, port_slot, parsed.port);

    // Connection tracking: the key is oriented from the endpoint, so one lookup finds both
    // later packets of a flow this program allowed and replies to flows the other one allowed.
    // A connection attempt (TCP SYN without ACK) is neither a reply nor part of a flow that policy
    // already allowed, so policy decides it without the lookup (as Cilium re-decides every
    // non-reply packet); an allowed one then (re)creates its entry.
    let new_flow = f.block();
    let established = f.block();
    let lookup = f.block();
    f.branch32(Cond::Eq, parsed.tcp_syn, 1, new_flow, lookup);
    f.switch_to(lookup);
    let key = f.stack_addr(parsed.flow_key);
    let entry = f.map_lookup(ct, key);
    f.branch_null(entry, new_flow, established);
    f.switch_to(established);
    f.ret(TC_ACT_OK);

    // Peer identity (`ipcache`): buckets, exact-match maps, trie; a miss is world.
    f.switch_to(new_flow);
    let decide = f.block();
    f.assign_const(rule, 0);
    let family = flow_key_byte(&mut f, &parsed, parse::KEY_FAMILY);
    ipcache::emit_peer_identity(&mut f, &ipc, family, parsed.flow_key, remote, decide);

    f.switch_to(decide);
    let family = flow_key_byte(&mut f, &parsed, parse::KEY_FAMILY);
    let proto = flow_key_byte(&mut f, &parsed, parse::KEY_PROTO);
    let port = load_forgotten(&mut f, port_slot, 0xffff);
    let inputs = decide::Inputs {
        identity: remote,
        proto,
        port,
        family,
        peer_slot: parsed.flow_key,
        peer_off: parse::KEY_PEER_ADDR,
    };
    let outcome = decide::Targets {
        allow,
        drop,
        rule,
        reason,
    };
    let mut parts = dispatch::Parts::new(dispatch::parts_base(direction), hook, notes);
    let own_maps = decide::emit_decision(
        &mut f, policy, direction, &inputs, &outcome, names, &mut parts,
    );
    if let Some(e) = parts.error {
        return Err(e);
    }
    let subprograms = parts.functions;

    f.switch_to(allow);
    let value = f.stack_slot(maps::CT_VALUE_SIZE);
    f.stack_store(value, 0, rule, Size::W);
    let origin = match direction {
        Direction::Ingress => 1i64,
        Direction::Egress => 2,
    };
    f.stack_store(value, 4, origin, Size::W);
    let ct_map = f.load_map(ct);
    let key = f.stack_addr(parsed.flow_key);
    let value_ptr = f.stack_addr(value);
    f.call(
        &hooks::MAP_UPDATE_ELEM,
        &[ct_map.into(), key.into(), value_ptr.into(), 0i64.into()],
    );
    f.assign_const(reason, 0);
    f.jump(drop);

    // Every event, allowed flows' and drops', from one copy of the event code: two copies were
    // ~170 instructions the verifier walked separately. Drops are the verdicts with a reason
    // (every drop sets one; allowed flows clear it above), and kind, verdict and return code
    // follow from it without a branch, so all paths meet in one verifier state.
    f.switch_to(drop);
    let negated = f.neg(ciliumc_targets::codegen::Width::W64, reason);
    let dropped = f.alu(AluOp::Rsh, negated, 63);
    let kind_step = f.alu(AluOp::Mul, dropped, EVENT_POLICY_VERDICT - EVENT_DROP);
    let verdict_kind = f.constant(EVENT_POLICY_VERDICT);
    let kind = f.alu(AluOp::Sub, verdict_kind, kind_step);
    let parsed_port = load_forgotten(&mut f, port_slot, 0xffff);
    let event = EventFields {
        kind,
        verdict_dropped: dropped,
        reason,
        rule,
        remote_identity: remote,
        port: parsed_port,
    };
    events::emit_event(&mut f, events, parsed.flow_key, direction, &event);
    // TC_ACT_SHOT (2) for a drop, TC_ACT_OK (0) else.
    const _: () = assert!(TC_ACT_OK == 0 && TC_ACT_SHOT == 2);
    let code = f.alu(AluOp::Lsh, dropped, 1);
    f.ret(code);

    f.switch_to(pass);
    f.ret(TC_ACT_OK);
    let mut functions = vec![f.finish()?];
    functions.extend(parse::subprograms(direction)?);
    functions.extend(subprograms);
    Ok((functions, own_maps))
}
