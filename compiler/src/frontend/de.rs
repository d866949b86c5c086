//! A serde `Deserializer` over the span tree, so typed-model errors point at the exact node.
//!
//! In: a [`Node`] and the target type. Out: the typed value, or a [`DeError`] carrying the span and field
//! path of the innermost node that failed; plus the keys that the target struct does not have (unknown
//! fields, reported as warnings by the loader instead of failing, like the API server's pruning).
//!
//! Scalars follow Kubernetes' YAML decoding: a plain scalar is typed on demand (YAML 1.2 core schema,
//! plus the YAML 1.1 booleans go-yaml accepts), and any scalar is accepted where a string is expected.
use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};

use super::path::{FieldPath, PathSeg};
use super::tree::{Entry, Node, NodeValue, Scalar, Span, is_null_text};

/// What went wrong while deserializing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeErrorKind {
    /// Wrong type or invalid value.
    BadValue,
    /// A required field is missing.
    MissingField,
}

/// A deserialization error located at a node (boxed: errors travel through every level of serde's
/// `Result`s, which should stay small).
#[derive(Debug, Clone, PartialEq)]
pub struct DeError(Box<DeErrorData>);

/// The contents of a [`DeError`] (reached through `Deref`).
#[derive(Debug, Clone, PartialEq)]
pub struct DeErrorData {
    pub kind: DeErrorKind,
    pub message: String,
    pub span: Option<Span>,
    /// Segments collected innermost first while the error travels up; see [`DeError::path`].
    rev_path: Vec<PathSeg>,
    pub expected: Option<String>,
    pub found: Option<String>,
}

impl std::ops::Deref for DeError {
    type Target = DeErrorData;
    fn deref(&self) -> &DeErrorData {
        &self.0
    }
}

impl std::ops::DerefMut for DeError {
    fn deref_mut(&mut self) -> &mut DeErrorData {
        &mut self.0
    }
}

impl DeError {
    /// The field path from the deserialized root to the failing node.
    pub fn path(&self) -> FieldPath {
        FieldPath(self.rev_path.iter().rev().cloned().collect())
    }

    fn at(mut self, span: Span) -> Self {
        if self.span.is_none() {
            self.span = Some(span);
        }
        self
    }

    fn under(mut self, seg: PathSeg) -> Self {
        self.rev_path.push(seg);
        self
    }

    fn new(kind: DeErrorKind, message: String) -> Self {
        DeError(Box::new(DeErrorData {
            kind,
            message,
            span: None,
            rev_path: Vec::new(),
            expected: None,
            found: None,
        }))
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(DeErrorKind::BadValue, msg.to_string())
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        let exp = friendly_expected(exp);
        let mut e = DeError::new(
            DeErrorKind::BadValue,
            format!("invalid type: found {unexp}, expected {exp}"),
        );
        e.expected = Some(exp.clone());
        e.found = Some(unexp.to_string());
        e
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        let exp = friendly_expected(exp);
        let mut e = DeError::new(
            DeErrorKind::BadValue,
            format!("invalid value: found {unexp}, expected {exp}"),
        );
        e.expected = Some(exp.clone());
        e.found = Some(unexp.to_string());
        e
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let list = expected
            .iter()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut e = DeError::new(
            DeErrorKind::BadValue,
            format!("unknown value `{variant}`, expected one of {list}"),
        );
        e.expected = Some(format!("one of {list}"));
        e.found = Some(format!("`{variant}`"));
        e
    }

    fn missing_field(field: &'static str) -> Self {
        let mut e = DeError::new(
            DeErrorKind::MissingField,
            format!("missing required field `{field}`"),
        );
        e.expected = Some(format!("field `{field}`"));
        e
    }
}

/// serde names Rust types (`i64`); users know YAML types.
fn friendly_expected(exp: &dyn de::Expected) -> String {
    let text = exp.to_string();
    match text.as_str() {
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" => {
            "an integer".to_string()
        }
        "f32" | "f64" => "a number".to_string(),
        _ => text,
    }
}

/// A key that the target struct does not declare.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownField {
    pub key: String,
    pub span: Span,
    pub expected: &'static [&'static str],
}

