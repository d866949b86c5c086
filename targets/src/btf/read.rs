//! A small BTF reader: enough to read back map definitions from `.maps` and to check what the
//! encoder wrote, independently of aya-obj and libbpf.
//!
//! In: `.BTF` section bytes (little endian). Out: [`ParsedBtf`] with every type's kind, name and
//! raw words, type sizes, and [`MapDefinition`]s read from the `.maps` DATASEC the way libbpf does.

use super::{Kind, TypeId};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfReadError {
    #[error("BTF: {0}")]
    Malformed(String),
    #[error("BTF: unsupported kind {kind} for type {id}")]
    UnsupportedKind { id: TypeId, kind: u32 },
    #[error("BTF map `{map}`: {reason}")]
    BadMap { map: String, reason: String },
}

/// One type record as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedType {
    pub kind: u32,
    pub name: String,
    pub vlen: u16,
    pub kind_flag: bool,
    /// `size` or `type`, depending on the kind.
    pub size_or_type: u32,
    /// The kind-specific words after the common header.
    pub data: Vec<u32>,
}

/// A whole `.BTF` blob.
#[derive(Clone, Debug)]
pub struct ParsedBtf {
    types: Vec<ParsedType>,
    strings: Vec<u8>,
}

/// A map definition read from `.maps`, with libbpf's member conventions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapDefinition {
    pub name: String,
    /// Offset of the map's VAR in the `.maps` section (matches its ELF symbol's value).
    pub offset: u32,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub pinning: u32,
    /// BTF ids of the key and value types when given with `__type`.
    pub key_type: Option<TypeId>,
    pub value_type: Option<TypeId>,
}

fn words_after(kind: u32, vlen: u16) -> Option<usize> {
    let vlen = usize::from(vlen);
    Some(match kind {
        1 | 14 | 17 => 1,
        3 => 3,
        4 | 5 | 15 | 19 => 3 * vlen,
        6 | 13 => 2 * vlen,
        2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
        _ => return None,
    })
}

