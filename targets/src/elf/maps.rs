//! Map definitions and the C-like types that describe map keys and values, and their lowering to
//! BTF (`.maps` STRUCTs in libbpf's `__uint`/`__type` convention).
//!
//! In: [`MapDef`]s with [`TypeDesc`] keys/values. Out: BTF types in a [`Btf`], and the map's byte
//! sizes ([`MapDef::key_size`], [`MapDef::value_size`]) that a manifest or loader needs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::btf::{Btf, IntEncoding, Member, TypeId, VarLinkage, VarSecInfo};

/// `BPF_F_NO_PREALLOC`, required by the kernel for LPM tries.
pub const BPF_F_NO_PREALLOC: u32 = 1;
/// `BPF_F_MMAPABLE`: an array whose values user space may `mmap` (read without a syscall).
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Kernel map types (`enum bpf_map_type`) that ciliumc emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MapType {
    Hash,
    Array,
    ProgArray,
    PercpuHash,
    PercpuArray,
    LruHash,
    LruPercpuHash,
    LpmTrie,
    RingBuf,
}

impl MapType {
    /// Every map type ciliumc emits.
    pub const ALL: [MapType; 9] = [
        MapType::Hash,
        MapType::Array,
        MapType::ProgArray,
        MapType::PercpuHash,
        MapType::PercpuArray,
        MapType::LruHash,
        MapType::LruPercpuHash,
        MapType::LpmTrie,
        MapType::RingBuf,
    ];

    /// The map type with `enum bpf_map_type` value `id`, if ciliumc knows it.
    pub fn from_id(id: u32) -> Option<MapType> {
        MapType::ALL.into_iter().find(|t| t.id() == id)
    }

    /// The `enum bpf_map_type` value.
    pub fn id(self) -> u32 {
        match self {
            MapType::Hash => 1,
            MapType::Array => 2,
            MapType::ProgArray => 3,
            MapType::PercpuHash => 5,
            MapType::PercpuArray => 6,
            MapType::LruHash => 9,
            MapType::LruPercpuHash => 10,
            MapType::LpmTrie => 11,
            MapType::RingBuf => 27,
        }
    }

    /// The name libbpf and bpftool use (`bpf_map_type` without the prefix, lower case).
    pub fn name(self) -> &'static str {
        match self {
            MapType::Hash => "hash",
            MapType::Array => "array",
            MapType::ProgArray => "prog_array",
            MapType::PercpuHash => "percpu_hash",
            MapType::PercpuArray => "percpu_array",
            MapType::LruHash => "lru_hash",
            MapType::LruPercpuHash => "lru_percpu_hash",
            MapType::LpmTrie => "lpm_trie",
            MapType::RingBuf => "ringbuf",
        }
    }
}

/// `pinning` as libbpf and aya read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Pinning {
    #[default]
    None = 0,
    /// LIBBPF_PIN_BY_NAME: `<pin root>/<map name>`.
    ByName = 1,
}

/// A C type for a map key or value. Structs are laid out as C does (natural alignment, size
/// rounded up to the largest member alignment), so write fields in an order without padding
/// when the layout must match packet bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TypeDesc {
    U8,
    U16,
    U32,
    U64,
    I32,
    I64,
    /// `unsigned char[n]` (for addresses and opaque blobs).
    Bytes(u32),
    Array {
        elem: Box<TypeDesc>,
        len: u32,
    },
    Struct {
        name: String,
        fields: Vec<FieldDesc>,
    },
}

/// A named struct field.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FieldDesc {
    pub name: String,
    pub ty: TypeDesc,
}

impl TypeDesc {
    /// A named struct from `(field name, type)` pairs.
    pub fn structure<'a>(
        name: &str,
        fields: impl IntoIterator<Item = (&'a str, TypeDesc)>,
    ) -> Self {
        TypeDesc::Struct {
            name: name.to_owned(),
            fields: fields
                .into_iter()
                .map(|(n, ty)| FieldDesc {
                    name: n.to_owned(),
                    ty,
                })
                .collect(),
        }
    }

    pub fn align(&self) -> u32 {
        match self {
            TypeDesc::U8 | TypeDesc::Bytes(_) => 1,
            TypeDesc::U16 => 2,
            TypeDesc::U32 | TypeDesc::I32 => 4,
            TypeDesc::U64 | TypeDesc::I64 => 8,
            TypeDesc::Array { elem, .. } => elem.align(),
            TypeDesc::Struct { fields, .. } => {
                fields.iter().map(|f| f.ty.align()).max().unwrap_or(1)
            }
        }
    }

