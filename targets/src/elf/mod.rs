//! ELF writer: BPF relocatable objects that libbpf (bpftool), iproute2 (`tc ... bpf obj`) and aya
//! load.
//!
//! In: [`FunctionCode`]s (entry programs in `classifier` or `xdp`, see [`PROGRAM_SECTIONS`];
//! subprograms in `.text`), [`MapDef`]s and a license, collected by an [`ObjectWriter`].
//! Out: the bytes of an ELF64 relocatable, EM_BPF, little-endian object ([`ObjectWriter::write`])
//! with:
//! - one PROGBITS/AX section per program section; each function an STT_FUNC symbol with its exact
//!   size (entry programs STB_GLOBAL, subprograms STB_LOCAL unless given global linkage);
//! - `.maps` with one STRUCT per map (`__uint`/`__type` convention), VARs of global-allocated
//!   linkage in a DATASEC `.maps`, and a map symbol at each VAR's offset;
//! - `R_BPF_64_64` relocations for map loads (`ld_imm64`, src = BPF_PSEUDO_MAP_FD) and
//!   `R_BPF_64_32` for subprogram calls (src = BPF_PSEUDO_CALL, imm = -1);
//! - `license`, `.BTF`, and optionally `.BTF.ext` with func_info and line_info.
//!
//! Inputs are validated (relocation slots, map and subprogram names, duplicate symbols) and the
//! output is byte-deterministic: the same inputs in the same order give the same bytes.

mod lines;
pub mod maps;

use std::collections::{BTreeMap, HashSet};

use object::write::{Object, Relocation, Symbol, SymbolId, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags, SymbolKind,
    SymbolScope, elf,
};

pub use crate::btf::FuncLinkage;
use crate::btf::ext::{BtfExt, FuncInfo, LineInfo};
use crate::btf::{Btf, IntEncoding, TypeId};
use crate::isa::RawInsn;
use crate::isa::opcode::{BPF_CALL, BPF_DW, BPF_IMM, BPF_JMP, BPF_LD, BPF_PSEUDO_CALL};
use crate::program::{FunctionCode, RelocTarget};
pub use maps::{
    BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, FieldDesc, MapDef, MapSlot, MapType, Pinning, TypeDesc,
};

/// The section that holds subprograms (libbpf and aya link calls only into it).
pub const TEXT_SECTION: &str = ".text";

/// Program sections every loader we target accepts: aya-obj 0.3 takes tc programs only from
/// `classifier` (not `tc`, `tc/ingress`, `tcx/*`), and the system libbpf 1.1 cannot type
/// `classifier/<x>` ("failed to guess program type"). Several programs may share a section.
pub const PROGRAM_SECTIONS: &[&str] = &["classifier", "xdp", "xdp.frags"];
pub(crate) const LD_IMM64: u8 = BPF_LD | BPF_IMM | BPF_DW;
const CALL: u8 = BPF_JMP | BPF_CALL;

/// Why an object could not be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    #[error(
        "function `{function}`: relocation at slot {insn} is out of range (function has {len} slots)"
    )]
    RelocOutOfRange {
        function: String,
        insn: usize,
        len: usize,
    },
    #[error(
        "function `{function}`: map relocation at slot {insn} is not on an ld_imm64 (code {code:#04x})"
    )]
    MapRelocNotLdImm64 {
        function: String,
        insn: usize,
        code: u8,
    },
    #[error(
        "function `{function}`: call relocation at slot {insn} is not on a call (code {code:#04x})"
    )]
    CallRelocNotCall {
        function: String,
        insn: usize,
        code: u8,
    },
    #[error("function `{function}` refers to unknown map `{map}`")]
    UnknownMap { function: String, map: String },
    #[error("function `{function}` calls `{callee}`, which is not a subprogram in `.text`")]
    UnknownSubprogram { function: String, callee: String },
    #[error("function `{function}` uses the constant `{name}`, which was never bound")]
    UnboundConstant { function: String, name: String },
    #[error("duplicate symbol `{0}`")]
    DuplicateSymbol(String),
    #[error("empty name for a {0}")]
    EmptyName(&'static str),
    #[error("function `{0}` has no instructions")]
    EmptyFunction(String),
    #[error("map `{map}`: {reason}")]
    InvalidMap { map: String, reason: String },
    #[error(
        "function `{function}`: section `{section}` is not accepted by all of libbpf 1.1 (bpftool), \
         iproute2 and aya; use `classifier` for tc programs (several may share it, told apart by \
         symbol), `xdp` for XDP, `.text` for subprograms"
    )]
    UnportableSection { function: String, section: String },
    #[error("function signature given for unknown function `{0}`")]
    UnknownSignature(String),
    #[error("function `{function}`: line annotation at slot {insn} is {why}")]
    BadLineInfo {
        function: String,
        insn: usize,
        why: &'static str,
    },
    #[error("object writer: {0}")]
    Object(String),
}