impl ParsedBtf {
    pub fn parse(bytes: &[u8]) -> Result<ParsedBtf, BtfReadError> {
        let bad = |m: &str| BtfReadError::Malformed(m.to_owned());
        let word = |at: usize| -> Result<u32, BtfReadError> {
            let b = bytes.get(at..at + 4).ok_or_else(|| bad("truncated"))?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if bytes.len() < 24 || bytes[0..2] != [0x9f, 0xeb] {
            return Err(bad("no little-endian BTF header"));
        }
        let hdr_len = word(4)? as usize;
        let (type_off, type_len, str_off, str_len) = (
            word(8)? as usize,
            word(12)? as usize,
            word(16)? as usize,
            word(20)? as usize,
        );
        let types_start = hdr_len
            .checked_add(type_off)
            .ok_or_else(|| bad("type offset"))?;
        let types_end = types_start
            .checked_add(type_len)
            .ok_or_else(|| bad("type length"))?;
        let str_start = hdr_len
            .checked_add(str_off)
            .ok_or_else(|| bad("string offset"))?;
        let strings = bytes
            .get(str_start..str_start.saturating_add(str_len))
            .ok_or_else(|| bad("string section out of bounds"))?
            .to_vec();
        if types_end > bytes.len() {
            return Err(bad("type section out of bounds"));
        }
        let mut btf = ParsedBtf {
            types: Vec::new(),
            strings,
        };
        let mut at = types_start;
        while at < types_end {
            let name_off = word(at)?;
            let info = word(at + 4)?;
            let size_or_type = word(at + 8)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as u16;
            let id = btf.types.len() as TypeId + 1;
            let n = words_after(kind, vlen).ok_or(BtfReadError::UnsupportedKind { id, kind })?;
            let data = (0..n)
                .map(|i| word(at + 12 + 4 * i))
                .collect::<Result<Vec<_>, _>>()?;
            let name = btf
                .string(name_off)
                .ok_or_else(|| bad("name offset out of the string section"))?
                .to_owned();
            btf.types.push(ParsedType {
                kind,
                name,
                vlen,
                kind_flag: info >> 31 == 1,
                size_or_type,
                data,
            });
            at += 12 + 4 * n;
        }
        Ok(btf)
    }

    pub fn string(&self, offset: u32) -> Option<&str> {
        let rest = self.strings.get(offset as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    }

    /// Number of types (the highest id).
    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    pub fn get(&self, id: TypeId) -> Option<&ParsedType> {
        self.types.get((id as usize).checked_sub(1)?)
    }

    /// Ids and types, in id order.
    pub fn types(&self) -> impl Iterator<Item = (TypeId, &ParsedType)> {
        self.types
            .iter()
            .enumerate()
            .map(|(i, t)| (i as TypeId + 1, t))
    }

    /// Follows typedefs and modifiers.
    pub fn skip_modifiers(&self, mut id: TypeId) -> Option<TypeId> {
        for _ in 0..=self.types.len() {
            let t = self.get(id)?;
            if [Kind::Typedef, Kind::Volatile, Kind::Const, Kind::Restrict]
                .iter()
                .any(|k| *k as u32 == t.kind)
                || t.kind == 18
            {
                id = t.size_or_type;
            } else {
                return Some(id);
            }
        }
        None
    }

    /// Size in bytes of a value of type `id` (arrays multiply through every dimension).
    pub fn size_of(&self, id: TypeId) -> Option<u32> {
        let id = self.skip_modifiers(id)?;
        let t = self.get(id)?;
        match t.kind {
            k if k == Kind::Int as u32 || k == Kind::Struct as u32 || k == Kind::Union as u32 => {
                Some(t.size_or_type)
            }
            k if k == Kind::Enum as u32
                || k == Kind::Float as u32
                || k == Kind::DataSec as u32
                || k == 19 =>
            {
                Some(t.size_or_type)
            }
            k if k == Kind::Ptr as u32 => Some(8),
            k if k == Kind::Array as u32 => {
                self.size_of(*t.data.first()?)?.checked_mul(*t.data.get(2)?)
            }
            k if k == Kind::Var as u32 => self.size_of(t.size_or_type),
            _ => None,
        }
    }

    /// Map definitions from the `.maps` DATASEC (empty when there is none).
    pub fn map_definitions(&self) -> Result<Vec<MapDefinition>, BtfReadError> {
        let Some((_, sec)) = self
            .types()
            .find(|(_, t)| t.kind == Kind::DataSec as u32 && t.name == ".maps")
        else {
            return Ok(Vec::new());
        };
        let mut maps = Vec::new();
        for entry in sec.data.chunks(3) {
            let (var_id, offset) = (entry[0], entry[1]);
            let var = self.get(var_id).filter(|v| v.kind == Kind::Var as u32);
            let var = var.ok_or_else(|| {
                BtfReadError::Malformed(format!(".maps entry {var_id} is not a VAR"))
            })?;
            let bad = |reason: &str| BtfReadError::BadMap {
                map: var.name.clone(),
                reason: reason.to_owned(),
            };
            let def_id = self
                .skip_modifiers(var.size_or_type)
                .ok_or_else(|| bad("unresolvable type"))?;
            let def = self
                .get(def_id)
                .filter(|d| d.kind == Kind::Struct as u32)
                .ok_or_else(|| bad("not a struct"))?;
            let mut map = MapDefinition {
                name: var.name.clone(),
                offset,
                ..Default::default()
            };
            for member in def.data.chunks(3) {
                let name = self.string(member[0]).unwrap_or_default();
                let ptr = self
                    .get(member[1])
                    .filter(|p| p.kind == Kind::Ptr as u32)
                    .ok_or_else(|| bad("member is not a pointer"))?;
                let target = ptr.size_or_type;
                let uint = || -> Result<u32, BtfReadError> {
                    let arr = self
                        .get(target)
                        .filter(|a| a.kind == Kind::Array as u32)
                        .ok_or_else(|| bad("__uint member is not a pointer to an array"))?;
                    arr.data.get(2).copied().ok_or_else(|| bad("short array"))
                };
                let sized = || {
                    self.size_of(target)
                        .ok_or_else(|| bad("key or value type has no size"))
                };
                match name {
                    "type" => map.map_type = uint()?,
                    "max_entries" => map.max_entries = uint()?,
                    "map_flags" => map.map_flags = uint()?,
                    "pinning" => map.pinning = uint()?,
                    "key_size" => map.key_size = uint()?,
                    "value_size" => map.value_size = uint()?,
                    "key" => {
                        map.key_size = sized()?;
                        map.key_type = Some(target);
                    }
                    "value" => {
                        map.value_size = sized()?;
                        map.value_type = Some(target);
                    }
                    other => return Err(bad(&format!("unknown member `{other}`"))),
                }
            }
            maps.push(map);
        }
        Ok(maps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btf::{Btf, IntEncoding, Member};

    #[test]
    fn reads_back_encoded_types() {
        let mut b = Btf::new();
        let int = b.add_int("int", 4, IntEncoding::Signed);
        let inner = b.add_array(int, int, 3);
        let outer = b.add_array(inner, int, 2);
        let st = b.add_struct(
            "s",
            24,
            &[Member {
                name: "a".into(),
                ty: outer,
                bit_offset: 0,
            }],
        );
        let td = b.add_typedef("s_t", st);
        let parsed = ParsedBtf::parse(&b.to_bytes()).unwrap();
        assert_eq!(parsed.len(), 5);
        assert_eq!(parsed.size_of(outer), Some(24));
        assert_eq!(parsed.size_of(td), Some(24));
        assert_eq!(parsed.get(st).unwrap().name, "s");
        assert_eq!(parsed.get(td).unwrap().kind, Kind::Typedef as u32);
    }

    #[test]
    fn rejects_truncated_input() {
        let mut b = Btf::new();
        b.add_int("int", 4, IntEncoding::Signed);
        let bytes = b.to_bytes();
        assert!(ParsedBtf::parse(&bytes[..bytes.len() - 8]).is_err());
        assert!(ParsedBtf::parse(&bytes[..10]).is_err());
    }
}
