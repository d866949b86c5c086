//! Front end: files → typed, validated objects with source spans and diagnostics.
//!
//! In: paths (files or directories) of YAML/JSON manifests. Out: [`load::LoadResult`] with the typed
//! [`model::Object`]s, each with its source location and a way to find the span of any field, plus
//! rustc-like [`diagnostic::Diagnostic`]s. Pipeline: `templates` (reject Go templates) → `tree` (YAML
//! events → span tree) → `de` (serde over the tree → `model`) → `validate` (semantic checks) → `load`
//! (files, documents, Lists, duplicates). `render` prints diagnostics like rustc; `schema` gives JSON
//! Schemas per kind.
pub mod de;
pub mod diagnostic;
pub mod load;
pub mod model;
pub mod objects;
pub mod path;
pub mod render;
pub mod schema;
pub mod templates;
pub mod tree;
pub mod validate;

pub use diagnostic::{Diagnostic, Severity};
pub use load::{LoadOptions, LoadResult, LoadedObject, Location, load, load_str, load_with};
pub use render::render_text;
pub use schema::schema;