/// The type of a function parameter in BTF, for func_info.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ParamType {
    /// Pointer to the hook context: an (empty) struct with this name, e.g. `__sk_buff` or
    /// `xdp_md`; the kernel matches global-function context arguments by this name.
    Ctx(String),
    /// An unsigned integer of 4 or 8 bytes.
    Scalar { bytes: u32 },
}

/// What a function returns, in BTF.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReturnType {
    /// `int`: entry programs and most subprograms.
    #[default]
    Int,
    /// `unsigned long long`: a subprogram that returns two 32-bit results in one register.
    U64,
}

/// The BTF signature of a function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuncSignature {
    /// `Global` subprograms are verified by the kernel once, independently of their callers.
    pub linkage: FuncLinkage,
    pub params: Vec<(String, ParamType)>,
    pub returns: ReturnType,
}

/// Collects functions and maps and writes one object.
#[derive(Clone, Debug)]
pub struct ObjectWriter {
    functions: Vec<FunctionCode>,
    maps: Vec<MapDef>,
    license: String,
    btf_ext: bool,
    signatures: BTreeMap<String, FuncSignature>,
}

impl Default for ObjectWriter {
    fn default() -> Self {
        ObjectWriter {
            functions: Vec::new(),
            maps: Vec::new(),
            license: "GPL".to_owned(),
            btf_ext: true,
            signatures: BTreeMap::new(),
        }
    }
}

/// Where a function ended up: its section, byte offset in it and its symbol.
struct Placed {
    section: object::write::SectionId,
    offset: u64,
    symbol: SymbolId,
}

