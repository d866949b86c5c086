//! Plain rustc-like rendering of a [`Diagnostic`] (no colours, no terminal features).
//!
//! In: a diagnostic and the text of its file. Out: a multi-line string such as
//! ```text
//! error[E0101]: invalid CIDR `10.0.0.0/33`: prefix length 33 is larger than 32
//!   --> policy.yaml:12:9
//!    |
//! 12 |       - 10.0.0.0/33
//!    |         ^^^^^^^^^^^ expected an IPv4 or IPv6 CIDR
//!    |
//!    = object: CiliumNetworkPolicy default/web
//!    = path: spec.ingress[0].fromCIDR[0]
//! ```
use std::fmt::Write as _;

use super::diagnostic::Diagnostic;

/// Renders one diagnostic. `source` is the file's text (`LoadResult::source`); a wrong or empty text only
/// loses the snippet.
pub fn render_text(d: &Diagnostic, source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}[{}]: {}", d.severity, d.code, d.message);
    let snippet_lines: Vec<(u32, &std::ops::Range<usize>, String)> =
        std::iter::once((d.line, &d.span, primary_label(d)))
            .chain(
                d.labels
                    .iter()
                    .map(|l| (l.line, &l.span, l.message.clone())),
            )
            .filter(|(line, _, _)| *line > 0)
            .collect();
    let width = snippet_lines
        .iter()
        .map(|(l, _, _)| l.to_string().len())
        .max()
        .unwrap_or(1);
    let pad = " ".repeat(width);
    let _ = writeln!(out, "{pad}--> {}", d.location());
    let mut printed_any = false;
    for (line_no, span, label) in &snippet_lines {
        let Some((line_text, line_start)) = line_at(source, *line_no) else {
            continue;
        };
        if !printed_any {
            let _ = writeln!(out, "{pad} |");
        }
        printed_any = true;
        let _ = writeln!(
            out,
            "{:>width$} | {}",
            line_no,
            line_text.trim_end_matches(['\r', '\n'])
        );
        let start = span.start.saturating_sub(line_start).min(line_text.len());
        let end = span
            .end
            .saturating_sub(line_start)
            .min(line_text.trim_end_matches(['\r', '\n']).len())
            .max(start);
        let prefix: String = line_text
            .get(..start)
            .unwrap_or("")
            .chars()
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let carets = line_text
            .get(start..end)
            .map_or(1, |s| s.chars().count())
            .max(1);
        let label = if label.is_empty() {
            String::new()
        } else {
            format!(" {label}")
        };
        let _ = writeln!(out, "{pad} | {prefix}{}{label}", "^".repeat(carets));
    }
    let mut notes = Vec::new();
    if let Some(o) = &d.object {
        notes.push(format!("object: {o}"));
    }
    if let Some(p) = &d.path {
        notes.push(format!("path: {p}"));
    }
    if let Some(f) = &d.found {
        notes.push(format!("found: {f}"));
    }
    if let (Some(e), true) = (&d.expected, d.found.is_some()) {
        notes.push(format!("expected: {e}"));
    }
    notes.extend(d.notes.iter().map(|n| format!("note: {n}")));
    if !notes.is_empty() {
        let _ = writeln!(out, "{pad} |");
        for n in notes {
            let _ = writeln!(out, "{pad} = {n}");
        }
    }
    out
}

/// The label under the primary carets: what was expected (when nothing was "found" to contrast it with,
/// the expectation is the most useful text there).
fn primary_label(d: &Diagnostic) -> String {
    match (&d.expected, &d.found) {
        (Some(e), None) => format!("expected {e}"),
        _ => String::new(),
    }
}

/// The text of 1-based line `line` and its byte offset.
fn line_at(source: &str, line: u32) -> Option<(&str, usize)> {
    let mut offset = 0;
    for (i, text) in source.split_inclusive('\n').enumerate() {
        if i + 1 == line as usize {
            return Some((text, offset));
        }
        offset += text.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::diagnostic::codes;
    use crate::frontend::tree::{Pos, Span};

    #[test]
    fn renders_like_rustc() {
        let src = "a: 1\nports:\n  - port: \"99999\"\n";
        let start = src.find("\"99999\"").unwrap();
        let span = Span {
            start: Pos {
                offset: start,
                line: 3,
                column: 11,
            },
            end: Pos {
                offset: start + 7,
                line: 3,
                column: 18,
            },
        };
        let d = Diagnostic::error(
            codes::PORT_OUT_OF_RANGE,
            "port 99999 is out of range",
            "f.yaml",
            span,
        )
        .with_expected("0..=65535");
        let text = render_text(&d, src);
        assert_eq!(
            text,
            "error[E0103]: port 99999 is out of range\n --> f.yaml:3:11\n  |\n3 |   - port: \"99999\"\n  |           ^^^^^^^ expected 0..=65535\n"
        );
    }
}
