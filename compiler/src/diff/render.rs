//! Rendering a [`DiffReport`]: text for terminals, JSON for machines, markdown for a pull-request
//! comment (heading, summary line, table of newly allowed / newly denied connections, endpoints
//! whose programs change, the policy changes behind them).
//!
//! In: a report. Out: a string ending in a newline; same report, same bytes.

use std::fmt::Write as _;

use super::semantic::{Cause, ChangeKind, ConnectionChange, Decision, RuleRef};
use super::{DiffReport, Mode, ObjectChange};
use crate::diff::programs::{IdentityDiff, ManifestDiff};

/// Connection rows in a markdown table: pull-request comments are limited in size (GitHub: 65,536
/// characters), the rest is counted.
pub const MARKDOWN_MAX_ROWS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" | "txt" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            "markdown" | "md" => Ok(Format::Markdown),
            other => Err(format!(
                "unknown diff format {other:?} (expected text, json, markdown)"
            )),
        }
    }
}

pub fn render(report: &DiffReport, format: Format) -> String {
    match format {
        Format::Text => text(report),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(report).unwrap_or_else(|_| "{}".into());
            s.push('\n');
            s
        }
        Format::Markdown => markdown(report),
    }
}

/// One line: what changes, in counts.
pub fn summary_line(report: &DiffReport) -> String {
    let s = &report.summary;
    let mut parts = Vec::new();
    if report.mode == Mode::Inputs {
        let n = s.newly_allowed + s.newly_denied;
        if n == 0 {
            parts.push("no connection changes".to_string());
        } else {
            parts.push(format!(
                "{n} connection change(s): {} newly allowed, {} newly denied",
                s.newly_allowed, s.newly_denied
            ));
        }
    }
    match &report.programs {
        Some(_) => parts.push(format!("{} endpoint program(s) change", s.programs_changed)),
        None => parts.push("programs not compared".to_string()),
    }
    if report.mode == Mode::Inputs {
        parts.push(format!(
            "policies: {} added, {} removed, {} modified",
            s.policies_added, s.policies_removed, s.policies_modified
        ));
    }
    parts.join("; ")
}

fn rule_line(r: &RuleRef) -> String {
    let mut s = format!("{} {}", r.effect_name(), r.describe());
    if let Some(src) = &r.source {
        let _ = write!(s, " at {src}");
    }
    if let Some(c) = r.policy_change {
        let _ = write!(s, " (policy {})", c.as_str());
    }
    s
}

impl RuleRef {
    fn effect_name(&self) -> &'static str {
        match self.effect {
            ciliumc_ir::RuleKind::Allow => "allow",
            ciliumc_ir::RuleKind::Deny => "deny",
        }
    }
}

fn decisions(d: &[Decision]) -> String {
    d.iter()
        .map(|d| d.describe())
        .collect::<Vec<_>>()
        .join(" / ")
}

fn cause_head(c: &Cause) -> String {
    format!(
        "{} of {}: {} -> {}",
        c.direction,
        c.endpoint,
        decisions(&c.old),
        decisions(&c.new)
    )
}

fn change_title(k: ChangeKind) -> &'static str {
    match k {
        ChangeKind::Allowed => "newly allowed",
        ChangeKind::Denied => "newly denied",
    }
}

