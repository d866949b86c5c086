//! Hand-encoded test programs written through the ELF writer, and the check that runs one object
//! through every loader: raw `bpf()`, aya, both again with `bpf_jit_harden=2`, `bpftool prog
//! loadall` and `tc`/`ip` attach.

#![allow(dead_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

use ciliumc_targets::elf::{
    FuncLinkage, FuncSignature, MapDef, MapType, ObjectWriter, ParamType, ReturnType, TypeDesc,
};
use ciliumc_targets::isa::opcode::*;
use ciliumc_tests::insn::*;
use ciliumc_tests::loader::{LoadedObject, aya_map_view, aya_program_fd};
use ciliumc_tests::sys::{self, MapView};
use ciliumc_tests::tools::TempObject;
use ciliumc_tests::{
    JitHardenGuard, bpftool_loadall, load_object_aya, load_object_raw, tc_attach_check,
    xdp_attach_check,
};

/// `struct __sk_buff` offsets.
pub const SKB_LEN: i16 = 0;
pub const SKB_DATA: i16 = 76;
pub const SKB_DATA_END: i16 = 80;
/// `struct xdp_md` offsets.
pub const XDP_DATA: i16 = 0;
pub const XDP_DATA_END: i16 = 4;

pub const HELPER_MAP_LOOKUP: i32 = 1;
pub const HELPER_TAIL_CALL: i32 = 12;
pub const HELPER_RINGBUF_OUTPUT: i32 = 130;

/// `r2 = data; r3 = data_end; if data + len > data_end goto label`.
fn load_bounds(a: &mut Asm, data_off: i16, end_off: i16, len: i32, fail: &str) {
    a.push(ldx(BPF_W, R2, R1, data_off))
        .push(ldx(BPF_W, R3, R1, end_off))
        .push(mov64_reg(R4, R2))
        .push(alu64_imm(BPF_ADD, R4, len))
        .jmp_reg_to(BPF_JGT, R4, R3, fail);
}

/// `r0 = value; exit` in `section`.
pub fn return_constant(section: &str, value: i32) -> Vec<u8> {
    let f = Asm::new()
        .push(mov64_imm(R0, value))
        .push(exit())
        .finish("prog", section);
    ObjectWriter::new().function(f).write().unwrap()
}

/// Returns the IPv4 protocol, 256 + the IPv6 next header, 1000 for other EtherTypes and 2000
/// for frames too short for their header. `data`/`data_end` offsets select tc or XDP.
pub fn parse_l3(section: &str, data_off: i16, end_off: i16) -> Vec<u8> {
    let mut a = Asm::new();
    load_bounds(&mut a, data_off, end_off, 14, "short");
    a.push(ldx(BPF_H, R5, R2, 12))
        // EtherTypes read as little-endian u16 from network order.
        .jmp_imm_to(BPF_JEQ, R5, 0x0008, "ipv4")
        .jmp_imm_to(BPF_JEQ, R5, 0xdd86, "ipv6")
        .push(mov64_imm(R0, 1000))
        .push(exit())
        .label("ipv4")
        .push(mov64_reg(R4, R2))
        .push(alu64_imm(BPF_ADD, R4, 34))
        .jmp_reg_to(BPF_JGT, R4, R3, "short")
        .push(ldx(BPF_B, R0, R2, 23))
        .push(exit())
        .label("ipv6")
        .push(mov64_reg(R4, R2))
        .push(alu64_imm(BPF_ADD, R4, 54))
        .jmp_reg_to(BPF_JGT, R4, R3, "short")
        .push(ldx(BPF_B, R0, R2, 20))
        .push(alu64_imm(BPF_ADD, R0, 256))
        .push(exit())
        .label("short")
        .push(mov64_imm(R0, 2000))
        .push(exit());
    ObjectWriter::new()
        .function(a.finish("prog", section))
        .write()
        .unwrap()
}

/// Key and value types of the `verdicts` hash map.
pub fn ip4_key() -> TypeDesc {
    TypeDesc::structure("ip4_key", [("daddr", TypeDesc::Bytes(4))])
}
pub fn verdict_value() -> TypeDesc {
    TypeDesc::structure(
        "verdict",
        [("action", TypeDesc::U32), ("rule", TypeDesc::U32)],
    )
}

