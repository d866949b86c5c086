//! Span-preserving YAML (and JSON, which is YAML) document tree.
//!
//! In: the text of one file. Out: one [`Document`] per YAML document, each a [`Node`] tree where every
//! node knows its [`Span`] (byte offsets, 1-based line and column), plus syntax-level errors: YAML syntax
//! errors, duplicate mapping keys, unknown aliases, alias bombs and excessive nesting.
//!
//! Events come from `saphyr-parser` (a maintained YAML 1.2 event parser); the tree is built here with an
//! explicit stack (no recursion), so deep input cannot overflow the stack while building.
use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, ScanError};
use serde::Serialize;

/// A position in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Pos {
    /// Byte offset from the start of the file.
    pub offset: usize,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
}

/// A byte range with the positions of both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Span {
    pub start: Pos,
    pub end: Pos,
}

/// The value of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// A scalar as written; typing (null, bool, int, string) happens when it is deserialized.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub text: String,
    /// Plain (unquoted, not a block scalar): only plain scalars can be null, bool or numbers.
    pub plain: bool,
    /// A literal (`|`) or folded (`>`) block scalar: embedded text such as config files.
    pub block: bool,
    /// Core-schema tag suffix (`str`, `int`, ...) when one was written (`!!str 80`).
    pub tag: Option<String>,
}

/// A mapping entry: both the key and the value keep their spans.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: Node,
    pub value: Node,
}

/// A node of the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: NodeValue,
    pub span: Span,
}

impl Node {
    /// The scalar text, if this is a scalar.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Scalar(s) => Some(&s.text),
            _ => None,
        }
    }

    /// True for a plain null scalar (`~`, `null`, empty).
    pub fn is_null(&self) -> bool {
        matches!(&self.value, NodeValue::Scalar(s) if s.plain && s.tag.is_none() && is_null_text(&s.text))
    }

    /// Looks a key up in a mapping.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            NodeValue::Map(entries) => entries.iter().find(|e| e.key.as_scalar() == Some(key)),
            _ => None,
        }
    }

    /// The value of a key of a mapping, as a scalar string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|e| e.value.as_scalar())
    }
}

/// True for the YAML null spellings.
pub fn is_null_text(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// A syntax-level problem found while building the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeError {
    pub code: &'static str,
    pub message: String,
    pub span: Span,
    /// Extra location, e.g. the first definition of a duplicate key.
    pub related: Option<(Span, String)>,
}

/// One YAML document of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// `None` when the document was empty or could not be built.
    pub root: Option<Node>,
    /// Problems inside this document (duplicate keys, bad aliases, ...).
    pub errors: Vec<TreeError>,
}

/// All documents of a file, and a syntax error that stopped parsing (documents before it are kept).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedFile {
    pub documents: Vec<Document>,
    pub syntax_error: Option<TreeError>,
}

/// Deepest nesting accepted: deeper input is rejected so later recursive passes stay within the stack.
pub const MAX_DEPTH: usize = 128;
/// Largest number of nodes alias expansion may create per document ("billion laughs" guard).
pub const MAX_ALIAS_NODES: usize = 100_000;

/// Maps saphyr's character-based markers to byte offsets, lines and columns in O(1)-ish time, so that a
/// long single-line (minified JSON) file does not make positions quadratic.
struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset of each line start.
    line_starts: Vec<usize>,
    /// Character index of each line start (unused for ASCII text, where it equals the byte offset).
    line_char_starts: Vec<usize>,
    /// Byte offset of every `CHECKPOINT`-th character (non-ASCII text only).
    checkpoints: Vec<usize>,
    ascii: bool,
}