/// Shared state of one deserialization.
#[derive(Debug, Default)]
pub struct DeContext {
    unknown: RefCell<Vec<UnknownField>>,
}

impl DeContext {
    pub fn new() -> Self {
        DeContext::default()
    }

    /// Unknown fields seen so far, in source order.
    pub fn take_unknown(&self) -> Vec<UnknownField> {
        let mut v = self.unknown.take();
        v.sort_by_key(|u| u.span.start.offset);
        v
    }
}

/// Deserializes `T` from `node`.
pub fn from_node<'de, T: de::Deserialize<'de>>(
    node: &'de Node,
    ctx: &'de DeContext,
) -> Result<T, DeError> {
    T::deserialize(NodeDe { node, ctx })
}

/// The deserializer for one node.
#[derive(Clone, Copy)]
pub struct NodeDe<'a> {
    node: &'a Node,
    ctx: &'a DeContext,
}

/// A plain scalar typed by the YAML core schema.
enum Typed<'a> {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(&'a str),
}

fn type_scalar(s: &Scalar) -> Typed<'_> {
    let text = s.text.as_str();
    match s.tag.as_deref() {
        Some("str") => return Typed::Str(text),
        Some("null") => return Typed::Null,
        _ => {}
    }
    if !s.plain {
        return Typed::Str(text);
    }
    if is_null_text(text) {
        return Typed::Null;
    }
    if let Some(b) = parse_bool(text) {
        return Typed::Bool(b);
    }
    if let Some(i) = parse_int(text) {
        return Typed::Int(i);
    }
    if let Some(f) = parse_float(text) {
        return Typed::Float(f);
    }
    Typed::Str(text)
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// YAML 1.1 booleans, accepted only where a bool is expected (go-yaml v2 compatibility).
fn parse_bool_lenient(text: &str) -> Option<bool> {
    parse_bool(text).or(match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    })
}

fn parse_int(text: &str) -> Option<i128> {
    let (neg, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let value = if let Some(hex) = digits.strip_prefix("0x") {
        i128::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i128::from_str_radix(oct, 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse::<i128>().ok()?
    } else {
        return None;
    };
    Some(if neg { -value } else { value })
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    let looks_numeric = text.bytes().any(|b| b.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if looks_numeric {
        text.parse::<f64>().ok()
    } else {
        None
    }
}

impl<'a> NodeDe<'a> {
    fn unexpected(&self) -> Unexpected<'a> {
        match &self.node.value {
            NodeValue::Seq(_) => Unexpected::Seq,
            NodeValue::Map(_) => Unexpected::Map,
            NodeValue::Scalar(s) => match type_scalar(s) {
                Typed::Null => Unexpected::Unit,
                Typed::Bool(b) => Unexpected::Bool(b),
                Typed::Int(i) => match i64::try_from(i) {
                    Ok(i) => Unexpected::Signed(i),
                    Err(_) => Unexpected::Other("a very large integer"),
                },
                Typed::Float(f) => Unexpected::Float(f),
                Typed::Str(s) => Unexpected::Str(s),
            },
        }
    }

    fn invalid_type<V: Visitor<'a>>(&self, visitor: &V) -> DeError {
        <DeError as de::Error>::invalid_type(self.unexpected(), visitor).at(self.node.span)
    }

    fn visit_int<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let NodeValue::Scalar(s) = &self.node.value else {
            return Err(self.invalid_type(&visitor));
        };
        // A quoted number is accepted where an integer is expected, as Kubernetes' JSON decoding of
        // IntOrString-free int fields would not; this keeps hand-written manifests loading.
        let parsed = match type_scalar(s) {
            Typed::Int(i) => Some(i),
            Typed::Str(t) if s.tag.is_none() => parse_int(t.trim()),
            _ => None,
        };
        let result = match parsed {
            Some(i) if i >= 0 && u64::try_from(i).is_ok() => visitor.visit_u64(i as u64),
            Some(i) if i64::try_from(i).is_ok() => visitor.visit_i64(i as i64),
            _ => Err(self.invalid_type(&visitor)),
        };
        result.map_err(|e| e.at(self.node.span))
    }
}

macro_rules! forward_int {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.visit_int(visitor)
        })*
    };
}

