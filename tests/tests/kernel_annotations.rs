//! Rule annotations (`.BTF.ext` line_info from `FunctionBuilder::annotate`) accepted and kept by
//! the kernel: the object loads through the raw loader, `bpftool prog loadall` and aya, behaves as
//! the rules say under `BPF_PROG_TEST_RUN`, and `bpftool prog dump xlated` prints every rule's
//! text as a `; ` line. Skips where bpf() is refused unless CILIUMC_REQUIRE_KERNEL=1.

use ciliumc_targets::codegen::{
    AluOp, Annotation, CodegenOptions, Cond, Function, FunctionBuilder, LinkOptions, MapDecl,
    MapKind, ParamKind, Size, compile_with,
};
use ciliumc_targets::disasm::disassemble_object_with_line_info;
use ciliumc_targets::elf::{MapDef, ObjectWriter, TypeDesc};
use ciliumc_targets::hooks::{Hook, TC_ACT_OK, TC_ACT_SHOT};
use ciliumc_tests::packet::Packet;
use ciliumc_tests::tools::{TempObject, run};
use ciliumc_tests::{bpftool_loadall, kernel_or_skip, load_object_aya, load_object_raw, sys};

const RULES: usize = 8;
const PORT_BASE: i64 = 1000;

fn rule_text(r: usize) -> String {
    format!(
        "rule {r}: CiliumNetworkPolicy default/rule{r} ingress[0] (testdata/demo/policy.yaml:{}:5)",
        10 + 4 * r
    )
}

/// Allows UDP to port `PORT_BASE + r` for each rule `r`, drops the rest; enough values live
/// across the map lookup to spill, and an unannotated subprogram.
fn module() -> Vec<Function> {
    let mut f = FunctionBuilder::new("annotated", Hook::TcIngress);
    f.annotate(Annotation {
        file: "testdata/demo/policy.yaml".into(),
        line: 1,
        column: 1,
        text: "prologue: parse IPv4/UDP".into(),
    });
    let drop = f.block();
    let allow = f.block();
    let data = f.load_ctx("data");
    let end = f.load_ctx("data_end");
    f.check_packet_bounds(data, end, 64, drop);
    let saddr = f.load(data, 26, Size::W);
    let dport_be = f.load(data, 36, Size::H);
    let dport = f.bswap(16, dport_be);
    let live: Vec<_> = (0..10).map(|k| f.load(data, 42 + k, Size::B)).collect();
    let ipcache = f.map(MapDecl {
        name: "ipcache".into(),
        kind: MapKind::Hash,
        key_size: 4,
        value_size: 8,
    });
    let key = f.stack_slot(8);
    f.stack_store(key, 0, saddr, Size::W);
    let key_ptr = f.stack_addr(key);
    let (hit, miss, rules) = (f.block(), f.block(), f.block());
    let found = f.map_lookup(ipcache, key_ptr);
    f.branch_null(found, miss, hit);
    let identity = f.vreg();
    f.switch_to(miss);
    f.assign_const(identity, 2);
    f.jump(rules);
    f.switch_to(hit);
    let id = f.load(found, 0, Size::W);
    f.assign(identity, id);
    f.jump(rules);
    f.switch_to(rules);
    for r in 0..RULES {
        let (next, id_ok) = (f.block(), f.block());
        f.annotate(Annotation {
            file: "testdata/demo/policy.yaml".into(),
            line: 10 + 4 * r as u32,
            column: 5,
            text: rule_text(r),
        });
        let masked = f.alu(AluOp::And, identity, 0xffff);
        f.branch(Cond::Ne, masked, 2, next, id_ok);
        f.switch_to(id_ok);
        f.branch(Cond::Eq, dport, PORT_BASE + r as i64, allow, next);
        f.switch_to(next);
    }
    f.jump(drop);
    f.switch_to(allow);
    let mut sum = f.constant(0);
    for v in live {
        sum = f.alu(AluOp::Add, sum, v);
    }
    let mixed = f.call_local("mix", &[sum]);
    let ok = f.block();
    f.branch(Cond::Eq, mixed, 0x7fff_0000, drop, ok);
    f.switch_to(ok);
    f.ret(TC_ACT_OK);
    f.switch_to(drop);
    f.ret(TC_ACT_SHOT);
    let mut g = FunctionBuilder::subprogram("mix", Hook::TcIngress, &[ParamKind::Scalar]);
    let p = g.param(0).unwrap();
    let q = g.alu(AluOp::Add, p, 1);
    g.ret(q);
    vec![f.finish().unwrap(), g.finish().unwrap()]
}