const CHECKPOINT: usize = 64;

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let ascii = text.is_ascii();
        let mut line_starts = vec![0];
        let mut line_char_starts = vec![0];
        let mut checkpoints = Vec::new();
        if ascii {
            line_starts.extend(
                text.bytes()
                    .enumerate()
                    .filter(|(_, b)| *b == b'\n')
                    .map(|(i, _)| i + 1),
            );
        } else {
            for (chars, (i, c)) in text.char_indices().enumerate() {
                if chars % CHECKPOINT == 0 {
                    checkpoints.push(i);
                }
                if c == '\n' {
                    line_starts.push(i + 1);
                    line_char_starts.push(chars + 1);
                }
            }
        }
        LineIndex {
            text,
            line_starts,
            line_char_starts,
            checkpoints,
            ascii,
        }
    }

    /// Byte offset of a character index.
    fn char_to_byte(&self, index: usize) -> usize {
        if self.ascii {
            return index.min(self.text.len());
        }
        let Some(&base) = self.checkpoints.get(index / CHECKPOINT) else {
            return self.text.len();
        };
        let rest = self.text.get(base..).unwrap_or("");
        rest.char_indices()
            .nth(index % CHECKPOINT)
            .map_or(self.text.len(), |(i, _)| base + i)
    }

    /// Character index of a byte offset (a char boundary).
    fn byte_to_char(&self, offset: usize) -> usize {
        if self.ascii {
            return offset;
        }
        let k = self
            .checkpoints
            .partition_point(|&b| b <= offset)
            .saturating_sub(1);
        let base = self.checkpoints.get(k).copied().unwrap_or(0);
        k * CHECKPOINT + self.text.get(base..offset).map_or(0, |s| s.chars().count())
    }

    fn pos(&self, marker: &Marker) -> Pos {
        self.pos_with_hint(self.char_to_byte(marker.index()), marker.line())
    }

    /// Position of a byte offset (rounded down to a char boundary).
    fn pos_of_offset(&self, offset: usize) -> Pos {
        self.pos_with_hint(offset, 0)
    }

    /// Like `pos_of_offset`, trying the 1-based `line_hint` (saphyr's own line count) before a search.
    fn pos_with_hint(&self, offset: usize, line_hint: usize) -> Pos {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let hint_ok = line_hint >= 1
            && self
                .line_starts
                .get(line_hint - 1)
                .is_some_and(|&s| s <= offset)
            && self
                .line_starts
                .get(line_hint)
                .is_none_or(|&next| offset < next);
        let line_idx = if hint_ok {
            line_hint - 1
        } else {
            self.line_starts
                .partition_point(|&s| s <= offset)
                .saturating_sub(1)
        };
        let column = if self.ascii {
            offset - self.line_starts.get(line_idx).copied().unwrap_or(0)
        } else {
            self.byte_to_char(offset) - self.line_char_starts.get(line_idx).copied().unwrap_or(0)
        } + 1;
        Pos {
            offset,
            line: to_u32(line_idx + 1),
            column: to_u32(column),
        }
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The position of a byte offset in `text` (for diagnostics found outside the tree, e.g. templates).
pub fn pos_at(text: &str, offset: usize) -> Pos {
    LineIndex::new(text).pos_of_offset(offset)
}

enum Frame {
    Seq {
        start: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: Pos,
        anchor: usize,
        entries: Vec<Entry>,
        key: Option<Node>,
        /// Key index, built only once a mapping is large (small ones are scanned).
        seen: Option<HashMap<String, Span>>,
    },
}

struct Builder<'a> {
    index: LineIndex<'a>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    errors: Vec<TreeError>,
    root: Option<Node>,
    alias_nodes: usize,
    /// Set after a fatal problem in the current document: events are skipped until it ends.
    poisoned: bool,
    skip_depth: usize,
}

/// Parses every document of `text`.
pub fn parse(text: &str) -> ParsedFile {
    let mut out = ParsedFile::default();
    let mut builder = Builder::new(text);
    let mut parser = Parser::new_from_str(text);
    loop {
        let next = match parser.next_event() {
            None => break,
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                out.syntax_error = Some(builder.syntax_error(&e));
                break;
            }
        };
        let (event, span) = next;
        let start = builder.index.pos(&span.start);
        let end = builder.index.pos(&span.end);
        match event {
            Event::DocumentStart(_) => builder.reset(),
            Event::DocumentEnd => out.documents.push(builder.finish_document()),
            Event::StreamEnd => break,
            other => builder.event(other, Span { start, end }),
        }
    }
    out
}

impl<'a> Builder<'a> {
    fn new(text: &'a str) -> Self {
        Builder {
            index: LineIndex::new(text),
            stack: Vec::new(),
            anchors: HashMap::new(),
            errors: Vec::new(),
            root: None,
            alias_nodes: 0,
            poisoned: false,
            skip_depth: 0,
        }
    }

    fn reset(&mut self) {
        self.stack.clear();
        self.anchors.clear();
        self.errors.clear();
        self.root = None;
        self.alias_nodes = 0;
        self.poisoned = false;
        self.skip_depth = 0;
    }

    fn finish_document(&mut self) -> Document {
        let root = if self.poisoned {
            None
        } else {
            self.root.take()
        };
        let doc = Document {
            root,
            errors: std::mem::take(&mut self.errors),
        };
        self.reset();
        doc
    }