    /// Size in bytes under C layout rules.
    pub fn size(&self) -> u32 {
        match self {
            TypeDesc::U8 => 1,
            TypeDesc::U16 => 2,
            TypeDesc::U32 | TypeDesc::I32 => 4,
            TypeDesc::U64 | TypeDesc::I64 => 8,
            TypeDesc::Bytes(n) => *n,
            TypeDesc::Array { elem, len } => elem.size().saturating_mul(*len),
            TypeDesc::Struct { fields, .. } => {
                let end = field_offsets(fields)
                    .last()
                    .map_or(0, |(off, f)| off + f.ty.size());
                round_up(end, self.align())
            }
        }
    }
}

fn round_up(v: u32, align: u32) -> u32 {
    v.div_ceil(align.max(1)) * align.max(1)
}

/// Byte offset of each field under C layout.
pub fn field_offsets(fields: &[FieldDesc]) -> Vec<(u32, &FieldDesc)> {
    let mut off = 0u32;
    fields
        .iter()
        .map(|f| {
            let at = round_up(off, f.ty.align());
            off = at + f.ty.size();
            (at, f)
        })
        .collect()
}

/// The innermost non-array element of `elem[len]` and the total element count.
fn flatten_array(elem: &TypeDesc, len: u32) -> (&TypeDesc, u32) {
    match elem {
        TypeDesc::Array {
            elem: inner,
            len: inner_len,
        } => {
            let (innermost, count) = flatten_array(inner, *inner_len);
            (innermost, count.saturating_mul(len))
        }
        TypeDesc::Bytes(n) => (&TypeDesc::U8, n.saturating_mul(len)),
        other => (other, len),
    }
}

/// A map's key or value: a real type (pretty-printed by bpftool) or only a size.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MapSlot {
    Typed(TypeDesc),
    /// Emitted as `key_size`/`value_size`; needed for prog arrays, whose kernel type refuses BTF.
    Size(u32),
}

impl MapSlot {
    pub fn size(&self) -> u32 {
        match self {
            MapSlot::Typed(t) => t.size(),
            MapSlot::Size(n) => *n,
        }
    }
}

/// One map in `.maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDef {
    /// ELF symbol and BTF VAR name (the name libbpf, aya and bpftool show).
    pub name: String,
    pub map_type: MapType,
    /// `None` only for ring buffers.
    pub key: Option<MapSlot>,
    pub value: Option<MapSlot>,
    pub max_entries: u32,
    pub map_flags: u32,
    pub pinning: Pinning,
}

impl MapDef {
    fn new(
        name: &str,
        map_type: MapType,
        key: Option<MapSlot>,
        value: Option<MapSlot>,
        max_entries: u32,
    ) -> Self {
        MapDef {
            name: name.to_owned(),
            map_type,
            key,
            value,
            max_entries,
            map_flags: 0,
            pinning: Pinning::None,
        }
    }

    /// A map with typed key and value (hash, percpu_hash, lru_hash, ...).
    pub fn typed(
        name: &str,
        map_type: MapType,
        key: TypeDesc,
        value: TypeDesc,
        max_entries: u32,
    ) -> Self {
        let flags = if map_type == MapType::LpmTrie {
            BPF_F_NO_PREALLOC
        } else {
            0
        };
        MapDef {
            map_flags: flags,
            ..Self::new(
                name,
                map_type,
                Some(MapSlot::Typed(key)),
                Some(MapSlot::Typed(value)),
                max_entries,
            )
        }
    }

    pub fn hash(name: &str, key: TypeDesc, value: TypeDesc, max_entries: u32) -> Self {
        Self::typed(name, MapType::Hash, key, value, max_entries)
    }

    /// An array indexed by `u32`.
    pub fn array(name: &str, value: TypeDesc, max_entries: u32) -> Self {
        Self::typed(name, MapType::Array, TypeDesc::U32, value, max_entries)
    }

    /// An LPM trie; `key` must be a struct starting with a `u32` prefix length. Sets
    /// `BPF_F_NO_PREALLOC`, which the kernel requires.
    pub fn lpm_trie(name: &str, key: TypeDesc, value: TypeDesc, max_entries: u32) -> Self {
        Self::typed(name, MapType::LpmTrie, key, value, max_entries)
    }

    /// A tail-call table: `u32` keys and program-fd values, given by size.
    pub fn prog_array(name: &str, max_entries: u32) -> Self {
        Self::new(
            name,
            MapType::ProgArray,
            Some(MapSlot::Size(4)),
            Some(MapSlot::Size(4)),
            max_entries,
        )
    }

