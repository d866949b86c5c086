//! Our own BTF encoder (aya-obj cannot build structs, arrays or typedefs).
//!
//! In: types added one by one through [`Btf`]'s `add_*` methods, each returning its [`TypeId`]
//! (ids start at 1; 0 is `void`). Names go into a deduplicated string table.
//! Out: the `.BTF` section bytes from [`Btf::to_bytes`] (little endian, header + types + strings),
//! and from [`ext::BtfExt`] the `.BTF.ext` section with `func_info` and `line_info` records.
//! [`read::ParsedBtf`] reads BTF back (types, sizes, `.maps` definitions).
//!
//! Output is a pure function of the sequence of calls: the same calls give the same bytes.

pub mod ext;
pub mod ext_read;
pub mod read;

use std::collections::HashMap;

/// A BTF type id. 0 is `void`.
pub type TypeId = u32;

/// The `void` type (also "no type").
pub const VOID: TypeId = 0;

const BTF_MAGIC: u16 = 0xeb9f;
const BTF_VERSION: u8 = 1;
const HEADER_LEN: u32 = 24;

/// BTF kinds as numbered in `include/uapi/linux/btf.h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    Int = 1,
    Ptr = 2,
    Array = 3,
    Struct = 4,
    Union = 5,
    Enum = 6,
    Fwd = 7,
    Typedef = 8,
    Volatile = 9,
    Const = 10,
    Restrict = 11,
    Func = 12,
    FuncProto = 13,
    Var = 14,
    DataSec = 15,
    Float = 16,
}

/// Integer encoding bits of a BTF INT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntEncoding {
    Unsigned,
    Signed,
    Char,
    Bool,
}

impl IntEncoding {
    fn bits(self) -> u32 {
        match self {
            IntEncoding::Unsigned => 0,
            IntEncoding::Signed => 1,
            IntEncoding::Char => 2,
            IntEncoding::Bool => 4,
        }
    }
}

/// Linkage of a FUNC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FuncLinkage {
    Static = 0,
    Global = 1,
    Extern = 2,
}

/// Linkage of a VAR. Maps in `.maps` must be `GlobalAllocated`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VarLinkage {
    Static = 0,
    GlobalAllocated = 1,
    GlobalExtern = 2,
}

/// A member of a STRUCT or UNION.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub ty: TypeId,
    /// Offset from the start of the aggregate, in bits.
    pub bit_offset: u32,
}

/// One variable placed in a DATASEC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VarSecInfo {
    pub var: TypeId,
    pub offset: u32,
    pub size: u32,
}

/// One encoded type, in the shape of its wire record.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Type {
    Int {
        name: u32,
        size: u32,
        encoding: IntEncoding,
        bits: u32,
    },
    Ptr {
        target: TypeId,
    },
    Array {
        elem: TypeId,
        index: TypeId,
        nelems: u32,
    },
    Aggregate {
        kind: Kind,
        name: u32,
        size: u32,
        members: Vec<(u32, TypeId, u32)>,
    },
    Enum {
        name: u32,
        size: u32,
        signed: bool,
        values: Vec<(u32, i32)>,
    },
    Fwd {
        name: u32,
        is_union: bool,
    },
    Modifier {
        kind: Kind,
        name: u32,
        target: TypeId,
    },
    Func {
        name: u32,
        proto: TypeId,
        linkage: FuncLinkage,
    },
    FuncProto {
        ret: TypeId,
        params: Vec<(u32, TypeId)>,
    },
    Var {
        name: u32,
        ty: TypeId,
        linkage: VarLinkage,
    },
    DataSec {
        name: u32,
        size: u32,
        entries: Vec<VarSecInfo>,
    },
    Float {
        name: u32,
        size: u32,
    },
}

/// A BTF blob under construction.
#[derive(Clone, Debug, Default)]
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    string_offsets: HashMap<String, u32, foldhash::fast::FixedState>,
}

impl Btf {
    pub fn new() -> Self {
        let mut btf = Btf {
            types: Vec::new(),
            strings: Vec::new(),
            string_offsets: HashMap::default(),
        };
        btf.strings.push(0);
        btf.string_offsets.insert(String::new(), 0);
        btf
    }

    /// Interns `s` in the string table and returns its offset; equal strings share one entry.
    pub fn add_string(&mut self, s: &str) -> u32 {
        if let Some(&off) = self.string_offsets.get(s) {
            return off;
        }
        // Offsets fit in u32 as long as the string section stays below 4 GiB, which the kernel
        // limits far earlier (BTF_MAX_SIZE is 16 MiB).
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        self.string_offsets.insert(s.to_owned(), off);
        off
    }