    fn syntax_error(&self, e: &ScanError) -> TreeError {
        let mut pos = self.index.pos(e.marker());
        // Errors found at end of input (unclosed brackets) are shown at the end of the last line.
        let text = self.index.text;
        let trimmed = text.trim_end_matches(['\n', '\r', ' ', '\t']).len();
        if pos.offset >= trimmed && trimmed > 0 {
            pos = self.index.pos_of_offset(trimmed);
        }
        TreeError {
            code: super::diagnostic::codes::YAML_SYNTAX,
            message: format!("YAML syntax error: {}", e.info()),
            span: Span {
                start: pos,
                end: pos,
            },
            related: None,
        }
    }

    fn fail(&mut self, code: &'static str, message: String, span: Span) {
        self.errors.push(TreeError {
            code,
            message,
            span,
            related: None,
        });
        self.poisoned = true;
        // Everything still open is abandoned; later events of this document only move the depth counter.
        self.skip_depth = self.stack.len();
        self.stack.clear();
    }

    fn event(&mut self, event: Event<'_>, span: Span) {
        if self.poisoned {
            match event {
                Event::SequenceStart(..) | Event::MappingStart(..) => self.skip_depth += 1,
                Event::SequenceEnd | Event::MappingEnd => {
                    self.skip_depth = self.skip_depth.saturating_sub(1)
                }
                _ => {}
            }
            return;
        }
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag
                    .filter(|t| t.is_yaml_core_schema())
                    .map(|t| t.suffix.clone());
                let plain = matches!(style, ScalarStyle::Plain);
                let block = matches!(style, ScalarStyle::Literal | ScalarStyle::Folded);
                let span = match style {
                    ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => self.quoted_span(span),
                    _ => span,
                };
                let node = Node {
                    value: NodeValue::Scalar(Scalar {
                        text: text.into_owned(),
                        plain,
                        block,
                        tag,
                    }),
                    span,
                };
                self.remember(anchor, &node);
                self.push_node(node);
            }
            Event::SequenceStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    return self.fail(
                        super::diagnostic::codes::TOO_DEEP,
                        format!("nesting deeper than {MAX_DEPTH} levels"),
                        span,
                    );
                }
                self.stack.push(Frame::Seq {
                    start: span.start,
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    return self.fail(
                        super::diagnostic::codes::TOO_DEEP,
                        format!("nesting deeper than {MAX_DEPTH} levels"),
                        span,
                    );
                }
                self.stack.push(Frame::Map {
                    start: span.start,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                    seen: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => self.close(span),
            Event::Alias(id) => self.alias(id, span),
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd => {}
        }
    }

    /// saphyr-parser 0.3 ends a quoted scalar's span after a trailing comment on its line; the scalar
    /// really ends at its closing quote.
    fn quoted_span(&self, span: Span) -> Span {
        let text = self.index.text;
        let Some(rest) = text.get(span.start.offset..) else {
            return span;
        };
        let mut chars = rest.char_indices();
        let Some((_, quote)) = chars.next() else {
            return span;
        };
        if quote != '"' && quote != '\'' {
            return span;
        }
        let mut escaped = false;
        let mut end = None;
        let mut iter = chars.peekable();
        while let Some((i, c)) = iter.next() {
            if quote == '"' {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    end = Some(i + 1);
                    break;
                }
            } else if c == '\'' {
                if iter.peek().is_some_and(|(_, n)| *n == '\'') {
                    iter.next();
                } else {
                    end = Some(i + 1);
                    break;
                }
            }
        }
        match end {
            Some(len) => Span {
                start: span.start,
                end: self.index.pos_of_offset(span.start.offset + len),
            },
            None => span,
        }
    }

    fn close(&mut self, span: Span) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        let node = match frame {
            Frame::Seq {
                start,
                anchor,
                items,
            } => {
                let end = close_end(span, items.last().map(|n| n.span.end), start);
                let node = Node {
                    value: NodeValue::Seq(items),
                    span: Span { start, end },
                };
                self.remember(anchor, &node);
                node
            }
            Frame::Map {
                start,
                anchor,
                entries,
                ..
            } => {
                let end = close_end(span, entries.last().map(|e| e.value.span.end), start);
                let entries = merge_keys(entries);
                let node = Node {
                    value: NodeValue::Map(entries),
                    span: Span { start, end },
                };
                self.remember(anchor, &node);
                node
            }
        };
        self.push_node(node);
    }

    fn alias(&mut self, id: usize, span: Span) {
        let Some(target) = self.anchors.get(&id) else {
            return self.fail(
                super::diagnostic::codes::BAD_ALIAS,
                "alias refers to an unknown anchor".to_string(),
                span,
            );
        };
        let size = count_nodes(target);
        self.alias_nodes = self.alias_nodes.saturating_add(size);
        if self.alias_nodes > MAX_ALIAS_NODES {
            return self.fail(
                super::diagnostic::codes::BAD_ALIAS,
                format!("aliases expand to more than {MAX_ALIAS_NODES} nodes"),
                span,
            );
        }
        let node = target.clone();
        self.push_node(node);
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
    }

    fn push_node(&mut self, node: Node) {
        let mut duplicate = None;
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries, key, seen, ..
            }) => match key.take() {
                None => {
                    if seen.is_none() && entries.len() >= 32 {
                        *seen = Some(
                            entries
                                .iter()
                                .filter_map(|e| {
                                    e.key.as_scalar().map(|t| (t.to_string(), e.key.span))
                                })
                                .collect(),
                        );
                    }
                    if let Some(text) = node.as_scalar() {
                        let first = match seen {
                            Some(index) => index.get(text).copied(),
                            None => entries
                                .iter()
                                .find(|e| e.key.as_scalar() == Some(text))
                                .map(|e| e.key.span),
                        };
                        match (first, seen) {
                            (Some(first), _) => {
                                duplicate = Some((text.to_string(), node.span, first))
                            }
                            (None, Some(index)) => {
                                index.insert(text.to_string(), node.span);
                            }
                            (None, None) => {}
                        }
                    }
                    *key = Some(node);
                }
                Some(k) => entries.push(Entry {
                    key: k,
                    value: node,
                }),
            },
        }
        if let Some((text, span, first)) = duplicate {
            // Kubernetes' strict decoding rejects duplicate keys; keep parsing to find more problems.
            self.errors.push(TreeError {
                code: super::diagnostic::codes::DUPLICATE_KEY,
                message: format!("duplicate key `{text}`"),
                span,
                related: Some((first, "first defined here".to_string())),
            });
        }
    }
}