/// Looks the IPv4 destination up in hash map `verdicts`; returns `action` or 0 on a miss.
pub fn hash_lookup() -> Vec<u8> {
    let mut a = Asm::new();
    load_bounds(&mut a, SKB_DATA, SKB_DATA_END, 34, "miss");
    a.push(ldx(BPF_H, R5, R2, 12))
        .jmp_imm_to(BPF_JNE, R5, 0x0008, "miss")
        .push(ldx(BPF_W, R5, R2, 30))
        .push(stx(BPF_W, R10, R5, -4))
        .push(mov64_reg(R2, R10))
        .push(alu64_imm(BPF_ADD, R2, -4))
        .ld_map(R1, "verdicts")
        .push(call_helper(HELPER_MAP_LOOKUP))
        .jmp_imm_to(BPF_JEQ, R0, 0, "miss")
        .push(ldx(BPF_W, R0, R0, 0))
        .push(exit())
        .label("miss")
        .push(mov64_imm(R0, 0))
        .push(exit());
    ObjectWriter::new()
        .function(a.finish("prog", "classifier"))
        .map(MapDef::hash("verdicts", ip4_key(), verdict_value(), 64))
        .write()
        .unwrap()
}

/// Increments `counters[0]` atomically and returns the new count. Also defines unused per-CPU
/// and LRU maps so that every map type ciliumc needs is created by each loader.
pub fn array_counter() -> Vec<u8> {
    let mut a = Asm::new();
    a.push(st_imm(BPF_W, R10, -4, 0))
        .push(mov64_reg(R2, R10))
        .push(alu64_imm(BPF_ADD, R2, -4))
        .ld_map(R1, "counters")
        .push(call_helper(HELPER_MAP_LOOKUP))
        .jmp_imm_to(BPF_JEQ, R0, 0, "out")
        .push(mov64_imm(R1, 1))
        .push(ciliumc_targets::isa::RawInsn {
            code: BPF_STX | BPF_ATOMIC | BPF_DW,
            dst: R0,
            src: R1,
            off: 0,
            imm: BPF_ADD as i32,
        })
        .push(ldx(BPF_DW, R0, R0, 0))
        .push(exit())
        .label("out")
        .push(mov64_imm(R0, 0))
        .push(exit());
    let flow = TypeDesc::structure(
        "flow",
        [
            ("saddr", TypeDesc::Bytes(4)),
            ("daddr", TypeDesc::Bytes(4)),
            ("ports", TypeDesc::U32),
        ],
    );
    ObjectWriter::new()
        .function(a.finish("prog", "classifier"))
        .map(MapDef::array("counters", TypeDesc::U64, 4))
        .map(MapDef::typed(
            "pcpu_array",
            MapType::PercpuArray,
            TypeDesc::U32,
            TypeDesc::U64,
            4,
        ))
        .map(MapDef::typed(
            "pcpu_hash",
            MapType::PercpuHash,
            flow.clone(),
            TypeDesc::U64,
            16,
        ))
        .map(MapDef::typed(
            "lru",
            MapType::LruHash,
            flow.clone(),
            TypeDesc::U64,
            16,
        ))
        .map(MapDef::typed(
            "lru_pcpu",
            MapType::LruPercpuHash,
            flow,
            TypeDesc::U64,
            16,
        ))
        .write()
        .unwrap()
}

pub fn lpm_key() -> TypeDesc {
    TypeDesc::structure(
        "lpm_v4_key",
        [("prefixlen", TypeDesc::U32), ("addr", TypeDesc::Bytes(4))],
    )
}