/// The object, with a short-jump limit low enough to force `gotol` between rules.
fn object() -> Vec<u8> {
    let opts = CodegenOptions {
        link: LinkOptions {
            short_jump_limit: 6,
        },
    };
    let (code, stats) = compile_with(&module(), opts).unwrap();
    assert!(stats[0].spills > 0 && stats[0].long_jumps > 0, "{stats:?}");
    assert_eq!(code[0].line_info.len(), RULES + 1);
    ObjectWriter::new()
        .functions(code)
        .map(MapDef::hash(
            "ipcache",
            TypeDesc::Bytes(4),
            TypeDesc::Bytes(8),
            16,
        ))
        .write()
        .unwrap()
}

fn udp_to(port: u16) -> Vec<u8> {
    Packet::ipv4([192, 0, 2, 1], [198, 51, 100, 2])
        .udp(5555, port)
        .payload(&[0u8; 32])
        .build()
}

/// Every rule's text appears as a `; ` comment, in rule order, followed by instructions.
fn assert_rules_shown(dump: &str, what: &str) {
    let mut last = 0;
    for r in 0..RULES {
        let needle = format!("; {}", rule_text(r));
        let at = dump[last..]
            .find(&needle)
            .unwrap_or_else(|| panic!("{what}: rule {r} missing or out of order:\n{dump}"));
        last += at + needle.len();
    }
    assert!(
        dump.contains("; prologue: parse IPv4/UDP"),
        "{what}:\n{dump}"
    );
}

#[test]
fn raw_loader_keeps_annotations_and_bpftool_dump_shows_them() {
    let Some(_k) = kernel_or_skip!() else { return };
    let bytes = object();
    let loaded = load_object_raw(&bytes).unwrap();
    let prog = loaded.program("annotated").expect("program loaded");
    assert_eq!(
        prog.run(&udp_to(PORT_BASE as u16 + 3)).unwrap().retval,
        TC_ACT_OK as u32
    );
    assert_eq!(
        prog.run(&udp_to(PORT_BASE as u16 + RULES as u16))
            .unwrap()
            .retval,
        TC_ACT_SHOT as u32
    );
    let id = sys::prog_info(prog.fd()).unwrap().id.to_string();
    let dump = run("bpftool", &["prog", "dump", "xlated", "id", &id]).unwrap();
    assert_rules_shown(&dump, "bpftool prog dump xlated (raw load)");
    // The unannotated subprogram keeps its function-start record.
    assert!(dump.contains("; mix"), "{dump}");
}

#[test]
fn bpftool_loadall_and_dump_in_a_private_bpffs() {
    let Some(_k) = kernel_or_skip!() else { return };
    let obj = TempObject::new(&object()).unwrap();
    bpftool_loadall(&obj.path).unwrap();
    let file = obj.path.to_str().unwrap();
    // A private mount namespace with its own bpffs: the pins vanish with it.
    let script = "mount -t bpf bpf /sys/fs/bpf && bpftool prog loadall \"$0\" /sys/fs/bpf/progs \
                  && bpftool prog dump xlated pinned /sys/fs/bpf/progs/annotated";
    let dump = run(
        "unshare",
        &[
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            file,
        ],
    )
    .unwrap();
    assert_rules_shown(&dump, "bpftool loadall + dump xlated");
}

#[test]
fn aya_loads_the_annotated_object() {
    let Some(_k) = kernel_or_skip!() else { return };
    let ebpf = load_object_aya(&object()).unwrap();
    assert!(ebpf.program("annotated").is_some());
}

#[test]
fn disassembly_shows_the_same_rules() {
    let bytes = object();
    let text = disassemble_object_with_line_info(&bytes, "annotated.o").unwrap();
    assert_rules_shown(&text, "ciliumc disasm");
    assert_eq!(object(), bytes, "objects are deterministic");
}