    /// A ring buffer of `bytes` (a power of two, at least one page).
    pub fn ringbuf(name: &str, bytes: u32) -> Self {
        Self::new(name, MapType::RingBuf, None, None, bytes)
    }

    pub fn with_flags(mut self, flags: u32) -> Self {
        self.map_flags = flags;
        self
    }

    pub fn with_pinning(mut self, pinning: Pinning) -> Self {
        self.pinning = pinning;
        self
    }

    pub fn key_size(&self) -> u32 {
        self.key.as_ref().map_or(0, MapSlot::size)
    }

    pub fn value_size(&self) -> u32 {
        self.value.as_ref().map_or(0, MapSlot::size)
    }
}

/// Builds BTF for map definitions, sharing identical types.
pub(crate) struct MapBtfBuilder<'a> {
    pub btf: &'a mut Btf,
    types: HashMap<TypeDesc, TypeId>,
    uint_arrays: HashMap<u32, TypeId>,
    int_id: Option<TypeId>,
    array_index_id: Option<TypeId>,
}

impl<'a> MapBtfBuilder<'a> {
    pub fn new(btf: &'a mut Btf) -> Self {
        MapBtfBuilder {
            btf,
            types: HashMap::new(),
            uint_arrays: HashMap::new(),
            int_id: None,
            array_index_id: None,
        }
    }

    pub fn int(&mut self) -> TypeId {
        if let Some(id) = self.int_id {
            return id;
        }
        let id = self.btf.add_int("int", 4, IntEncoding::Signed);
        self.int_id = Some(id);
        id
    }

    fn array_index(&mut self) -> TypeId {
        if let Some(id) = self.array_index_id {
            return id;
        }
        // clang's name for the index type of arrays, which bpftool prints.
        let id = self
            .btf
            .add_int("__ARRAY_SIZE_TYPE__", 4, IntEncoding::Unsigned);
        self.array_index_id = Some(id);
        id
    }

    /// `int (*)[value]`: how `__uint(name, value)` encodes an integer in a BTF map definition.
    fn uint_member(&mut self, value: u32) -> TypeId {
        if let Some(&id) = self.uint_arrays.get(&value) {
            return id;
        }
        let int = self.int();
        let index = self.array_index();
        let arr = self.btf.add_array(int, index, value);
        let ptr = self.btf.add_ptr(arr);
        self.uint_arrays.insert(value, ptr);
        ptr
    }

    pub fn type_of(&mut self, desc: &TypeDesc) -> TypeId {
        if let Some(&id) = self.types.get(desc) {
            return id;
        }
        let id = match desc {
            TypeDesc::U8 => self.btf.add_int("unsigned char", 1, IntEncoding::Unsigned),
            TypeDesc::U16 => self.btf.add_int("unsigned short", 2, IntEncoding::Unsigned),
            TypeDesc::U32 => self.btf.add_int("unsigned int", 4, IntEncoding::Unsigned),
            TypeDesc::U64 => self
                .btf
                .add_int("unsigned long long", 8, IntEncoding::Unsigned),
            TypeDesc::I32 => self.int(),
            TypeDesc::I64 => self.btf.add_int("long long", 8, IntEncoding::Signed),
            TypeDesc::Bytes(n) => {
                let elem = self.type_of(&TypeDesc::U8);
                let index = self.array_index();
                self.btf.add_array(elem, index, *n)
            }
            TypeDesc::Array { elem, len } => {
                // Arrays of arrays become one flat array of the innermost element (same bytes):
                // aya-obj 0.3 sizes a nested array by its innermost length only.
                let (inner, count) = flatten_array(elem, *len);
                let elem = self.type_of(inner);
                let index = self.array_index();
                self.btf.add_array(elem, index, count)
            }
            TypeDesc::Struct { name, fields } => {
                let members: Vec<Member> = field_offsets(fields)
                    .into_iter()
                    .map(|(off, f)| Member {
                        name: f.name.clone(),
                        ty: self.type_of(&f.ty),
                        bit_offset: off * 8,
                    })
                    .collect();
                self.btf.add_struct(name, desc.size(), &members)
            }
        };
        self.types.insert(desc.clone(), id);
        id
    }