    /// The string at `offset` in the string table, if any.
    pub fn string_at(&self, offset: u32) -> Option<&str> {
        let rest = self.strings.get(offset as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    }

    /// Number of types added (the highest type id).
    pub fn type_count(&self) -> u32 {
        self.types.len() as u32
    }

    fn push(&mut self, ty: Type) -> TypeId {
        self.types.push(ty);
        self.types.len() as TypeId
    }

    /// An integer of `size` bytes (1, 2, 4, 8 or 16) using all its bits.
    pub fn add_int(&mut self, name: &str, size: u32, encoding: IntEncoding) -> TypeId {
        let name = self.add_string(name);
        self.push(Type::Int {
            name,
            size,
            encoding,
            bits: size * 8,
        })
    }

    pub fn add_float(&mut self, name: &str, size: u32) -> TypeId {
        let name = self.add_string(name);
        self.push(Type::Float { name, size })
    }

    pub fn add_ptr(&mut self, target: TypeId) -> TypeId {
        self.push(Type::Ptr { target })
    }

    /// `elem[nelems]`; `index` is the index type (an int), as C compilers emit.
    pub fn add_array(&mut self, elem: TypeId, index: TypeId, nelems: u32) -> TypeId {
        self.push(Type::Array {
            elem,
            index,
            nelems,
        })
    }

    pub fn add_struct(&mut self, name: &str, size: u32, members: &[Member]) -> TypeId {
        self.add_aggregate(Kind::Struct, name, size, members)
    }

    pub fn add_union(&mut self, name: &str, size: u32, members: &[Member]) -> TypeId {
        self.add_aggregate(Kind::Union, name, size, members)
    }

    fn add_aggregate(&mut self, kind: Kind, name: &str, size: u32, members: &[Member]) -> TypeId {
        let name = self.add_string(name);
        let members = members
            .iter()
            .map(|m| (self.add_string(&m.name), m.ty, m.bit_offset))
            .collect();
        self.push(Type::Aggregate {
            kind,
            name,
            size,
            members,
        })
    }

    /// An enum of `size` bytes with `(name, value)` enumerators.
    pub fn add_enum(
        &mut self,
        name: &str,
        size: u32,
        signed: bool,
        values: &[(&str, i32)],
    ) -> TypeId {
        let name = self.add_string(name);
        let values = values
            .iter()
            .map(|(n, v)| (self.add_string(n), *v))
            .collect();
        self.push(Type::Enum {
            name,
            size,
            signed,
            values,
        })
    }

    pub fn add_fwd(&mut self, name: &str, is_union: bool) -> TypeId {
        let name = self.add_string(name);
        self.push(Type::Fwd { name, is_union })
    }

    pub fn add_typedef(&mut self, name: &str, target: TypeId) -> TypeId {
        let name = self.add_string(name);
        self.push(Type::Modifier {
            kind: Kind::Typedef,
            name,
            target,
        })
    }

    pub fn add_const(&mut self, target: TypeId) -> TypeId {
        self.push(Type::Modifier {
            kind: Kind::Const,
            name: 0,
            target,
        })
    }

    pub fn add_volatile(&mut self, target: TypeId) -> TypeId {
        self.push(Type::Modifier {
            kind: Kind::Volatile,
            name: 0,
            target,
        })
    }

    /// A function prototype; parameters are `(name, type)`, names may be empty.
    pub fn add_func_proto(&mut self, ret: TypeId, params: &[(&str, TypeId)]) -> TypeId {
        let params = params
            .iter()
            .map(|(n, t)| (self.add_string(n), *t))
            .collect();
        self.push(Type::FuncProto { ret, params })
    }

    pub fn add_func(&mut self, name: &str, proto: TypeId, linkage: FuncLinkage) -> TypeId {
        let name = self.add_string(name);
        self.push(Type::Func {
            name,
            proto,
            linkage,
        })
    }

    pub fn add_var(&mut self, name: &str, ty: TypeId, linkage: VarLinkage) -> TypeId {
        let name = self.add_string(name);
        self.push(Type::Var { name, ty, linkage })
    }

    pub fn add_datasec(&mut self, name: &str, size: u32, entries: &[VarSecInfo]) -> TypeId {
        let name = self.add_string(name);
        self.push(Type::DataSec {
            name,
            size,
            entries: entries.to_vec(),
        })
    }

    /// The size in bytes of a value of type `id`, following typedefs and modifiers, or `None`
    /// for types without a size (void, functions, forward declarations) or an unknown id.
    pub fn type_size(&self, id: TypeId) -> Option<u32> {
        let mut id = id;
        // A chain of modifiers longer than the number of types is a cycle.
        for _ in 0..=self.types.len() {
            let ty = self.types.get((id as usize).checked_sub(1)?)?;
            return match ty {
                Type::Int { size, .. }
                | Type::Aggregate { size, .. }
                | Type::Enum { size, .. }
                | Type::DataSec { size, .. }
                | Type::Float { size, .. } => Some(*size),
                Type::Ptr { .. } => Some(8),
                Type::Array { elem, nelems, .. } => self.type_size(*elem)?.checked_mul(*nelems),
                Type::Modifier { target, .. } | Type::Var { ty: target, .. } => {
                    id = *target;
                    continue;
                }
                Type::Fwd { .. } | Type::Func { .. } | Type::FuncProto { .. } => None,
            };
        }
        None
    }

    /// The wire encoding: header, type section, string section.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut types = Vec::new();
        for ty in &self.types {
            encode_type(ty, &mut types);
        }
        let mut out = Vec::with_capacity(HEADER_LEN as usize + types.len() + self.strings.len());
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.push(BTF_VERSION);
        out.push(0);
        out.extend_from_slice(&HEADER_LEN.to_le_bytes());
        let type_len = types.len() as u32;
        for field in [0, type_len, type_len, self.strings.len() as u32] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(&self.strings);
        out
    }
}

