//! Verifier budgets, predicted at compile time so that the kernel is never the first to refuse.
//!
//! In: a direction's policy (before code generation) and the emitted instruction count (after).
//! Out: a [`ProgramBudget`] per program (size and predicted processed instructions), or the rule
//! that breaks a budget.
//!
//! What grows with policy: flattened identity rules are bounded in code by the optimizer's
//! thresholds (`decide::IDENTITY_MAP_MIN`, `dispatch::LEAF_MAP_MIN_SEGMENTS`; above them they are
//! data), so only address rules (CIDR peers, compare chains) grow the program without bound; they
//! are capped by [`MAX_ADDRESS_RULES`]. Processed instructions are predicted by a model of how the
//! verifier walks our programs: a fixed part (parse, fragments, CT, ipcache, events; parse paths
//! meet again because the values they leave are forgotten, `lower::forget_value`) plus the
//! decision's instructions a few times each ([`DECISION_STATES`]) and the instructions of the
//! parts of a large decision about once each ([`PART_STATES`]); the kernel counts processed
//! instructions over the entry program and every subprogram it calls.
//! `tests/tests/policy_budget.rs` checks the prediction
//! bounds the kernel's `verified_insns` and stays within 3x of it.

use ciliumc_ir::policy::{DirectionPolicy, PeerSet, RuleId};

/// The kernel's limit on processed instructions per program (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const KERNEL_MAX_PROCESSED: u64 = 1_000_000;
/// Our budget: half the kernel's, as headroom for verifier changes between kernels.
pub const MAX_PROCESSED: u64 = KERNEL_MAX_PROCESSED / 2;
/// Program size budget. The kernel takes up to 1M instructions, but with
/// `net.core.bpf_jit_harden=2` every immediate is blinded and loading slows to seconds per 10k.
pub const MAX_INSNS: usize = 65_536;
/// Address rules (rules with CIDR peers) kept in code per program.
pub const MAX_ADDRESS_RULES: usize = 2_000;

/// Instructions of a program with an empty decision (the parser's subprograms included), and
/// what the verifier processes for them (measured: 1,209 and 1,655–1,730, session 6).
pub const FIXED_INSNS: u64 = 1_200;
pub const FIXED_PROCESSED: u64 = 2_000;
/// Verifier walks of each instruction of the entry program beyond the fixed part (address rules compare per IP family, the code after the tree of each
/// identity class).
pub const DECISION_STATES: u64 = 4;
/// Verifier walks of each instruction of a part of a large decision (`dispatch::Parts`): a tree
/// whose leaves each end in a return, so every instruction is walked about once.
pub const PART_STATES: u64 = 2;

/// What the compiler predicts for one program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramBudget {
    pub program: String,
    pub insns: usize,
    /// Predicted `verified_insns` (an upper bound).
    pub processed: u64,
}

/// Predicted processed instructions of a program of `insns` instructions in the entry program and
/// `part_insns` in the parts of a large decision.
pub fn predict_processed(insns: usize, part_insns: usize) -> u64 {
    let (insns, part_insns) = (insns as u64, part_insns as u64);
    FIXED_PROCESSED + DECISION_STATES * insns.saturating_sub(FIXED_INSNS) + PART_STATES * part_insns
}

/// The budget of a program: `insns` in the entry program, `part_insns` in the decision's parts.
pub fn predict(program: &str, insns: usize, part_insns: usize) -> ProgramBudget {
    ProgramBudget {
        program: program.to_string(),
        insns: insns + part_insns,
        processed: predict_processed(insns, part_insns),
    }
}

/// Why a program is over budget, and the rule that took it there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "rule {rule}: more than {MAX_ADDRESS_RULES} rules with CIDR peers in one direction \
         (the program would exceed the verifier budget); merge the CIDR rules"
    )]
    AddressRules { rule: RuleId },
    #[error(
        "rule {rule}: the program would have {insns} instructions and the verifier would process \
         about {processed} (budgets: {MAX_INSNS} and {MAX_PROCESSED})"
    )]
    Program {
        rule: RuleId,
        insns: usize,
        processed: u64,
    },
}

fn address_rules(policy: &DirectionPolicy) -> impl Iterator<Item = RuleId> + '_ {
    policy.rules.iter().filter_map(|r| match &r.peers {
        PeerSet::Selected { cidrs, .. } if !cidrs.is_empty() => Some(r.id),
        _ => None,
    })
}

/// Before code generation: the growth no threshold bounds.
pub fn check_policy(policy: &DirectionPolicy) -> Result<(), BudgetError> {
    match address_rules(policy).nth(MAX_ADDRESS_RULES) {
        Some(rule) => Err(BudgetError::AddressRules { rule }),
        None => Ok(()),
    }
}

/// After code generation: the program's size and predicted processed instructions. The rule
/// named is the last rule of the policy in code order (address rules come last).
pub fn check_program(policy: &DirectionPolicy, budget: &ProgramBudget) -> Result<(), BudgetError> {
    if budget.insns <= MAX_INSNS && budget.processed <= MAX_PROCESSED {
        return Ok(());
    }
    let rule = address_rules(policy)
        .last()
        .or_else(|| policy.rules.last().map(|r| r.id))
        .unwrap_or(RuleId(0));
    Err(BudgetError::Program {
        rule,
        insns: budget.insns,
        processed: budget.processed,
    })
}