    /// The anonymous STRUCT describing `map` in libbpf's convention; returns (type id, byte size).
    pub fn map_struct(&mut self, map: &MapDef) -> (TypeId, u32) {
        let mut members = Vec::new();
        let mut add = |name: &str, ty: TypeId| {
            let bit_offset = members.len() as u32 * 64;
            members.push(Member {
                name: name.to_owned(),
                ty,
                bit_offset,
            });
        };
        add("type", self.uint_member(map.map_type.id()));
        for (slot, typed_name, size_name) in [
            (&map.key, "key", "key_size"),
            (&map.value, "value", "value_size"),
        ] {
            match slot {
                Some(MapSlot::Typed(t)) => {
                    let target = self.type_of(t);
                    add(typed_name, self.btf.add_ptr(target));
                }
                Some(MapSlot::Size(n)) => add(size_name, self.uint_member(*n)),
                None => {}
            }
        }
        add("max_entries", self.uint_member(map.max_entries));
        if map.map_flags != 0 {
            add("map_flags", self.uint_member(map.map_flags));
        }
        if map.pinning != Pinning::None {
            add("pinning", self.uint_member(map.pinning as u32));
        }
        let size = members.len() as u32 * 8;
        (self.btf.add_struct("", size, &members), size)
    }
}

/// The BTF of a list of maps, built on an empty blob: every map's STRUCT and VAR and the `.maps`
/// DATASEC. Objects put it first, so the blob can be reused as it is by every object declaring
/// the same maps (the functions' types follow it).
#[derive(Debug)]
pub(crate) struct MapsBtf {
    pub btf: Btf,
    /// The `int` among the maps' types, for the functions' return types to share.
    pub int: Option<TypeId>,
    /// Per map, in order: its byte size in `.maps`.
    pub sizes: Vec<u32>,
}

impl MapsBtf {
    fn build(maps: &[MapDef]) -> MapsBtf {
        let mut btf = Btf::new();
        let mut builder = MapBtfBuilder::new(&mut btf);
        let mut entries = Vec::with_capacity(maps.len());
        let mut sizes = Vec::with_capacity(maps.len());
        let mut offset = 0u32;
        for m in maps {
            let (ty, size) = builder.map_struct(m);
            let var = builder
                .btf
                .add_var(&m.name, ty, VarLinkage::GlobalAllocated);
            entries.push(VarSecInfo { var, offset, size });
            sizes.push(size);
            offset += size;
        }
        let int = builder.int_id;
        builder.btf.add_datasec(".maps", offset, &entries);
        MapsBtf { btf, int, sizes }
    }

    /// The BTF of `maps`, from a small per-process memo: every object of a compile declares the
    /// same shared maps, and building their types costs more than the rest of the object's BTF.
    pub fn of(maps: &[MapDef]) -> Arc<MapsBtf> {
        type Memo = Vec<(Vec<MapDef>, Arc<MapsBtf>)>;
        static MEMO: Mutex<Memo> = Mutex::new(Vec::new());
        const MEMO_MAX: usize = 8;
        // A poisoned lock only means another thread panicked mid-update of a cache: build anew.
        if let Ok(memo) = MEMO.lock()
            && let Some((_, found)) = memo.iter().find(|(k, _)| k.as_slice() == maps)
        {
            return Arc::clone(found);
        }
        let built = Arc::new(MapsBtf::build(maps));
        if let Ok(mut memo) = MEMO.lock()
            && !memo.iter().any(|(k, _)| k.as_slice() == maps)
        {
            if memo.len() >= MEMO_MAX {
                memo.remove(0);
            }
            memo.push((maps.to_vec(), Arc::clone(&built)));
        }
        built
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_layout_of_structs() {
        let lpm = TypeDesc::structure(
            "lpm_v4",
            [("prefixlen", TypeDesc::U32), ("addr", TypeDesc::Bytes(4))],
        );
        assert_eq!(lpm.size(), 8);
        let padded = TypeDesc::structure(
            "p",
            [
                ("a", TypeDesc::U8),
                ("b", TypeDesc::U64),
                ("c", TypeDesc::U16),
            ],
        );
        assert_eq!(padded.size(), 24);
        if let TypeDesc::Struct { fields, .. } = &padded {
            let offs: Vec<u32> = field_offsets(fields).into_iter().map(|(o, _)| o).collect();
            assert_eq!(offs, vec![0, 8, 16]);
        }
    }

    #[test]
    fn lpm_trie_gets_no_prealloc() {
        let m = MapDef::lpm_trie(
            "t",
            TypeDesc::structure("k", [("p", TypeDesc::U32)]),
            TypeDesc::U32,
            4,
        );
        assert_eq!(m.map_flags, BPF_F_NO_PREALLOC);
        assert_eq!(MapDef::prog_array("j", 2).key_size(), 4);
        assert_eq!(MapDef::ringbuf("r", 4096).value_size(), 0);
    }
}