impl<'a> Deserializer<'a> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let span = self.node.span;
        let result = match &self.node.value {
            NodeValue::Scalar(s) => match type_scalar(s) {
                Typed::Null => visitor.visit_unit(),
                Typed::Bool(b) => visitor.visit_bool(b),
                Typed::Int(i) => match (u64::try_from(i), i64::try_from(i)) {
                    (Ok(u), _) => visitor.visit_u64(u),
                    (_, Ok(i)) => visitor.visit_i64(i),
                    _ => visitor.visit_str(&s.text),
                },
                // JSON has no NaN/infinity: keep those as text so values survive a JSON round trip.
                Typed::Float(f) if !f.is_finite() => visitor.visit_str(&s.text),
                Typed::Float(f) => visitor.visit_f64(f),
                Typed::Str(_) => visitor.visit_borrowed_str(&s.text),
            },
            NodeValue::Seq(items) => visitor.visit_seq(NodeSeq {
                items: items.iter(),
                ctx: self.ctx,
                index: 0,
            }),
            NodeValue::Map(entries) => visitor.visit_map(NodeMap::new(entries, None, self.ctx)),
        };
        result.map_err(|e| e.at(span))
    }

    fn deserialize_bool<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            NodeValue::Scalar(s) if s.plain || s.tag.as_deref() == Some("bool") => {
                match parse_bool_lenient(&s.text) {
                    Some(b) => visitor
                        .visit_bool(b)
                        .map_err(|e: DeError| e.at(self.node.span)),
                    None => Err(self.invalid_type(&visitor)),
                }
            }
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    forward_int!(deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128);

    fn deserialize_f32<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            NodeValue::Scalar(s) => match type_scalar(s) {
                Typed::Float(f) => visitor.visit_f64(f),
                Typed::Int(i) => visitor.visit_f64(i as f64),
                _ => Err(self.invalid_type(&visitor)),
            },
            _ => Err(self.invalid_type(&visitor)),
        }
        .map_err(|e| e.at(self.node.span))
    }

    fn deserialize_char<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            // Any scalar reads as its text where a string is expected (`port: 80` for a string port).
            NodeValue::Scalar(s) => visitor
                .visit_borrowed_str(&s.text)
                .map_err(|e: DeError| e.at(self.node.span)),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_unit()
        } else {
            Err(self.invalid_type(&visitor))
        }
    }

    fn deserialize_unit_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            NodeValue::Seq(items) => visitor.visit_seq(NodeSeq {
                items: items.iter(),
                ctx: self.ctx,
                index: 0,
            }),
            // Kubernetes treats an explicit null like an absent list.
            _ if self.node.is_null() => visitor.visit_seq(NodeSeq {
                items: [].iter(),
                ctx: self.ctx,
                index: 0,
            }),
            _ => Err(self.invalid_type(&visitor)),
        }
        .map_err(|e| e.at(self.node.span))
    }

    fn deserialize_tuple<V: Visitor<'a>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            NodeValue::Map(entries) => visitor.visit_map(NodeMap::new(entries, None, self.ctx)),
            _ if self.node.is_null() => visitor.visit_map(NodeMap::new(&[], None, self.ctx)),
            _ => Err(self.invalid_type(&visitor)),
        }
        .map_err(|e| e.at(self.node.span))
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            NodeValue::Map(entries) => {
                visitor.visit_map(NodeMap::new(entries, Some(fields), self.ctx))
            }
            _ if self.node.is_null() => {
                visitor.visit_map(NodeMap::new(&[], Some(fields), self.ctx))
            }
            _ => Err(self.invalid_type(&visitor)),
        }
        .map_err(|e| e.at(self.node.span))
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            NodeValue::Scalar(s) => {
                let unit = de::value::BorrowedStrDeserializer::<DeError>::new(s.text.as_str());
                visitor.visit_enum(unit).map_err(|e| e.at(self.node.span))
            }
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_identifier<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct NodeSeq<'a> {
    items: std::slice::Iter<'a, Node>,
    ctx: &'a DeContext,
    index: usize,
}

