//! Collects validation diagnostics for one object, turning field paths into spans.
//!
//! In: the object being validated. Out: diagnostics carrying file, position, object label and path.
use crate::frontend::diagnostic::{Diagnostic, Severity};
use crate::frontend::load::{LoadOptions, LoadedObject};
use crate::frontend::path::{FieldPath, Target, span_of};
use crate::frontend::tree::Span;

pub(super) struct Reporter<'a> {
    obj: &'a LoadedObject,
    pub(super) options: &'a LoadOptions,
    diags: Vec<Diagnostic>,
}

impl<'a> Reporter<'a> {
    pub(super) fn new(obj: &'a LoadedObject, options: &'a LoadOptions) -> Self {
        Reporter {
            obj,
            options,
            diags: Vec::new(),
        }
    }

    pub(super) fn finish(self) -> Vec<Diagnostic> {
        self.diags
    }

    /// A diagnostic at the value of `path` (or its key), not yet recorded; record it with [`Self::push`].
    pub(super) fn at(
        &self,
        severity: Severity,
        code: &'static str,
        path: &FieldPath,
        target: Target,
        message: impl Into<String>,
    ) -> Diagnostic {
        let span = span_of(self.obj.node(), path, target);
        Diagnostic::new(severity, code, message, &self.obj.location.file, span)
            .with_object(Some(self.obj.display_name()))
            .with_path(path.to_string())
    }

    /// An error at the value of `path`.
    pub(super) fn error(
        &self,
        code: &'static str,
        path: &FieldPath,
        message: impl Into<String>,
    ) -> Diagnostic {
        self.at(Severity::Error, code, path, Target::Value, message)
    }

    /// An error at the key of `path` (the field should not be there at all).
    pub(super) fn error_key(
        &self,
        code: &'static str,
        path: &FieldPath,
        message: impl Into<String>,
    ) -> Diagnostic {
        self.at(Severity::Error, code, path, Target::Key, message)
    }

    /// A warning at the key of `path`.
    pub(super) fn warning_key(
        &self,
        code: &'static str,
        path: &FieldPath,
        message: impl Into<String>,
    ) -> Diagnostic {
        self.at(Severity::Warning, code, path, Target::Key, message)
    }

    /// The span of `path` (or of its deepest existing parent).
    pub(super) fn span(&self, path: &FieldPath, target: Target) -> Span {
        span_of(self.obj.node(), path, target)
    }

    pub(super) fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }
}
