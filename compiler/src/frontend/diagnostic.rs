//! Diagnostics: a plain, serializable record of one problem, and the stable code catalogue.
//!
//! In: whatever found the problem (tree builder, deserializer, validation, loader). Out: [`Diagnostic`]
//! values the CLI renders (`render::render_text`, miette, or JSON via `Serialize`).
use std::ops::Range;

use serde::Serialize;

use super::tree::Span;

/// Stable diagnostic codes. `E` codes are errors by default, `W` codes warnings (`--strict` may promote
/// some warnings to errors; the code stays).
pub mod codes {
    /// A file or directory could not be read.
    pub const IO: &str = "E0001";
    /// A file is not valid UTF-8.
    pub const NOT_UTF8: &str = "E0002";
    /// YAML/JSON syntax error.
    pub const YAML_SYNTAX: &str = "E0003";
    /// The same key twice in one mapping.
    pub const DUPLICATE_KEY: &str = "E0004";
    /// Unknown alias, or aliases that expand too much.
    pub const BAD_ALIAS: &str = "E0005";
    /// Nesting too deep.
    pub const TOO_DEEP: &str = "E0006";
    /// Go-template placeholder (`{{ ... }}`): the file is a template, not a manifest.
    pub const GO_TEMPLATE: &str = "E0007";
    /// A document that is not a Kubernetes object (not a mapping, no `apiVersion`/`kind`).
    pub const NOT_AN_OBJECT: &str = "E0010";
    /// A kind ciliumc does not know (warning; error with `strict`).
    pub const UNKNOWN_KIND: &str = "W0011";
    /// A field with the wrong type or an invalid value.
    pub const BAD_VALUE: &str = "E0012";
    /// A required field is missing.
    pub const MISSING_FIELD: &str = "E0013";
    /// A field the kind's schema does not have (ignored, as the API server would prune it).
    pub const UNKNOWN_FIELD: &str = "W0014";
    /// Two objects with the same kind, namespace and name.
    pub const DUPLICATE_OBJECT: &str = "E0015";
    /// `metadata.name` missing or empty.
    pub const MISSING_NAME: &str = "E0016";
    /// A known kind under an unexpected `apiVersion`.
    pub const UNEXPECTED_API_VERSION: &str = "W0017";
    /// An inventory entry lacks a field Kubernetes requires; the entry is ignored.
    pub const INCOMPLETE_ENTRY: &str = "W0018";
    /// Malformed CIDR or prefix length.
    pub const BAD_CIDR: &str = "E0101";
    /// An `except` entry not inside its CIDR.
    pub const EXCEPT_OUTSIDE_CIDR: &str = "E0102";
    /// Port number outside 0..=65535.
    pub const PORT_OUT_OF_RANGE: &str = "E0103";
    /// Named port that breaks the IANA service name rules.
    pub const BAD_PORT_NAME: &str = "E0104";
    /// `endPort` smaller than `port`.
    pub const END_PORT_BEFORE_PORT: &str = "E0105";
    /// `endPort` together with a named port.
    pub const END_PORT_WITH_NAMED_PORT: &str = "E0106";
    /// Unknown protocol.
    pub const UNKNOWN_PROTOCOL: &str = "E0107";
    /// Unknown entity.
    pub const UNKNOWN_ENTITY: &str = "E0108";
    /// More than one L3 peer kind in one rule.
    pub const MIXED_PEERS: &str = "E0109";
    /// `fromRequires`/`toRequires`, removed from Cilium.
    pub const REQUIRES_REMOVED: &str = "E0110";
    /// CNP/CCNP rule without `endpointSelector`/`nodeSelector`, or with both.
    pub const SUBJECT_SELECTOR: &str = "E0111";
    /// A rule without any ingress/egress section (Cilium's CRD requires one; warning).
    pub const EMPTY_RULE: &str = "W0112";
    /// Invalid label selector (operator/values mismatch, bad key).
    pub const BAD_SELECTOR: &str = "E0113";
    /// Invalid ICMP type or family.
    pub const BAD_ICMP: &str = "E0114";
    /// A one-of group with none or several members set (CIDR set entry, FQDN selector, LRP frontend, ...).
    pub const ONE_OF: &str = "E0115";
    /// Invalid IP address.
    pub const BAD_IP: &str = "E0116";
    /// Invalid enumerated value (authentication mode, header mismatch action, ...).
    pub const BAD_ENUM: &str = "E0117";
    /// Port ranges where Cilium rejects them (DNS rules, extended IP protocols, LRP).
    pub const BAD_PORT_RANGE: &str = "E0118";
    /// A NetworkPolicy peer that mixes `ipBlock` with selectors, or is empty.
    pub const BAD_PEER: &str = "E0119";
    /// An L7 / TLS / listener combination Cilium rejects.
    pub const BAD_L7: &str = "E0120";
    /// Parsed but not enforced by ciliumc yet.
    pub const NOT_ENFORCED: &str = "W0201";
}

/// Error or warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// A secondary location with its own message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Label {
    pub line: u32,
    pub column: u32,
    pub span: Range<usize>,
    pub message: String,
}

/// One problem. `line`/`column` are 1-based; both are 0 when the problem has no position (unreadable
/// file). `span` is a byte range into the file's text (`LoadResult::source`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub span: Range<usize>,
    /// `Kind namespace/name` (or `Kind name` when cluster scoped) of the object concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Field path inside the object, e.g. `spec.ingress[0].fromCIDR[1]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<Label>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// A diagnostic at `span` of `file`.
    pub fn new(
        severity: Severity,
        code: &'static str,
        message: impl Into<String>,
        file: &str,
        span: Span,
    ) -> Self {
        Diagnostic {
            severity,
            code,
            message: message.into(),
            file: file.to_string(),
            line: span.start.line,
            column: span.start.column,
            span: span.start.offset..span.end.offset.max(span.start.offset),
            object: None,
            path: None,
            expected: None,
            found: None,
            labels: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// An error at `span`.
    pub fn error(code: &'static str, message: impl Into<String>, file: &str, span: Span) -> Self {
        Diagnostic::new(Severity::Error, code, message, file, span)
    }

    /// A warning at `span`.
    pub fn warning(code: &'static str, message: impl Into<String>, file: &str, span: Span) -> Self {
        Diagnostic::new(Severity::Warning, code, message, file, span)
    }

    /// A diagnostic about a whole file, without position.
    pub fn file_level(
        severity: Severity,
        code: &'static str,
        message: impl Into<String>,
        file: &str,
    ) -> Self {
        let mut d = Diagnostic::new(severity, code, message, file, Span::default());
        d.line = 0;
        d.column = 0;
        d
    }

    pub fn with_object(mut self, object: Option<String>) -> Self {
        self.object = object;
        self
    }

    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.path = if path.is_empty() { None } else { Some(path) };
        self
    }

    pub fn with_expected(mut self, expected: impl Into<String>) -> Self {
        self.expected = Some(expected.into());
        self
    }

    pub fn with_found(mut self, found: impl Into<String>) -> Self {
        self.found = Some(found.into());
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    pub fn with_label(mut self, span: Span, message: impl Into<String>) -> Self {
        self.labels.push(Label {
            line: span.start.line,
            column: span.start.column,
            span: span.start.offset..span.end.offset.max(span.start.offset),
            message: message.into(),
        });
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:column` (or just the file when there is no position).
    pub fn location(&self) -> String {
        if self.line == 0 {
            self.file.clone()
        } else {
            format!("{}:{}:{}", self.file, self.line, self.column)
        }
    }
}
