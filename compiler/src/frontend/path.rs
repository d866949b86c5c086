//! Field paths inside an object (`spec.ingress[0].fromCIDR[1]`) and their lookup in the span tree.
//!
//! In: a path (typed segments or its text form). Out: the node it names, hence its span. Keys that contain
//! `.`, `[`, `]` or `"` (label keys such as `app.kubernetes.io/name`) are written `["key"]`.
use std::fmt;

use super::tree::{Node, NodeValue, Span};

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

/// A path from an object's root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(pub Vec<PathSeg>);

impl FieldPath {
    /// Parses the text form; `None` when malformed.
    pub fn parse(text: &str) -> Option<FieldPath> {
        let mut segs = Vec::new();
        let mut rest = text;
        let mut first = true;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("[\"") {
                let end = r.find("\"]")?;
                segs.push(PathSeg::Key(r[..end].to_string()));
                rest = &r[end + 2..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']')?;
                segs.push(PathSeg::Index(r[..end].parse().ok()?));
                rest = &r[end + 1..];
            } else {
                let r = if first { rest } else { rest.strip_prefix('.')? };
                let end = r.find(['.', '[']).unwrap_or(r.len());
                if end == 0 {
                    return None;
                }
                segs.push(PathSeg::Key(r[..end].to_string()));
                rest = &r[end..];
            }
            first = false;
        }
        Some(FieldPath(segs))
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> FieldPath {
        let mut p = self.clone();
        p.0.push(PathSeg::Key(key.to_string()));
        p
    }

    /// This path extended by an index.
    pub fn index(&self, index: usize) -> FieldPath {
        let mut p = self.clone();
        p.0.push(PathSeg::Index(index));
        p
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                PathSeg::Index(n) => write!(f, "[{n}]")?,
                PathSeg::Key(k) if k.contains(['.', '[', ']', '"']) || k.is_empty() => {
                    write!(f, "[\"{k}\"]")?
                }
                PathSeg::Key(k) if i == 0 => f.write_str(k)?,
                PathSeg::Key(k) => write!(f, ".{k}")?,
            }
        }
        Ok(())
    }
}

/// What to point at when a path names a mapping entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The value (the usual choice).
    Value,
    /// The key (for "this field should not be here").
    Key,
}

/// Finds the node a path names. Missing steps stop at the deepest existing node, so a diagnostic about an
/// absent field still points at its parent; the returned flag tells whether the full path was found.
pub fn lookup<'a>(root: &'a Node, path: &FieldPath, target: Target) -> (&'a Node, bool) {
    let mut node = root;
    let mut key_node = None;
    for seg in &path.0 {
        let next = match (seg, &node.value) {
            (PathSeg::Key(k), NodeValue::Map(entries)) => entries
                .iter()
                .find(|e| e.key.as_scalar() == Some(k.as_str()))
                .map(|e| (&e.key, &e.value)),
            (PathSeg::Index(i), NodeValue::Seq(items)) => items.get(*i).map(|n| (n, n)),
            _ => None,
        };
        match next {
            Some((k, v)) => {
                key_node = Some(k);
                node = v;
            }
            None => return (node, false),
        }
    }
    match (target, key_node) {
        (Target::Key, Some(k)) => (k, true),
        _ => (node, true),
    }
}

/// The span a path names (see [`lookup`]).
pub fn span_of(root: &Node, path: &FieldPath, target: Target) -> Span {
    lookup(root, path, target).0.span
}

/// The path of the node whose key or value starts at `offset` (used for unknown-field warnings).
pub fn path_to_offset(root: &Node, offset: usize) -> Option<FieldPath> {
    let mut path = FieldPath::default();
    let mut node = root;
    'descend: loop {
        match &node.value {
            NodeValue::Map(entries) => {
                for e in entries {
                    if e.key.span.start.offset == offset {
                        path.0.push(PathSeg::Key(e.key.as_scalar()?.to_string()));
                        return Some(path);
                    }
                    if e.value.span.start.offset <= offset
                        && offset < e.value.span.end.offset.max(e.value.span.start.offset + 1)
                    {
                        path.0.push(PathSeg::Key(e.key.as_scalar()?.to_string()));
                        node = &e.value;
                        continue 'descend;
                    }
                }
                return None;
            }
            NodeValue::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    if item.span.start.offset <= offset
                        && offset < item.span.end.offset.max(item.span.start.offset + 1)
                    {
                        path.0.push(PathSeg::Index(i));
                        node = item;
                        continue 'descend;
                    }
                }
                return None;
            }
            NodeValue::Scalar(_) => {
                return if node.span.start.offset == offset {
                    Some(path)
                } else {
                    None
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::tree;

    #[test]
    fn text_form_round_trips() {
        for text in [
            "spec.ingress[0].fromCIDR[1]",
            "metadata.labels[\"app.kubernetes.io/name\"]",
            "specs[2]",
        ] {
            assert_eq!(FieldPath::parse(text).unwrap().to_string(), text);
        }
        assert!(FieldPath::parse("a..b").is_none());
        assert!(FieldPath::parse("a[x]").is_none());
    }

    #[test]
    fn lookup_finds_values_and_keys() {
        let root = tree::parse("spec:\n  ingress:\n  - fromCIDR: [10.0.0.0/8, 1.2.3.4/33]\n")
            .documents
            .remove(0)
            .root
            .unwrap();
        let path = FieldPath::parse("spec.ingress[0].fromCIDR[1]").unwrap();
        let (node, found) = lookup(&root, &path, Target::Value);
        assert!(found);
        assert_eq!(node.as_scalar(), Some("1.2.3.4/33"));
        assert_eq!(node.span.start.line, 3);
        let key = span_of(
            &root,
            &FieldPath::parse("spec.ingress[0].fromCIDR").unwrap(),
            Target::Key,
        );
        assert_eq!(key.start.column, 5);
        assert_eq!(path_to_offset(&root, node.span.start.offset), Some(path));
    }
}