/// Longest-prefix match of the IPv4 destination in `prefixes`; returns the value or 0.
pub fn lpm_lookup() -> Vec<u8> {
    let mut a = Asm::new();
    load_bounds(&mut a, SKB_DATA, SKB_DATA_END, 34, "miss");
    a.push(ldx(BPF_H, R5, R2, 12))
        .jmp_imm_to(BPF_JNE, R5, 0x0008, "miss")
        .push(ldx(BPF_W, R5, R2, 30))
        .push(st_imm(BPF_W, R10, -8, 32))
        .push(stx(BPF_W, R10, R5, -4))
        .push(mov64_reg(R2, R10))
        .push(alu64_imm(BPF_ADD, R2, -8))
        .ld_map(R1, "prefixes")
        .push(call_helper(HELPER_MAP_LOOKUP))
        .jmp_imm_to(BPF_JEQ, R0, 0, "miss")
        .push(ldx(BPF_W, R0, R0, 0))
        .push(exit())
        .label("miss")
        .push(mov64_imm(R0, 0))
        .push(exit());
    ObjectWriter::new()
        .function(a.finish("prog", "classifier"))
        .map(MapDef::lpm_trie("prefixes", lpm_key(), TypeDesc::U32, 64))
        .write()
        .unwrap()
}

/// `twice(21) + pkt_len(ctx)` where `twice(x) = add(x, x)`: static subprograms calling each
/// other in `.text`, and a global one (verified on its own by the kernel when BTF func_info is
/// written).
pub fn bpf_to_bpf_call(btf_ext: bool) -> Vec<u8> {
    let main = Asm::new()
        .push(mov64_reg(R6, R1))
        .push(mov64_imm(R1, 21))
        .call("twice")
        .push(mov64_reg(R7, R0))
        .push(mov64_reg(R1, R6))
        .call("pkt_len")
        .push(alu64_reg(BPF_ADD, R0, R7))
        .push(exit())
        .finish("prog", "classifier");
    let twice = Asm::new()
        .push(mov64_reg(R2, R1))
        .call("add")
        .push(exit())
        .finish("twice", ".text");
    let add = Asm::new()
        .push(mov64_reg(R0, R1))
        .push(alu64_reg(BPF_ADD, R0, R2))
        .push(exit())
        .finish("add", ".text");
    let pkt_len = Asm::new()
        .push(ldx(BPF_W, R0, R1, SKB_LEN))
        .push(exit())
        .finish("pkt_len", ".text");
    let mut w = ObjectWriter::new()
        .btf_ext(btf_ext)
        .function(main)
        .function(twice)
        .function(add)
        .function(pkt_len);
    if btf_ext {
        let scalar = |n: &str| (n.to_owned(), ParamType::Scalar { bytes: 4 });
        w = w
            .signature(
                "add",
                FuncSignature {
                    linkage: FuncLinkage::Static,
                    params: vec![scalar("a"), scalar("b")],
                    returns: ReturnType::Int,
                },
            )
            .signature(
                "twice",
                FuncSignature {
                    linkage: FuncLinkage::Static,
                    params: vec![scalar("x")],
                    returns: ReturnType::Int,
                },
            )
            .signature(
                "pkt_len",
                FuncSignature {
                    linkage: FuncLinkage::Global,
                    params: vec![("ctx".into(), ParamType::Ctx("__sk_buff".into()))],
                    returns: ReturnType::Int,
                },
            );
    }
    w.write().unwrap()
}

/// `prog` tail-calls `jumps[0]` (`target`, returning 42) and returns 1 when the slot is empty.
pub fn tail_call() -> Vec<u8> {
    let entry = Asm::new()
        .ld_map(R2, "jumps")
        .push(mov64_imm(R3, 0))
        .push(call_helper(HELPER_TAIL_CALL))
        .push(mov64_imm(R0, 1))
        .push(exit())
        .finish("prog", "classifier");
    // Both in `classifier`: the system libbpf (1.1) accepts no `classifier/<x>` section names.
    let target = Asm::new()
        .push(mov64_imm(R0, 42))
        .push(exit())
        .finish("target", "classifier");
    ObjectWriter::new()
        .function(entry)
        .function(target)
        .map(MapDef::prog_array("jumps", 4))
        .write()
        .unwrap()
}

pub const RINGBUF_RECORD: u64 = 0x1122_3344_5566_7788;

