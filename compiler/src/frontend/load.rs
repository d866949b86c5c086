//! Loading: paths → typed objects with locations, plus diagnostics.
//!
//! In: files and directories (recursively `.yaml`, `.yml`, `.json`, visited in sorted order), or a string.
//! Out: [`LoadResult`]: every valid object of a known kind as a [`LoadedObject`] (objects with errors are
//! left out), all diagnostics sorted by file and position, and the source texts for rendering.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::de::{self, DeContext, DeErrorKind};
use super::diagnostic::{Diagnostic, Severity, codes};
use super::model::{self, Kind, Object};
use super::objects::{object_label, resolve_namespace};
use super::path::{self, FieldPath, Target};
use super::tree::{self, Node, NodeValue, Span};
use super::{templates, validate};

/// Loader settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Unknown kinds are errors instead of warnings.
    pub strict: bool,
    /// Emit "parsed, not enforced yet" warnings (W0201).
    pub not_enforced_warnings: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            strict: false,
            not_enforced_warnings: true,
        }
    }
}

/// A place in a source file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Location {
    pub file: String,
    /// 1-based.
    pub line: u32,
    /// 1-based, in characters.
    pub column: u32,
    /// Byte range in the file.
    pub span: Range<usize>,
}

impl Location {
    fn new(file: &str, span: Span) -> Self {
        Location {
            file: file.to_string(),
            line: span.start.line,
            column: span.start.column,
            span: span.start.offset..span.end.offset,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One valid object.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedObject {
    pub kind: Kind,
    pub api_version: String,
    /// The effective namespace: `metadata.namespace`, or `default` for namespaced kinds without one
    /// (as `kubectl apply` does); `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    pub name: String,
    pub object: Object,
    /// Where the object's mapping starts.
    pub location: Location,
    node: Arc<Node>,
}

impl LoadedObject {
    /// `Kind namespace/name` (or `Kind name` when cluster scoped).
    pub fn display_name(&self) -> String {
        object_label(self.kind.as_str(), self.namespace.as_deref(), &self.name)
    }

    /// The location of a field path such as `spec.ingress[0].fromCIDR[1]`; `None` when the path is
    /// malformed or does not exist in the source.
    pub fn location_of(&self, path: &str) -> Option<Location> {
        let path = FieldPath::parse(path)?;
        let (node, found) = path::lookup(&self.node, &path, Target::Value);
        found.then(|| Location::new(&self.location.file, node.span))
    }

    /// The location of a typed path; falls back to the deepest existing parent.
    pub fn location_of_path(&self, path: &FieldPath, target: Target) -> Location {
        Location::new(&self.location.file, path::span_of(&self.node, path, target))
    }

    /// The object's span tree.
    pub fn node(&self) -> &Node {
        &self.node
    }
}

/// Everything a load produced.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub objects: Vec<LoadedObject>,
    pub diagnostics: Vec<Diagnostic>,
    /// File name (as used in diagnostics) → text.
    pub sources: BTreeMap<String, Arc<str>>,
}

impl LoadResult {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warning_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| !d.is_error()).count()
    }

    /// The text of a file named in a diagnostic.
    pub fn source(&self, file: &str) -> Option<&str> {
        self.sources.get(file).map(|s| &**s)
    }
}

/// Loads files and directories with default options.
pub fn load(paths: &[PathBuf]) -> LoadResult {
    load_with(paths, &LoadOptions::default())
}

/// Loads files and directories.
pub fn load_with(paths: &[PathBuf], options: &LoadOptions) -> LoadResult {
    let mut loader = Loader::new(*options);
    let mut seen = BTreeSet::new();
    for file in collect_files(paths, &mut loader.result.diagnostics) {
        let canonical = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
        if !seen.insert(canonical) {
            continue;
        }
        let name = file.display().to_string();
        match std::fs::read(&file) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => loader.add_text(&name, text),
                Err(e) => loader.result.diagnostics.push(Diagnostic::file_level(
                    Severity::Error,
                    codes::NOT_UTF8,
                    format!(
                        "file is not valid UTF-8 (byte {})",
                        e.utf8_error().valid_up_to()
                    ),
                    &name,
                )),
            },
            Err(e) => loader.result.diagnostics.push(Diagnostic::file_level(
                Severity::Error,
                codes::IO,
                format!("cannot read file: {e}"),
                &name,
            )),
        }
    }
    loader.finish()
}

/// Loads one text as if it were the file `file_name` (tests, stdin).
pub fn load_str(text: &str, file_name: &str, options: &LoadOptions) -> LoadResult {
    let mut loader = Loader::new(*options);
    loader.add_text(file_name, text.to_string());
    loader.finish()
}

