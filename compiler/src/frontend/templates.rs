//! Go-template detection: manifests with `{{ ... }}` placeholders are templates, not objects.
//!
//! In: a file's text and the ranges of its scalars (when it parsed). Out: one error at the first
//! placeholder, naming how many more there are; the loader then skips the file, because the YAML around
//! placeholders is not meaningful. Not placeholders: `{{ }}` in comments, inside block scalars (`|`/`>`
//! blocks embed config files and dashboards where braces are ordinary text), and matches that start
//! inside a scalar but end outside it (JSON text such as `{"a": "{{x"}}`).
use std::ops::Range;

use super::diagnostic::{Diagnostic, codes};
use super::tree::{ScalarRange, Span, pos_at};

/// Byte ranges of `{{ ... }}` on one line, outside `#` comments. The action may not contain braces, so
/// JSON such as `{"a": "{{x", "b": {}}}` is not mistaken for a template.
pub fn find(text: &str) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let content = strip_comment(line);
        let mut from = 0;
        while let Some(open) = content[from..].find("{{") {
            let open = from + open;
            let body = &content[open + 2..];
            match body.find(['{', '}']) {
                Some(brace) if body[brace..].starts_with("}}") => {
                    let close = open + 2 + brace + 2;
                    found.push(line_start + open..line_start + close);
                    from = close;
                }
                Some(_) => from = open + 1,
                None => break,
            }
        }
        line_start += line.len();
    }
    found
}

/// The error for the placeholders that are template actions (see the module doc); `None` when none is.
pub fn diagnose(
    file: &str,
    text: &str,
    placeholders: &[Range<usize>],
    scalars: &[ScalarRange],
) -> Option<Diagnostic> {
    let outside: Vec<&Range<usize>> = placeholders
        .iter()
        .filter(|p| {
            match scalars
                .iter()
                .find(|s| s.range.start <= p.start && p.start < s.range.end)
            {
                Some(s) => !s.block && p.end <= s.range.end,
                None => true,
            }
        })
        .collect();
    let first = outside.first()?;
    let placeholder = &text[first.start..first.end];
    let span = Span {
        start: pos_at(text, first.start),
        end: pos_at(text, first.end),
    };
    let mut d = Diagnostic::error(
        codes::GO_TEMPLATE,
        format!("Go-template placeholder `{placeholder}`: this file is a template, not a manifest"),
        file,
        span,
    )
    .with_found(format!("`{placeholder}`"))
    .with_expected("a plain YAML/JSON manifest")
    .with_note("render the template first (e.g. `helm template` or the tool that owns it); the file was skipped");
    if outside.len() > 1 {
        d = d.with_note(format!(
            "{} more placeholder(s) in this file",
            outside.len() - 1
        ));
    }
    Some(d)
}

/// The part of a line before a YAML comment: `#` at the start or after whitespace, outside quotes.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let (mut single, mut double) = (false, false);
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\'' if !double => single = !single,
            b'"' if !single => double = !double,
            b'#' if !single && !double && (i == 0 || bytes[i - 1].is_ascii_whitespace()) => {
                return &line[..i];
            }
            _ => {}
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_placeholders_outside_comments_and_blocks() {
        let text =
            "# {{ not this }}\nmetadata:\n  name: {{.TestNamespace}}\n  x: \"{{ .Other }}\"\n";
        let found = find(text);
        assert_eq!(found.len(), 2);
        let d = diagnose("t.yaml", text, &found, &[]).unwrap();
        assert_eq!((d.line, d.column), (3, 9));
        assert!(d.message.contains("{{.TestNamespace}}"));
        assert!(d.notes.iter().any(|n| n.contains("1 more")));
        assert!(find("a: '{ {x} }'\n# {{x}}\n").is_empty());
        assert!(find("{\"a\": \"{{x\", \"b\": {\"c\": {}}}\n").is_empty());
        assert_eq!(find("x: {{{.Y}}\n"), vec![4..10]);
        let block = ScalarRange {
            range: 0..text.len(),
            block: true,
        };
        assert!(diagnose("t.yaml", text, &found, std::slice::from_ref(&block)).is_none());
        // A match that starts in a scalar and ends outside it is JSON structure, not a template.
        let json = "{\"name\": \"a{{b\"}}\n";
        let found = find(json);
        assert_eq!(found.len(), 1);
        let scalar = ScalarRange {
            range: 9..15,
            block: false,
        };
        assert!(diagnose("t.json", json, &found, std::slice::from_ref(&scalar)).is_none());
        let inside = ScalarRange {
            range: 9..20,
            block: false,
        };
        assert!(diagnose("t.json", json, &found, std::slice::from_ref(&inside)).is_some());
    }
}