/// The end of a collection: a flow collection ends after its `]`/`}` (a non-empty closing span); a block
/// collection ends with its last child (its closing event sits at the next token, maybe lines later).
fn close_end(closing: Span, last_child_end: Option<Pos>, start: Pos) -> Pos {
    let end = if closing.end.offset > closing.start.offset {
        closing.end
    } else {
        last_child_end.unwrap_or(closing.start)
    };
    if end.offset < start.offset {
        start
    } else {
        end
    }
}

/// A scalar's byte range, and whether it is a block scalar (`|`/`>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalarRange {
    pub range: std::ops::Range<usize>,
    pub block: bool,
}

/// Every scalar (keys included) of `node`, for telling template placeholders from text.
pub fn scalar_ranges(node: &Node, out: &mut Vec<ScalarRange>) {
    let mut todo = vec![node];
    while let Some(n) = todo.pop() {
        match &n.value {
            NodeValue::Scalar(s) => out.push(ScalarRange {
                range: n.span.start.offset..n.span.end.offset,
                block: s.block,
            }),
            NodeValue::Seq(items) => todo.extend(items),
            NodeValue::Map(entries) => {
                for e in entries {
                    todo.push(&e.key);
                    todo.push(&e.value);
                }
            }
        }
    }
}

fn count_nodes(node: &Node) -> usize {
    let mut count = 0usize;
    let mut todo = vec![node];
    while let Some(n) = todo.pop() {
        count += 1;
        match &n.value {
            NodeValue::Scalar(_) => {}
            NodeValue::Seq(items) => todo.extend(items),
            NodeValue::Map(entries) => {
                for e in entries {
                    todo.push(&e.key);
                    todo.push(&e.value);
                }
            }
        }
    }
    count
}