/// Expands directories (recursively, sorted by path); explicit files are taken whatever their extension.
fn collect_files(paths: &[PathBuf], diagnostics: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk_dir(p, &mut out, diagnostics);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            diagnostics.push(Diagnostic::file_level(
                Severity::Error,
                codes::IO,
                "no such file or directory",
                &p.display().to_string(),
            ));
        }
    }
    out
}

fn walk_dir(dir: &Path, out: &mut Vec<PathBuf>, diagnostics: &mut Vec<Diagnostic>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diagnostics.push(Diagnostic::file_level(
                Severity::Error,
                codes::IO,
                format!("cannot read directory: {e}"),
                &dir.display().to_string(),
            ));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk_dir(&p, out, diagnostics);
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            out.push(p);
        }
    }
}

struct Loader {
    options: LoadOptions,
    result: LoadResult,
    /// (kind, namespace, name) → location of the first object, for duplicate detection.
    first_seen: HashMap<(Kind, Option<String>, String), Location>,
}

impl Loader {
    fn new(options: LoadOptions) -> Self {
        Loader {
            options,
            result: LoadResult::default(),
            first_seen: HashMap::new(),
        }
    }

    fn finish(mut self) -> LoadResult {
        self.result.diagnostics.sort_by(|a, b| {
            (&a.file, a.line, a.column, a.code, &a.message)
                .cmp(&(&b.file, b.line, b.column, b.code, &b.message))
        });
        self.result
    }

    fn add_text(&mut self, file: &str, text: String) {
        let text: Arc<str> = Arc::from(text.strip_prefix('\u{feff}').unwrap_or(&text));
        self.result.sources.insert(file.to_string(), text.clone());
        // The YAML parser is third-party code: a panic in it must become a diagnostic, never a crash.
        let parsed = match std::panic::catch_unwind(|| tree::parse(&text)) {
            Ok(p) => p,
            Err(_) => {
                self.result.diagnostics.push(Diagnostic::file_level(
                    Severity::Error,
                    codes::YAML_SYNTAX,
                    "YAML parser failed on this file",
                    file,
                ));
                return;
            }
        };
        let placeholders = templates::find(&text);
        if !placeholders.is_empty() {
            // Without a complete parse there is no context: every placeholder counts.
            let mut scalars = Vec::new();
            if parsed.syntax_error.is_none() {
                for root in parsed.documents.iter().filter_map(|d| d.root.as_ref()) {
                    tree::scalar_ranges(root, &mut scalars);
                }
            }
            if let Some(d) = templates::diagnose(file, &text, &placeholders, &scalars) {
                self.result.diagnostics.push(d);
                return;
            }
        }
        for doc in parsed.documents {
            let label = doc.root.as_ref().and_then(peek_label);
            for e in &doc.errors {
                let mut d = Diagnostic::error(e.code, e.message.clone(), file, e.span)
                    .with_object(label.clone());
                if let Some((span, msg)) = &e.related {
                    d = d.with_label(*span, msg.clone());
                }
                self.result.diagnostics.push(d);
            }
            if !doc.errors.is_empty() {
                continue;
            }
            if let Some(root) = doc.root {
                self.add_document(file, root);
            }
        }
        if let Some(e) = parsed.syntax_error {
            self.result
                .diagnostics
                .push(Diagnostic::error(e.code, e.message, file, e.span));
        }
    }

    fn add_document(&mut self, file: &str, root: Node) {
        if root.is_null() {
            return;
        }
        if !matches!(root.value, NodeValue::Map(_)) {
            self.result.diagnostics.push(
                Diagnostic::error(
                    codes::NOT_AN_OBJECT,
                    "document is not a Kubernetes object",
                    file,
                    root.span,
                )
                .with_expected("a mapping with `apiVersion`, `kind` and `metadata`"),
            );
            return;
        }
        let kind = root.get_str("kind").unwrap_or_default().to_string();
        if kind.ends_with("List") && !kind.is_empty() && Kind::from_kind_str(&kind).is_none() {
            // Typed lists from the API server (`NamespaceList`) omit kind/apiVersion on their items.
            let item_kind = Kind::from_kind_str(kind.trim_end_matches("List"));
            let api_version = root.get_str("apiVersion").unwrap_or("v1").to_string();
            match root.get("items").map(|e| &e.value) {
                Some(Node {
                    value: NodeValue::Seq(items),
                    ..
                }) => {
                    for item in items {
                        let mut item = item.clone();
                        if let Some(k) = item_kind {
                            add_default(&mut item, "kind", k.as_str());
                            add_default(&mut item, "apiVersion", &api_version);
                        }
                        self.add_object(file, item);
                    }
                }
                Some(n) if n.is_null() => {}
                Some(n) => self.result.diagnostics.push(
                    Diagnostic::error(
                        codes::BAD_VALUE,
                        format!("`items` of a {kind} must be a list"),
                        file,
                        n.span,
                    )
                    .with_path("items"),
                ),
                None => {}
            }
            return;
        }
        self.add_object(file, root);
    }