fn info(kind: Kind, vlen: usize, kind_flag: bool) -> u32 {
    (vlen as u32 & 0xffff) | ((kind as u32) << 24) | (u32::from(kind_flag) << 31)
}

fn put(out: &mut Vec<u8>, words: &[u32]) {
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

fn encode_type(ty: &Type, out: &mut Vec<u8>) {
    match ty {
        Type::Int {
            name,
            size,
            encoding,
            bits,
        } => {
            put(
                out,
                &[
                    *name,
                    info(Kind::Int, 0, false),
                    *size,
                    (encoding.bits() << 24) | bits,
                ],
            );
        }
        Type::Ptr { target } => put(out, &[0, info(Kind::Ptr, 0, false), *target]),
        Type::Array {
            elem,
            index,
            nelems,
        } => {
            put(
                out,
                &[0, info(Kind::Array, 0, false), 0, *elem, *index, *nelems],
            );
        }
        Type::Aggregate {
            kind,
            name,
            size,
            members,
        } => {
            put(out, &[*name, info(*kind, members.len(), false), *size]);
            for (n, t, off) in members {
                put(out, &[*n, *t, *off]);
            }
        }
        Type::Enum {
            name,
            size,
            signed,
            values,
        } => {
            put(
                out,
                &[*name, info(Kind::Enum, values.len(), *signed), *size],
            );
            for (n, v) in values {
                put(out, &[*n, *v as u32]);
            }
        }
        Type::Fwd { name, is_union } => put(out, &[*name, info(Kind::Fwd, 0, *is_union), 0]),
        Type::Modifier { kind, name, target } => put(out, &[*name, info(*kind, 0, false), *target]),
        Type::Func {
            name,
            proto,
            linkage,
        } => {
            put(
                out,
                &[*name, info(Kind::Func, *linkage as usize, false), *proto],
            );
        }
        Type::FuncProto { ret, params } => {
            put(out, &[0, info(Kind::FuncProto, params.len(), false), *ret]);
            for (n, t) in params {
                put(out, &[*n, *t]);
            }
        }
        Type::Var { name, ty, linkage } => {
            put(
                out,
                &[*name, info(Kind::Var, 0, false), *ty, *linkage as u32],
            );
        }
        Type::DataSec {
            name,
            size,
            entries,
        } => {
            put(
                out,
                &[*name, info(Kind::DataSec, entries.len(), false), *size],
            );
            for e in entries {
                put(out, &[e.var, e.offset, e.size]);
            }
        }
        Type::Float { name, size } => put(out, &[*name, info(Kind::Float, 0, false), *size]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_deduplicated() {
        let mut btf = Btf::new();
        let a = btf.add_string("key");
        let b = btf.add_string("value");
        assert_eq!(btf.add_string("key"), a);
        assert_ne!(a, b);
        assert_eq!(btf.add_string(""), 0);
        assert_eq!(btf.string_at(b), Some("value"));
    }

    #[test]
    fn header_and_int_encoding() {
        let mut btf = Btf::new();
        let id = btf.add_int("int", 4, IntEncoding::Signed);
        assert_eq!(id, 1);
        let bytes = btf.to_bytes();
        assert_eq!(&bytes[0..4], &[0x9f, 0xeb, 1, 0]);
        let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
        assert_eq!(word(4), 24);
        assert_eq!(word(12), 16, "one INT is 16 bytes");
        assert_eq!(word(16), 16, "strings follow the types");
        assert_eq!(word(24 + 4), 1 << 24);
        assert_eq!(word(24 + 12), (1 << 24) | 32);
        assert_eq!(&bytes[24 + 16..], b"\0int\0");
    }

    #[test]
    fn sizes_follow_modifiers_and_arrays() {
        let mut btf = Btf::new();
        let u32_t = btf.add_int("unsigned int", 4, IntEncoding::Unsigned);
        let arr = btf.add_array(u32_t, u32_t, 6);
        let td = btf.add_typedef("six", arr);
        let c = btf.add_const(td);
        assert_eq!(btf.type_size(c), Some(24));
        assert_eq!(btf.type_size(VOID), None);
        let p = btf.add_ptr(c);
        assert_eq!(btf.type_size(p), Some(8));
    }
}