fn text(report: &DiffReport) -> String {
    let mut s = String::new();
    let mode = match report.mode {
        Mode::Inputs => "inputs",
        Mode::Outputs => "compile outputs",
    };
    let _ = writeln!(s, "ciliumc diff ({mode})");
    let _ = writeln!(s, "summary: {}", summary_line(report));
    for kind in [ChangeKind::Allowed, ChangeKind::Denied] {
        let rows: Vec<&ConnectionChange> = report
            .connections
            .iter()
            .filter(|c| c.change == kind)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\n{}:", change_title(kind));
        let sign = if kind == ChangeKind::Allowed {
            '+'
        } else {
            '-'
        };
        for c in rows {
            let _ = writeln!(s, "  {sign} {} => {} : {}", c.src, c.dst, c.conns);
            for cause in &c.causes {
                let _ = writeln!(s, "      {}", cause_head(cause));
                for r in &cause.rules_added {
                    let _ = writeln!(s, "        + {}", rule_line(r));
                }
                for r in &cause.rules_removed {
                    let _ = writeln!(s, "        - {}", rule_line(r));
                }
                for p in &cause.policies {
                    let _ = writeln!(s, "        policy {} ({})", p.policy, p.change.as_str());
                }
            }
        }
    }
    if let Some(p) = &report.programs {
        text_programs(&mut s, p);
    }
    text_identities(&mut s, &report.identities);
    text_objects(&mut s, "policies", &report.policies);
    text_objects(&mut s, "other objects", &report.objects);
    if !report.workloads.added.is_empty() || !report.workloads.removed.is_empty() {
        let _ = writeln!(s, "\nworkloads:");
        for w in &report.workloads.added {
            let _ = writeln!(s, "  + {w}");
        }
        for w in &report.workloads.removed {
            let _ = writeln!(s, "  - {w}");
        }
    }
    if !report.notes.is_empty() {
        let _ = writeln!(s, "\nnotes:");
        for n in &report.notes {
            let _ = writeln!(s, "  {n}");
        }
    }
    s
}

fn program_sign(k: crate::diff::ProgramChangeKind) -> char {
    match k {
        crate::diff::ProgramChangeKind::Added => '+',
        crate::diff::ProgramChangeKind::Removed => '-',
        crate::diff::ProgramChangeKind::Modified => '~',
    }
}

fn text_programs(s: &mut String, p: &ManifestDiff) {
    if !p.endpoints.is_empty() {
        let _ = writeln!(s, "\nendpoints whose programs change:");
        for e in &p.endpoints {
            let mut line = format!(
                "  {} {} ({})",
                program_sign(e.change),
                e.endpoint,
                e.change.as_str()
            );
            if !e.details.is_empty() {
                let _ = write!(line, ": {}", e.details.join(", "));
            }
            let _ = writeln!(s, "{line}");
        }
    }
    if !p.maps.is_empty() {
        let _ = writeln!(s, "\nmaps:");
        for m in &p.maps {
            let _ = writeln!(
                s,
                "  {} {}: {} entries added, {} removed, {} changed{}",
                program_sign(m.change),
                m.name,
                m.entries_added,
                m.entries_removed,
                m.entries_changed,
                if m.definition_changed {
                    ", definition changed"
                } else {
                    ""
                }
            );
        }
    }
    let r = &p.rules;
    if r.has_changes() {
        let _ = writeln!(
            s,
            "\nrule table: {} added, {} removed, {} changed",
            r.added, r.removed, r.changed
        );
    }
    if p.tail_calls_changed {
        let _ = writeln!(s, "\ntail calls changed");
    }
}

fn text_identities(s: &mut String, d: &IdentityDiff) {
    if d.is_empty() {
        return;
    }
    let _ = writeln!(s, "\nidentities:");
    for i in &d.added {
        let _ = writeln!(s, "  + {} {}", i.id, i.labels.join(","));
    }
    for i in &d.removed {
        let _ = writeln!(s, "  - {} {}", i.id, i.labels.join(","));
    }
    for r in &d.renumbered {
        let _ = writeln!(s, "  ~ {} -> {} {}", r.old_id, r.new_id, r.labels.join(","));
    }
}

fn object_sign(o: &ObjectChange) -> char {
    match o.change {
        crate::diff::ObjectChangeKind::Added => '+',
        crate::diff::ObjectChangeKind::Removed => '-',
        crate::diff::ObjectChangeKind::Modified => '~',
    }
}

fn object_where(o: &ObjectChange) -> String {
    o.new_source
        .as_ref()
        .or(o.old_source.as_ref())
        .cloned()
        .unwrap_or_default()
}

fn object_fields(o: &ObjectChange) -> String {
    let mut f = o.fields.join(", ");
    if o.more_fields > 0 {
        let _ = write!(f, " and {} more", o.more_fields);
    }
    f
}

fn text_objects(s: &mut String, title: &str, list: &[ObjectChange]) {
    if list.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n{title}:");
    for o in list {
        let mut line = format!("  {} {} ({})", object_sign(o), o.label(), object_where(o));
        if !o.fields.is_empty() {
            let _ = write!(line, ": {}", object_fields(o));
        }
        let _ = writeln!(s, "{line}");
    }
}