    fn add_object(&mut self, file: &str, node: Node) {
        let label = peek_label(&node);
        if !matches!(node.value, NodeValue::Map(_)) {
            self.result.diagnostics.push(
                Diagnostic::error(
                    codes::NOT_AN_OBJECT,
                    "list item is not a Kubernetes object",
                    file,
                    node.span,
                )
                .with_expected("a mapping with `apiVersion`, `kind` and `metadata`"),
            );
            return;
        }
        let Some(kind_text) = required_str(&node, "kind") else {
            return self.missing_header(file, &node, "kind");
        };
        let Some(api_version) = required_str(&node, "apiVersion") else {
            return self.missing_header(file, &node, "apiVersion");
        };
        let kind_span = path::span_of(
            &node,
            &FieldPath::parse("kind").unwrap_or_default(),
            Target::Value,
        );
        let Some(kind) = Kind::from_kind_str(&kind_text) else {
            let severity = if self.options.strict {
                Severity::Error
            } else {
                Severity::Warning
            };
            self.result.diagnostics.push(
                Diagnostic::new(
                    severity,
                    codes::UNKNOWN_KIND,
                    format!("unknown kind `{kind_text}`, object skipped"),
                    file,
                    kind_span,
                )
                .with_object(label)
                .with_path("kind")
                .with_found(format!("`{kind_text}`"))
                .with_expected(format!(
                    "one of {}",
                    Kind::ALL
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            );
            return;
        };
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        if !kind.api_groups().contains(&group) {
            let span = path::span_of(
                &node,
                &FieldPath::parse("apiVersion").unwrap_or_default(),
                Target::Value,
            );
            self.result.diagnostics.push(
                Diagnostic::warning(
                    codes::UNEXPECTED_API_VERSION,
                    format!("unexpected apiVersion `{api_version}` for kind {kind}"),
                    file,
                    span,
                )
                .with_object(label.clone())
                .with_path("apiVersion")
                .with_expected(
                    kind.api_groups()
                        .iter()
                        .map(|g| {
                            if g.is_empty() {
                                "v1".to_string()
                            } else {
                                format!("{g}/...")
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(" or "),
                ),
            );
        }
        let ctx = DeContext::new();
        let object = match deserialize_kind(kind, &node, &ctx) {
            Ok(o) => o,
            Err(e) => {
                let span = e.span.unwrap_or(node.span);
                let code = if e.kind == DeErrorKind::MissingField {
                    codes::MISSING_FIELD
                } else {
                    codes::BAD_VALUE
                };
                let mut d = Diagnostic::error(code, e.message.clone(), file, span)
                    .with_object(label)
                    .with_path(e.path().to_string());
                d.expected = e.expected.clone();
                d.found = e.found.clone();
                self.result.diagnostics.push(d);
                return;
            }
        };
        if kind.is_policy() {
            for u in ctx.take_unknown() {
                let path = path::path_to_offset(&node, u.span.start.offset)
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                let mut d = Diagnostic::warning(
                    codes::UNKNOWN_FIELD,
                    format!("unknown field `{}` (ignored)", u.key),
                    file,
                    u.span,
                )
                .with_object(label.clone())
                .with_path(path)
                .with_found(format!("`{}`", u.key))
                .with_expected(format!(
                    "one of {}",
                    u.expected
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                if let Some(s) = closest(&u.key, u.expected) {
                    d = d.with_note(format!("did you mean `{s}`?"));
                }
                self.result.diagnostics.push(d);
            }
        }
        let meta = object.metadata();
        let name = meta.name.clone().unwrap_or_default();
        if name.is_empty() {
            let span = path::span_of(
                &node,
                &FieldPath::parse("metadata").unwrap_or_default(),
                Target::Key,
            );
            self.result.diagnostics.push(
                Diagnostic::error(
                    codes::MISSING_NAME,
                    "object has no `metadata.name`",
                    file,
                    span,
                )
                .with_object(label)
                .with_path("metadata.name")
                .with_expected("a non-empty name"),
            );
            return;
        }
        let namespace = resolve_namespace(kind, meta.namespace.as_deref());
        let loaded = LoadedObject {
            kind,
            api_version,
            namespace,
            name,
            object,
            location: Location::new(file, node.span),
            node: Arc::new(node),
        };
        let diags = validate::validate_object(&loaded, &self.options);
        let has_errors = diags.iter().any(Diagnostic::is_error);
        self.result.diagnostics.extend(diags);
        if has_errors {
            return;
        }
        let key = (loaded.kind, loaded.namespace.clone(), loaded.name.clone());
        if let Some(first) = self.first_seen.get(&key) {
            let span = path::span_of(
                loaded.node(),
                &FieldPath::parse("metadata.name").unwrap_or_default(),
                Target::Value,
            );
            let mut d = Diagnostic::error(
                codes::DUPLICATE_OBJECT,
                format!("duplicate object {}", loaded.display_name()),
                file,
                span,
            )
            .with_object(Some(loaded.display_name()))
            .with_path("metadata.name")
            .with_note(format!("first defined at {first}"));
            if first.file == file {
                let first_span = Span {
                    start: tree::Pos {
                        offset: first.span.start,
                        line: first.line,
                        column: first.column,
                    },
                    end: tree::Pos {
                        offset: first.span.end,
                        line: first.line,
                        column: first.column,
                    },
                };
                d = d.with_label(first_span, "first defined here");
            }
            self.result.diagnostics.push(d);
            return;
        }
        let name_span = path::span_of(
            loaded.node(),
            &FieldPath::parse("metadata.name").unwrap_or_default(),
            Target::Value,
        );
        self.first_seen.insert(key, Location::new(file, name_span));
        self.result.objects.push(loaded);
    }

    fn missing_header(&mut self, file: &str, node: &Node, field: &str) {
        self.result.diagnostics.push(
            Diagnostic::error(
                codes::NOT_AN_OBJECT,
                format!("object has no `{field}`"),
                file,
                node.span,
            )
            .with_object(peek_label(node))
            .with_path(field)
            .with_expected(format!("a `{field}` string")),
        );
    }
}

/// Adds `key: value` to a mapping that lacks it (the entry points at the mapping itself).
fn add_default(node: &mut Node, key: &str, value: &str) {
    let span = node.span;
    if let NodeValue::Map(entries) = &mut node.value
        && !entries.iter().any(|e| e.key.as_scalar() == Some(key))
    {
        let scalar = |text: &str| Node {
            value: NodeValue::Scalar(tree::Scalar {
                text: text.to_string(),
                plain: false,
                block: false,
                tag: None,
            }),
            span: Span {
                start: span.start,
                end: span.start,
            },
        };
        entries.push(tree::Entry {
            key: scalar(key),
            value: scalar(value),
        });
    }
}

fn required_str(node: &Node, key: &str) -> Option<String> {
    node.get_str(key)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `Kind namespace/name` read straight from the tree, for diagnostics about objects that failed to parse.
fn peek_label(node: &Node) -> Option<String> {
    let kind = node.get_str("kind")?;
    let meta = node.get("metadata").map(|e| &e.value);
    let name = meta.and_then(|m| m.get_str("name")).unwrap_or("<unnamed>");
    let namespace = meta.and_then(|m| m.get_str("namespace"));
    let namespace = match Kind::from_kind_str(kind) {
        Some(k) => resolve_namespace(k, namespace),
        None => namespace.map(str::to_string),
    };
    Some(object_label(kind, namespace.as_deref(), name))
}

fn deserialize_kind(kind: Kind, node: &Node, ctx: &DeContext) -> Result<Object, de::DeError> {
    Ok(match kind {
        Kind::NetworkPolicy => Object::NetworkPolicy(de::from_node(node, ctx)?),
        Kind::CiliumNetworkPolicy => Object::CiliumNetworkPolicy(de::from_node(node, ctx)?),
        Kind::CiliumClusterwideNetworkPolicy => {
            Object::CiliumClusterwideNetworkPolicy(de::from_node(node, ctx)?)
        }
        Kind::CiliumLocalRedirectPolicy => {
            Object::CiliumLocalRedirectPolicy(de::from_node(node, ctx)?)
        }
        Kind::Service => Object::Service(de::from_node(node, ctx)?),
        Kind::EndpointSlice => Object::EndpointSlice(de::from_node(node, ctx)?),
        Kind::Namespace => Object::Namespace(de::from_node(node, ctx)?),
        Kind::Pod => Object::Pod(de::from_node(node, ctx)?),
        Kind::Node => Object::Node(de::from_node(node, ctx)?),
        Kind::CiliumExternalWorkload => Object::CiliumExternalWorkload(de::from_node(node, ctx)?),
        Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet | Kind::ReplicaSet | Kind::Job => {
            Object::Workload(de::from_node::<model::Workload>(node, ctx)?)
        }
        Kind::CronJob => Object::CronJob(de::from_node(node, ctx)?),
    })
}

/// The expected name closest to `key` by edit distance, when close enough to be a likely typo.
fn closest(key: &str, expected: &[&'static str]) -> Option<&'static str> {
    expected
        .iter()
        .map(|e| {
            (
                edit_distance(&key.to_ascii_lowercase(), &e.to_ascii_lowercase()),
                *e,
            )
        })
        .filter(|(d, e)| *d <= 2.max(e.len() / 4))
        .min()
        .map(|(_, e)| e)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