impl ObjectWriter {
    /// A writer with license "GPL" and `.BTF.ext` func/line info enabled.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn function(mut self, f: FunctionCode) -> Self {
        self.functions.push(f);
        self
    }

    pub fn functions(mut self, fs: impl IntoIterator<Item = FunctionCode>) -> Self {
        self.functions.extend(fs);
        self
    }

    pub fn map(mut self, m: MapDef) -> Self {
        self.maps.push(m);
        self
    }

    pub fn maps(mut self, ms: impl IntoIterator<Item = MapDef>) -> Self {
        self.maps.extend(ms);
        self
    }

    pub fn license(mut self, license: &str) -> Self {
        self.license = license.to_owned();
        self
    }

    /// Whether to emit `.BTF.ext` (func_info + one line_info per function start).
    pub fn btf_ext(mut self, enabled: bool) -> Self {
        self.btf_ext = enabled;
        self
    }

    /// Overrides the default BTF signature of function `name` (entry programs default to
    /// global `int f(struct <ctx> *ctx)`, subprograms to static `int f(void)`).
    pub fn signature(mut self, name: &str, sig: FuncSignature) -> Self {
        self.signatures.insert(name.to_owned(), sig);
        self
    }

    fn validate(&self) -> Result<(), ElfError> {
        let mut names = HashSet::new();
        for f in &self.functions {
            if f.name.is_empty() {
                return Err(ElfError::EmptyName("function"));
            }
            if f.section.is_empty() {
                return Err(ElfError::EmptyName("section"));
            }
            if f.insns.is_empty() {
                return Err(ElfError::EmptyFunction(f.name.clone()));
            }
            if f.section != TEXT_SECTION && !PROGRAM_SECTIONS.contains(&f.section.as_str()) {
                return Err(ElfError::UnportableSection {
                    function: f.name.clone(),
                    section: f.section.clone(),
                });
            }
            if !names.insert(f.name.as_str()) {
                return Err(ElfError::DuplicateSymbol(f.name.clone()));
            }
            lines::validate(f)?;
        }
        for m in &self.maps {
            if m.name.is_empty() {
                return Err(ElfError::EmptyName("map"));
            }
            if !names.insert(m.name.as_str()) {
                return Err(ElfError::DuplicateSymbol(m.name.clone()));
            }
            validate_map(m)?;
        }
        for name in self.signatures.keys() {
            if !self.functions.iter().any(|f| &f.name == name) {
                return Err(ElfError::UnknownSignature(name.clone()));
            }
        }
        let map_names: HashSet<&str> = self.maps.iter().map(|m| m.name.as_str()).collect();
        let subprograms: HashSet<&str> = self
            .functions
            .iter()
            .filter(|f| f.section == TEXT_SECTION)
            .map(|f| f.name.as_str())
            .collect();
        for f in &self.functions {
            for r in &f.relocs {
                let insn = f
                    .insns
                    .get(r.insn)
                    .ok_or_else(|| ElfError::RelocOutOfRange {
                        function: f.name.clone(),
                        insn: r.insn,
                        len: f.insns.len(),
                    })?;
                match &r.target {
                    RelocTarget::Map(map) => {
                        if insn.code != LD_IMM64
                            || f.insns.get(r.insn + 1).is_none_or(|n| n.code != 0)
                        {
                            return Err(ElfError::MapRelocNotLdImm64 {
                                function: f.name.clone(),
                                insn: r.insn,
                                code: insn.code,
                            });
                        }
                        if !map_names.contains(map.as_str()) {
                            return Err(ElfError::UnknownMap {
                                function: f.name.clone(),
                                map: map.clone(),
                            });
                        }
                    }
                    RelocTarget::Subprogram(callee) => {
                        if insn.code != CALL {
                            return Err(ElfError::CallRelocNotCall {
                                function: f.name.clone(),
                                insn: r.insn,
                                code: insn.code,
                            });
                        }
                        if !subprograms.contains(callee.as_str()) {
                            return Err(ElfError::UnknownSubprogram {
                                function: f.name.clone(),
                                callee: callee.clone(),
                            });
                        }
                    }
                    RelocTarget::Constant(name) => {
                        return Err(ElfError::UnboundConstant {
                            function: f.name.clone(),
                            name: name.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn signature_of(&self, f: &FunctionCode) -> FuncSignature {
        if let Some(sig) = self.signatures.get(&f.name) {
            return sig.clone();
        }
        if f.section == TEXT_SECTION {
            return FuncSignature {
                linkage: FuncLinkage::Static,
                params: Vec::new(),
                returns: ReturnType::Int,
            };
        }
        let hook = if f.section.starts_with("xdp") {
            crate::hooks::Hook::Xdp
        } else {
            crate::hooks::Hook::TcIngress
        };
        let ctx = hook.ctx_struct();
        FuncSignature {
            linkage: FuncLinkage::Global,
            params: vec![("ctx".to_owned(), ParamType::Ctx(ctx.to_owned()))],
            returns: ReturnType::Int,
        }
    }

    /// Writes the object.
    pub fn write(&self) -> Result<Vec<u8>, ElfError> {
        self.validate()?;
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
        // The maps' types come first in BTF, so that their blob is the same in every object that
        // declares the same maps.
        let maps_btf = (!self.maps.is_empty()).then(|| maps::MapsBtf::of(&self.maps));
        let mut btf = maps_btf.as_ref().map_or_else(Btf::new, |m| m.btf.clone());

        // Sections in order of first appearance, `.text` last among code, so that indices are
        // a function of input order only.
        let mut section_names: Vec<&str> = Vec::new();
        for f in &self.functions {
            if f.section != TEXT_SECTION && !section_names.contains(&f.section.as_str()) {
                section_names.push(&f.section);
            }
        }
        if self.functions.iter().any(|f| f.section == TEXT_SECTION) {
            section_names.push(TEXT_SECTION);
        }
        let mut sections = BTreeMap::new();
        for name in &section_names {
            let id = obj.add_section(Vec::new(), name.as_bytes().to_vec(), SectionKind::Text);
            sections.insert(*name, id);
        }

        let mut placed: BTreeMap<&str, Placed> = BTreeMap::new();
        let mut ext_funcs: BTreeMap<&str, Vec<FuncInfo>> = BTreeMap::new();
        let mut ext_lines: BTreeMap<&str, Vec<LineInfo>> = BTreeMap::new();
        let mut func_btf = FuncBtf {
            int: maps_btf.as_ref().and_then(|m| m.int),
            ..FuncBtf::default()
        };
        if self.btf_ext {
            // Interned before the functions' strings so that string offsets do not depend on
            // whether functions carry annotations.
            btf.add_string(lines::GENERATED_FILE);
        }
        for name in &section_names {
            let section = sections[name];
            for f in self.functions.iter().filter(|f| f.section == *name) {
                let bytes = encode_function(f);
                let size = bytes.len() as u64;
                let offset = obj.append_section_data(section, &bytes, 8);
                let sig = self.signature_of(f);
                let scope = if f.section != TEXT_SECTION || sig.linkage == FuncLinkage::Global {
                    SymbolScope::Dynamic
                } else {
                    SymbolScope::Compilation
                };
                let symbol = obj.add_symbol(Symbol {
                    name: f.name.as_bytes().to_vec(),
                    value: offset,
                    size,
                    kind: SymbolKind::Text,
                    scope,
                    weak: false,
                    section: SymbolSection::Section(section),
                    flags: SymbolFlags::None,
                });
                placed.insert(
                    &f.name,
                    Placed {
                        section,
                        offset,
                        symbol,
                    },
                );
                if self.btf_ext {
                    let type_id = func_btf.func(&mut btf, &f.name, &sig);
                    let insn_byte_off = offset_u32(offset)?;
                    ext_funcs.entry(name).or_default().push(FuncInfo {
                        insn_byte_off,
                        type_id,
                    });
                    let recs = lines::records(&mut btf, f, insn_byte_off);
                    ext_lines.entry(name).or_default().extend(recs);
                }
            }
        }

        let map_sizes = maps_btf.as_ref().map_or(&[][..], |m| &m.sizes);
        let map_symbols = self.add_maps(&mut obj, map_sizes);

        for f in &self.functions {
            let at = &placed[f.name.as_str()];
            for r in &f.relocs {
                let (symbol, r_type) = match &r.target {
                    RelocTarget::Map(m) => (map_symbols[m.as_str()], elf::R_BPF_64_64),
                    RelocTarget::Subprogram(s) => (placed[s.as_str()].symbol, elf::R_BPF_64_32),
                    // Refused by validate(): ELF has no relocation for it.
                    RelocTarget::Constant(_) => continue,
                };
                obj.add_relocation(
                    at.section,
                    Relocation {
                        offset: at.offset + r.insn as u64 * 8,
                        symbol,
                        addend: 0,
                        flags: RelocationFlags::Elf { r_type },
                    },
                )
                .map_err(|e| ElfError::Object(e.to_string()))?;
            }
        }

        let license = obj.add_section(Vec::new(), b"license".to_vec(), SectionKind::Data);
        let mut lic = self.license.as_bytes().to_vec();
        lic.push(0);
        obj.append_section_data(license, &lic, 1);

        let mut ext = BtfExt::new();
        for name in &section_names {
            if let Some(recs) = ext_funcs.remove(name) {
                ext.add_func_info(&mut btf, name, recs);
            }
            if let Some(recs) = ext_lines.remove(name) {
                ext.add_line_info(&mut btf, name, recs);
            }
        }
        // The kernel refuses a BTF blob without types; an object without maps or func info
        // needs none.
        if btf.type_count() > 0 {
            let btf_section = obj.add_section(Vec::new(), b".BTF".to_vec(), SectionKind::Metadata);
            obj.append_section_data(btf_section, &btf.to_bytes(), 4);
        }
        if !ext.is_empty() {
            let ext_section =
                obj.add_section(Vec::new(), b".BTF.ext".to_vec(), SectionKind::Metadata);
            obj.append_section_data(ext_section, &ext.to_bytes(), 4);
        }
        obj.write().map_err(|e| ElfError::Object(e.to_string()))
    }

    /// Adds `.maps` and the map symbols (`sizes`: each map's size, from its BTF); returns the
    /// symbol of each map by name.
    fn add_maps<'m>(&'m self, obj: &mut Object, sizes: &[u32]) -> BTreeMap<&'m str, SymbolId> {
        let mut symbols = BTreeMap::new();
        if self.maps.is_empty() {
            return symbols;
        }
        let section = obj.add_section(Vec::new(), b".maps".to_vec(), SectionKind::Data);
        let mut offset = 0u32;
        for (m, &size) in self.maps.iter().zip(sizes) {
            obj.append_section_data(section, &vec![0u8; size as usize], 8);
            let symbol = obj.add_symbol(Symbol {
                name: m.name.as_bytes().to_vec(),
                value: u64::from(offset),
                size: u64::from(size),
                kind: SymbolKind::Data,
                scope: SymbolScope::Dynamic,
                weak: false,
                section: SymbolSection::Section(section),
                flags: SymbolFlags::None,
            });
            symbols.insert(m.name.as_str(), symbol);
            offset += size;
        }
        symbols
    }
}

fn offset_u32(offset: u64) -> Result<u32, ElfError> {
    u32::try_from(offset)
        .map_err(|_| ElfError::Object(format!("section offset {offset} exceeds 4 GiB")))
}

fn validate_map(m: &MapDef) -> Result<(), ElfError> {
    let invalid = |reason: &str| {
        Err(ElfError::InvalidMap {
            map: m.name.clone(),
            reason: reason.to_owned(),
        })
    };
    if m.max_entries == 0 {
        return invalid("max_entries must be > 0");
    }
    match m.map_type {
        MapType::RingBuf => {
            if m.key.is_some() || m.value.is_some() {
                return invalid("a ring buffer has no key or value");
            }
            if !m.max_entries.is_power_of_two() || m.max_entries < 4096 {
                return invalid("ring buffer size must be a power of two of at least 4096 bytes");
            }
        }
        _ => {
            if m.key_size() == 0 || m.value_size() == 0 {
                return invalid("key and value must have a non-zero size");
            }
        }
    }
    if m.map_type == MapType::LpmTrie {
        if m.map_flags & BPF_F_NO_PREALLOC == 0 {
            return invalid("an LPM trie needs BPF_F_NO_PREALLOC");
        }
        if !matches!(m.key, Some(MapSlot::Typed(TypeDesc::Struct { .. }))) {
            return invalid("an LPM trie key must be a struct starting with a u32 prefix length");
        }
    }
    if m.map_type == MapType::ProgArray && matches!(m.key, Some(MapSlot::Typed(_))) {
        return invalid(
            "a prog array takes key and value sizes, not types (the kernel refuses BTF for it)",
        );
    }
    Ok(())
}

/// The function's slots as bytes, with relocated instructions put in the shape loaders expect.
fn encode_function(f: &FunctionCode) -> Vec<u8> {
    let mut insns = f.insns.clone();
    for r in &f.relocs {
        match r.target {
            RelocTarget::Map(_) => {
                // As clang emits it (`r1 = 0 ll`): the loader sets src = BPF_PSEUDO_MAP_FD and
                // writes the map fd into imm, so the pair must be otherwise clean.
                insns[r.insn] = RawInsn {
                    src: 0,
                    imm: 0,
                    ..insns[r.insn]
                };
                insns[r.insn + 1].imm = 0;
            }
            RelocTarget::Subprogram(_) => {
                // libbpf targets `sym.st_value / 8 + imm + 1`; -1 lands on the callee's first slot.
                insns[r.insn] = RawInsn {
                    src: BPF_PSEUDO_CALL,
                    imm: -1,
                    ..insns[r.insn]
                };
            }
            RelocTarget::Constant(_) => {}
        }
    }
    insns.iter().flat_map(|i| i.to_bytes()).collect()
}

/// BTF FUNC/FUNC_PROTO types for func_info, sharing the basic types they use.
#[derive(Default)]
struct FuncBtf {
    int: Option<TypeId>,
    scalars: BTreeMap<u32, TypeId>,
    ctx_ptrs: BTreeMap<String, TypeId>,
}

impl FuncBtf {
    fn func(&mut self, btf: &mut Btf, name: &str, sig: &FuncSignature) -> TypeId {
        let int = *self
            .int
            .get_or_insert_with(|| btf.add_int("int", 4, IntEncoding::Signed));
        let params: Vec<(String, TypeId)> = sig
            .params
            .iter()
            .map(|(n, p)| {
                let ty = match p {
                    ParamType::Ctx(s) => *self.ctx_ptrs.entry(s.clone()).or_insert_with(|| {
                        let st = btf.add_struct(s, 0, &[]);
                        btf.add_ptr(st)
                    }),
                    ParamType::Scalar { bytes } => {
                        *self.scalars.entry(*bytes).or_insert_with(|| {
                            let name = if *bytes == 8 {
                                "unsigned long long"
                            } else {
                                "unsigned int"
                            };
                            btf.add_int(name, *bytes, IntEncoding::Unsigned)
                        })
                    }
                };
                (n.clone(), ty)
            })
            .collect();
        let params: Vec<(&str, TypeId)> = params.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        let ret = match sig.returns {
            ReturnType::Int => int,
            ReturnType::U64 => *self
                .scalars
                .entry(8)
                .or_insert_with(|| btf.add_int("unsigned long long", 8, IntEncoding::Unsigned)),
        };
        let proto = btf.add_func_proto(ret, &params);
        btf.add_func(name, proto, sig.linkage)
    }
}