fn md_cause(c: &Cause) -> String {
    let mut parts = vec![format!(
        "{} of `{}`: {} → {}",
        c.direction,
        c.endpoint,
        decisions(&c.old),
        decisions(&c.new)
    )];
    for r in &c.rules_added {
        parts.push(format!("+ {}", md_rule(r)));
    }
    for r in &c.rules_removed {
        parts.push(format!("− {}", md_rule(r)));
    }
    for p in &c.policies {
        parts.push(format!("policy `{}` ({})", p.policy, p.change.as_str()));
    }
    parts.join("<br>")
}

fn md_rule(r: &RuleRef) -> String {
    let mut s = format!("{} `{}`", r.effect_name(), r.describe());
    if let Some(src) = &r.source {
        let _ = write!(s, " (`{src}`)");
    }
    s
}

fn markdown(report: &DiffReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "### ciliumc diff\n");
    let _ = writeln!(s, "**Summary:** {}\n", summary_line(report));
    for n in &report.notes {
        let _ = writeln!(s, "> {n}\n");
    }
    if !report.connections.is_empty() {
        let _ = writeln!(s, "#### Connections\n");
        let _ = writeln!(s, "| Change | Source | Destination | Connections | Cause |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for c in report.connections.iter().take(MARKDOWN_MAX_ROWS) {
            let causes: Vec<String> = c.causes.iter().map(md_cause).collect();
            let _ = writeln!(
                s,
                "| {} | `{}` | `{}` | {} | {} |",
                change_title(c.change),
                c.src,
                c.dst,
                c.conns,
                causes.join("<br>").replace('|', "\\|")
            );
        }
        if report.connections.len() > MARKDOWN_MAX_ROWS {
            let _ = writeln!(
                s,
                "\n… and {} more rows (`--format json` lists them all).",
                report.connections.len() - MARKDOWN_MAX_ROWS
            );
        }
        let _ = writeln!(s);
    }
    if let Some(p) = &report.programs {
        let _ = writeln!(s, "#### Endpoints whose programs change\n");
        if p.endpoints.is_empty() {
            let _ = writeln!(s, "None.\n");
        } else {
            for e in &p.endpoints {
                let mut line = format!("- `{}`: {}", e.endpoint, e.change.as_str());
                if !e.details.is_empty() {
                    let _ = write!(line, " ({})", e.details.join(", "));
                }
                let _ = writeln!(s, "{line}");
            }
            let _ = writeln!(s);
        }
        for m in &p.maps {
            let _ = writeln!(
                s,
                "- map `{}`: {} entries added, {} removed, {} changed",
                m.name, m.entries_added, m.entries_removed, m.entries_changed
            );
        }
        if !p.maps.is_empty() {
            let _ = writeln!(s);
        }
    }
    if !report.policies.is_empty() {
        let _ = writeln!(s, "#### Policy changes\n");
        for o in &report.policies {
            let mut line = format!(
                "- {} `{}` (`{}`)",
                o.change.as_str(),
                o.label(),
                object_where(o)
            );
            if !o.fields.is_empty() {
                let _ = write!(line, ": `{}`", object_fields(o).replace(", ", "`, `"));
            }
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(s);
    }
    let id = &report.identities;
    let others =
        report.objects.len() + report.workloads.added.len() + report.workloads.removed.len();
    if !id.is_empty() || others > 0 {
        let _ = writeln!(s, "<details><summary>Other changes</summary>\n");
        for o in &report.objects {
            let _ = writeln!(s, "- {} `{}`", o.change.as_str(), o.label());
        }
        for w in &report.workloads.added {
            let _ = writeln!(s, "- workload added `{w}`");
        }
        for w in &report.workloads.removed {
            let _ = writeln!(s, "- workload removed `{w}`");
        }
        let _ = writeln!(
            s,
            "- identities: {} added, {} removed, {} renumbered",
            id.added.len(),
            id.removed.len(),
            id.renumbered.len()
        );
        let _ = writeln!(s, "\n</details>");
    }
    s
}