impl<'a> SeqAccess<'a> for NodeSeq<'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(node) = self.items.next() else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        seed.deserialize(NodeDe {
            node,
            ctx: self.ctx,
        })
        .map(Some)
        .map_err(|e| e.at(node.span).under(PathSeg::Index(index)))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct NodeMap<'a> {
    entries: std::slice::Iter<'a, Entry>,
    /// The struct's field names; `None` for maps, where every key is wanted.
    fields: Option<&'static [&'static str]>,
    ctx: &'a DeContext,
    current: Option<&'a Entry>,
}

impl<'a> NodeMap<'a> {
    fn new(
        entries: &'a [Entry],
        fields: Option<&'static [&'static str]>,
        ctx: &'a DeContext,
    ) -> Self {
        NodeMap {
            entries: entries.iter(),
            fields,
            ctx,
            current: None,
        }
    }
}

impl<'a> MapAccess<'a> for NodeMap<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        for entry in self.entries.by_ref() {
            let NodeValue::Scalar(key) = &entry.key.value else {
                return Err(DeError::new(
                    DeErrorKind::BadValue,
                    "mapping keys must be scalars".to_string(),
                )
                .at(entry.key.span));
            };
            if let Some(fields) = self.fields
                && !fields.contains(&key.text.as_str())
            {
                self.ctx.unknown.borrow_mut().push(UnknownField {
                    key: key.text.clone(),
                    span: entry.key.span,
                    expected: fields,
                });
                continue;
            }
            self.current = Some(entry);
            return seed
                .deserialize(NodeDe {
                    node: &entry.key,
                    ctx: self.ctx,
                })
                .map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some(entry) = self.current.take() else {
            return Err(DeError::new(
                DeErrorKind::BadValue,
                "value without key".to_string(),
            ));
        };
        let key = entry.key.as_scalar().unwrap_or_default().to_string();
        seed.deserialize(NodeDe {
            node: &entry.value,
            ctx: self.ctx,
        })
        .map_err(|e| e.at(entry.value.span).under(PathSeg::Key(key)))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::model::{IntOrString, LabelSelector, NetworkPolicyPort};
    use crate::frontend::tree;

    fn root(text: &str) -> Node {
        tree::parse(text).documents.remove(0).root.unwrap()
    }

    #[test]
    fn int_or_string_follows_yaml_typing() {
        let n = root("port: 80\nprotocol: TCP\n");
        let ctx = DeContext::new();
        let p: NetworkPolicyPort = from_node(&n, &ctx).unwrap();
        assert_eq!(p.port, Some(IntOrString::Int(80)));
        let n = root("port: \"80\"\n");
        let p: NetworkPolicyPort = from_node(&n, &ctx).unwrap();
        assert_eq!(p.port, Some(IntOrString::String("80".into())));
    }

    #[test]
    fn errors_carry_the_innermost_span_and_path() {
        let n = root("matchExpressions:\n- key: a\n  operator: Inn\n");
        let ctx = DeContext::new();
        let err = from_node::<LabelSelector>(&n, &ctx).unwrap_err();
        assert_eq!(err.path().to_string(), "matchExpressions[0].operator");
        assert_eq!(err.span.unwrap().start.line, 3);
        assert_eq!(err.span.unwrap().start.column, 13);
        assert!(err.message.contains("`Inn`"), "{}", err.message);
    }

    #[test]
    fn unknown_fields_are_collected_not_fatal() {
        let n = root("matchLabels: {a: b}\nmatchLabel: {c: d}\n");
        let ctx = DeContext::new();
        let sel: LabelSelector = from_node(&n, &ctx).unwrap();
        assert_eq!(sel.match_labels.unwrap().len(), 1);
        let unknown = ctx.take_unknown();
        assert_eq!(unknown.len(), 1);
        assert_eq!(unknown[0].key, "matchLabel");
        assert_eq!(unknown[0].span.start.line, 2);
    }

    #[test]
    fn missing_fields_point_at_the_mapping() {
        let n = root("matchExpressions:\n- key: a\n");
        let ctx = DeContext::new();
        let err = from_node::<LabelSelector>(&n, &ctx).unwrap_err();
        assert_eq!(err.kind, DeErrorKind::MissingField);
        assert_eq!(err.path().to_string(), "matchExpressions[0]");
        assert_eq!(err.span.unwrap().start.line, 2);
    }
}