/// YAML merge keys (`<<: *base`), which Kubernetes' YAML decoder honours: entries of the merged mappings
/// are added unless the mapping already has the key.
fn merge_keys(entries: Vec<Entry>) -> Vec<Entry> {
    let is_merge =
        |e: &Entry| matches!(&e.key.value, NodeValue::Scalar(s) if s.plain && s.text == "<<");
    if !entries.iter().any(is_merge) {
        return entries;
    }
    let (merges, mut own): (Vec<Entry>, Vec<Entry>) = entries.into_iter().partition(is_merge);
    let mut present: HashSet<String> = own
        .iter()
        .filter_map(|e| e.key.as_scalar().map(str::to_string))
        .collect();
    for merge in merges {
        let sources = match merge.value.value {
            NodeValue::Map(m) => vec![m],
            NodeValue::Seq(items) => items
                .into_iter()
                .filter_map(|n| match n.value {
                    NodeValue::Map(m) => Some(m),
                    _ => None,
                })
                .collect(),
            NodeValue::Scalar(_) => Vec::new(),
        };
        for source in sources {
            for entry in source {
                let Some(text) = entry.key.as_scalar().map(str::to_string) else {
                    continue;
                };
                if present.insert(text) {
                    own.push(entry);
                }
            }
        }
    }
    own
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_byte_offsets_with_one_based_line_and_column() {
        let text = "a: 1\nbé: [x, \"y\"]\n";
        let file = parse(text);
        let root = file.documents[0].root.as_ref().unwrap();
        let entry = root.get("bé").unwrap();
        let quoted = parse("a: \"x\\\"y\" # c\nb: 'it''s' # c\n")
            .documents
            .remove(0)
            .root
            .unwrap();
        let a = quoted.get("a").unwrap().value.span;
        assert_eq!((a.start.offset, a.end.offset), (3, 9));
        let b = quoted.get("b").unwrap().value.span;
        assert_eq!((b.start.column, b.end.column), (4, 11));
        assert_eq!(
            entry.key.span.start,
            Pos {
                offset: 5,
                line: 2,
                column: 1
            }
        );
        let NodeValue::Seq(items) = &entry.value.value else {
            panic!("not a seq")
        };
        assert_eq!(items[1].span.start.line, 2);
        assert_eq!(items[1].span.start.column, 9);
        assert_eq!(
            &text[items[1].span.start.offset..items[1].span.end.offset],
            "\"y\""
        );
    }

    #[test]
    fn positions_on_long_non_ascii_lines() {
        let text = format!("{{\"a\": \"{}\", \"b\": \"x\"}}\n", "é€".repeat(100));
        let root = parse(&text).documents.remove(0).root.unwrap();
        let x = root.get("b").unwrap().value.span;
        let expected = text.find("\"x\"").unwrap();
        assert_eq!(x.start.offset, expected);
        assert_eq!(x.start.line, 1);
        assert_eq!(
            x.start.column as usize,
            text[..expected].chars().count() + 1
        );
        assert_eq!(&text[x.start.offset..x.end.offset], "\"x\"");
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let file = parse("a: 1\nb: 2\na: 3\n");
        let errs = &file.documents[0].errors;
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].span.start.line, 3);
        // Large mappings use an index instead of a scan; both must find duplicates.
        let mut big: String = (0..100).map(|i| format!("k{i}: v\n")).collect();
        big.push_str("k7: again\nk99: again\n");
        let errs = &parse(&big).documents[0].errors;
        assert_eq!(
            errs.iter().map(|e| e.span.start.line).collect::<Vec<_>>(),
            vec![101, 102]
        );
    }

    #[test]
    fn multiple_documents_and_aliases() {
        let file = parse("a: &x {k: v}\nb: *x\n---\nc: 1\n");
        assert_eq!(file.documents.len(), 2);
        let root = file.documents[0].root.as_ref().unwrap();
        assert_eq!(root.get("b").unwrap().value.get_str("k"), Some("v"));
    }

    #[test]
    fn merge_keys_fill_missing_entries() {
        let file = parse("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\n");
        let m = &file.documents[0]
            .root
            .as_ref()
            .unwrap()
            .get("m")
            .unwrap()
            .value;
        assert_eq!(m.get_str("x"), Some("1"));
        assert_eq!(m.get_str("y"), Some("3"));
    }

    #[test]
    fn alias_bombs_are_rejected() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            text.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        let file = parse(&text);
        assert!(
            file.documents[0]
                .errors
                .iter()
                .any(|e| e.message.contains("aliases expand"))
        );
    }

    #[test]
    fn deep_nesting_is_rejected() {
        // saphyr stops deep flow nesting itself; block nesting is stopped by MAX_DEPTH.
        let text = "[".repeat(1000) + &"]".repeat(1000);
        assert!(parse(&text).syntax_error.is_some());
        let text: String = (0..200).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        let file = parse(&text);
        assert!(
            file.documents[0]
                .errors
                .iter()
                .any(|e| e.message.contains("nesting")),
            "{file:?}"
        );
        assert!(file.documents[0].root.is_none());
    }

    #[test]
    fn syntax_errors_have_positions() {
        let file = parse("a: 1\nb: [1, 2\n\n");
        let err = file.syntax_error.unwrap();
        assert_eq!(
            (err.span.start.line, err.span.start.column),
            (2, 9),
            "{err:?}"
        );
        let err = parse("a: 1\nb: c: d\n").syntax_error.unwrap();
        assert_eq!(
            (err.span.start.line, err.span.start.column),
            (2, 5),
            "{err:?}"
        );
    }
}