/// Writes the 8-byte record [`RINGBUF_RECORD`] to ring buffer `events`; returns the helper's
/// result (0 on success).
pub fn ringbuf_output() -> Vec<u8> {
    let f = Asm::new()
        .extend(ld_imm64(R1, RINGBUF_RECORD))
        .push(stx(BPF_DW, R10, R1, -8))
        .ld_map(R1, "events")
        .push(mov64_reg(R2, R10))
        .push(alu64_imm(BPF_ADD, R2, -8))
        .push(mov64_imm(R3, 8))
        .push(mov64_imm(R4, 0))
        .push(call_helper(HELPER_RINGBUF_OUTPUT))
        .push(exit())
        .finish("prog", "classifier");
    ObjectWriter::new()
        .function(f)
        .map(MapDef::ringbuf("events", 4096))
        .write()
        .unwrap()
}

/// One object loaded either way, for setup code that works on both.
pub enum Loaded<'a> {
    Raw(&'a LoadedObject),
    Aya(&'a aya::Ebpf),
}

impl Loaded<'_> {
    pub fn map(&self, name: &str) -> MapView<'_> {
        match self {
            Loaded::Raw(o) => o
                .map(name)
                .unwrap_or_else(|| panic!("no map {name}"))
                .view(),
            Loaded::Aya(e) => aya_map_view(e, name).unwrap(),
        }
    }

    pub fn prog_fd(&self, name: &str) -> BorrowedFd<'_> {
        match self {
            Loaded::Raw(o) => o
                .program(name)
                .unwrap_or_else(|| panic!("no program {name}"))
                .fd(),
            Loaded::Aya(e) => aya_program_fd(e, name).unwrap(),
        }
    }

    /// Puts program `prog` in slot `index` of prog array `map`.
    pub fn set_tail_call(&self, map: &str, index: u32, prog: &str) {
        let fd = self.prog_fd(prog).as_raw_fd() as u32;
        self.map(map)
            .update(&index.to_ne_bytes(), &fd.to_ne_bytes(), sys::BPF_ANY)
            .unwrap();
    }
}

/// `(packet, expected return value)`.
pub type Case = (Vec<u8>, u32);

fn run_cases(how: &str, loaded: &Loaded<'_>, entry: &str, cases: &[Case]) {
    for (i, (packet, want)) in cases.iter().enumerate() {
        let out = sys::test_run(loaded.prog_fd(entry), packet, 1).unwrap();
        assert_eq!(
            out.retval, *want,
            "{how}: case {i} returned {} instead of {want}",
            out.retval
        );
    }
}

/// Loads `object` with raw `bpf()` and with aya, each with `bpf_jit_harden` 0 and 2, runs
/// `setup` then every case through `BPF_PROG_TEST_RUN`; then `bpftool prog loadall` and the
/// iproute2 attach of `section` (XDP when it starts with `xdp`).
pub fn check_everywhere(
    object: &[u8],
    entry: &str,
    section: &str,
    setup: &dyn Fn(&Loaded<'_>),
    cases: &[Case],
) {
    for harden in [0u8, 2] {
        let _guard = JitHardenGuard::set(harden).unwrap();
        let raw =
            load_object_raw(object).unwrap_or_else(|e| panic!("raw load (harden {harden}): {e}"));
        let loaded = Loaded::Raw(&raw);
        setup(&loaded);
        run_cases(&format!("raw, harden {harden}"), &loaded, entry, cases);
        assert!(
            raw.verifier_stats().values().all(|&n| n > 0),
            "verified_insns reported"
        );

        let ebpf =
            load_object_aya(object).unwrap_or_else(|e| panic!("aya load (harden {harden}): {e}"));
        let loaded = Loaded::Aya(&ebpf);
        setup(&loaded);
        run_cases(&format!("aya, harden {harden}"), &loaded, entry, cases);
    }
    let file = TempObject::new(object).unwrap();
    bpftool_loadall(&file.path).unwrap_or_else(|e| panic!("bpftool: {e}"));
    let attached = if section.starts_with("xdp") {
        xdp_attach_check(&file.path, section)
    } else {
        tc_attach_check(&file.path, section)
    };
    attached.unwrap_or_else(|e| panic!("iproute2: {e}"));
}
