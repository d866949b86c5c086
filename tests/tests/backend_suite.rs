//! Issue 3's acceptance suite: at least 50 generated programs — random modules with helper calls,
//! spills and bpf-to-bpf calls, hash-map lookups, packet parsing of every header (through the
//! policy lowering), a tail call, ring-buffer output, and a program over 40,000 instructions that
//! needs long jumps — each of which
//! (a) passes the kernel verifier (raw `bpf()` loader),
//! (b) loads with `bpftool prog loadall`, `tc filter add ... bpf da obj F sec classifier` and aya,
//! (c) disassembles with `llvm-objdump-19 -d` to exactly the text of `ciliumc disasm --raw`, and
//! (d) returns the expected values under `BPF_PROG_TEST_RUN`,
//! then (a) and (d) again with `net.core.bpf_jit_harden=2` (restored afterwards).

use std::os::fd::AsRawFd;
use std::process::Command;

use ciliumc_compiler::compile::{self, MapPinning};
use ciliumc_compiler::lower;
use ciliumc_ir::evaluator::{PeerInfo, verdict_direction};
use ciliumc_ir::identity::NumericIdentity;
use ciliumc_ir::policy::{
    Direction, DirectionPolicy, L4Match, PeerSet, PortRange, Protocol, Rule, RuleId, RuleKind,
};
use ciliumc_targets::codegen::interp::{CtxInput, run_ir};
use ciliumc_targets::codegen::testgen::{GenConfig, PACKET_MIN, generate};
use ciliumc_targets::codegen::{
    self, AluOp, Cond, Function, FunctionBuilder, MapDecl, MapKind, Size,
};
use ciliumc_targets::disasm::disassemble_object;
use ciliumc_targets::elf::{MapDef, MapType, ObjectWriter, TypeDesc};
use ciliumc_targets::hooks::{self, Hook, TC_ACT_OK, TC_ACT_SHOT};
use ciliumc_tests::loader::{LoadedObject, load_object_aya, load_object_raw};
use ciliumc_tests::packet::{ExtHeader, Packet};
use ciliumc_tests::tools::{TempObject, bpftool_loadall, tc_attach_check};
use ciliumc_tests::{JitHardenGuard, kernel_or_skip};

/// One program of the suite: its object, the entry to run, and the runs with their expected r0.
struct Case {
    name: String,
    elf: Vec<u8>,
    entry: String,
    runs: Vec<(Vec<u8>, u32)>,
    /// Map writes before running: (map, key, value); `None` value = fd of program `entry`'s sibling.
    setup: Vec<Setup>,
}

enum Setup {
    Map {
        map: String,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    ProgSlot {
        map: String,
        index: u32,
        program: String,
    },
}

fn map_def(decl: &MapDecl) -> MapDef {
    let bytes = |n: u32| TypeDesc::Bytes(n);
    match decl.kind {
        MapKind::Hash => MapDef::hash(&decl.name, bytes(decl.key_size), bytes(decl.value_size), 64),
        MapKind::Array => MapDef::array(&decl.name, bytes(decl.value_size), 4),
        MapKind::LruHash => MapDef::typed(
            &decl.name,
            MapType::LruHash,
            bytes(decl.key_size),
            bytes(decl.value_size),
            64,
        ),
        MapKind::PerCpuHash => MapDef::typed(
            &decl.name,
            MapType::PercpuHash,
            bytes(decl.key_size),
            bytes(decl.value_size),
            64,
        ),
        MapKind::PerCpuArray => MapDef::typed(
            &decl.name,
            MapType::PercpuArray,
            TypeDesc::U32,
            bytes(decl.value_size),
            4,
        ),
        MapKind::LpmTrie => {
            MapDef::lpm_trie(&decl.name, bytes(decl.key_size), bytes(decl.value_size), 64)
        }
        MapKind::ProgArray => MapDef::prog_array(&decl.name, 4),
        MapKind::RingBuf => MapDef::ringbuf(&decl.name, 4096),
    }
}

fn object(module: &[Function]) -> Vec<u8> {
    let code = codegen::compile(module).expect("codegen");
    let mut defs: Vec<MapDef> = Vec::new();
    for f in module {
        for m in &f.maps {
            if !defs.iter().any(|d| d.name == m.name) {
                defs.push(map_def(m));
            }
        }
    }
    ObjectWriter::new()
        .functions(code)
        .maps(defs)
        .write()
        .expect("elf")
}

fn random_packet(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

fn random_cases() -> Vec<Case> {
    let configs = [
        GenConfig::default(),
        GenConfig {
            ops: 200,
            fold_width: 36,
            ..GenConfig::default()
        },
        GenConfig {
            ops: 40,
            packet: false,
            subprograms: false,
            ..GenConfig::default()
        },
    ];
    let mut out = Vec::new();
    for (ci, cfg) in configs.iter().enumerate() {
        for seed in 0..14u64 {
            let module = generate(1000 * ci as u64 + seed, cfg);
            let runs = [PACKET_MIN as usize + 8, 20]
                .iter()
                .enumerate()
                .map(|(k, len)| {
                    let packet = random_packet(seed * 7 + k as u64 + 1, *len);
                    let input = CtxInput {
                        packet: packet.clone(),
                        ..CtxInput::default()
                    };
                    let want = run_ir(&module, "gen_main", &input).expect("interpreter") as u32;
                    (packet, want)
                })
                .collect();
            out.push(Case {
                name: format!("random-{ci}-{seed}"),
                elf: object(&module),
                entry: "gen_main".into(),
                runs,
                setup: vec![],
            });
        }
    }
    out
}

/// Policy programs parse Ethernet, IPv4 (options, fragments), IPv6 (extension headers), TCP, UDP,
/// SCTP, ICMP and ICMPv6; expected verdicts come from the reference evaluator (peers are world).
fn policy_cases() -> Vec<Case> {
    let rule = |id, kind, l4: Option<Vec<L4Match>>| Rule {
        id: RuleId(id),
        kind,
        peers: PeerSet::All,
        l4,
    };
    let policies = [
        vec![rule(
            1,
            RuleKind::Allow,
            Some(vec![L4Match::new(Protocol::Tcp, PortRange::single(80))]),
        )],
        vec![rule(
            1,
            RuleKind::Allow,
            Some(vec![L4Match::new(
                Protocol::Udp,
                PortRange::new(50, 60).expect("range"),
            )]),
        )],
        vec![rule(
            1,
            RuleKind::Allow,
            Some(vec![L4Match::new(Protocol::Sctp, PortRange::ANY)]),
        )],
        vec![rule(
            1,
            RuleKind::Allow,
            Some(vec![
                L4Match::icmp(Protocol::Icmp, Some(8)),
                L4Match::icmp(Protocol::Icmpv6, Some(128)),
            ]),
        )],
        vec![
            rule(1, RuleKind::Allow, None),
            rule(
                2,
                RuleKind::Deny,
                Some(vec![L4Match::new(Protocol::Tcp, PortRange::single(22))]),
            ),
        ],
        vec![],
    ];
    let (a4, b4) = ([192, 0, 2, 1], [192, 0, 2, 10]);
    let (a6, b6) = (
        "2001:db8::1".parse::<std::net::Ipv6Addr>().expect("v6"),
        "2001:db8::10".parse::<std::net::Ipv6Addr>().expect("v6"),
    );
    let packets: Vec<(Vec<u8>, Protocol, u16, bool)> = vec![
        (
            Packet::ipv4(a4, b4).tcp(1000, 80).build(),
            Protocol::Tcp,
            80,
            true,
        ),
        (
            Packet::ipv4(a4, b4).tcp(1000, 22).build(),
            Protocol::Tcp,
            22,
            true,
        ),
        (
            Packet::ipv4(a4, b4)
                .ipv4_options(&[1, 1, 1, 1])
                .tcp(1000, 80)
                .build(),
            Protocol::Tcp,
            80,
            true,
        ),
        (
            Packet::ipv4(a4, b4).udp(1000, 55).build(),
            Protocol::Udp,
            55,
            true,
        ),
        (
            Packet::ipv4(a4, b4).sctp(1000, 9).build(),
            Protocol::Sctp,
            9,
            true,
        ),
        (
            Packet::ipv4(a4, b4).icmp(8, 0).build(),
            Protocol::Icmp,
            8,
            true,
        ),
        (
            Packet::ipv6(a6, b6).tcp(1000, 80).build(),
            Protocol::Tcp,
            80,
            true,
        ),
        (
            Packet::ipv6(a6, b6)
                .ext_header(ExtHeader::HopByHop)
                .udp(1000, 55)
                .build(),
            Protocol::Udp,
            55,
            true,
        ),
        (
            Packet::ipv6(a6, b6).icmpv6(128, 0).build(),
            Protocol::Icmpv6,
            128,
            true,
        ),
        // A non-first fragment whose first fragment was never seen: dropped (175, fragment not found),
        // whatever policy says.
        (
            Packet::ipv4(a4, b4)
                .fragment(8, false)
                .udp(1000, 55)
                .build(),
            Protocol::Udp,
            55,
            false,
        ),
    ];
    let mut out = Vec::new();
    for (i, rules) in policies.iter().enumerate() {
        for direction in [Direction::Ingress, Direction::Egress] {
            let policy = DirectionPolicy {
                enforced: !rules.is_empty(),
                default_deny: true,
                allow_localhost: false,
                rules: rules.clone(),
            };
            // Private maps: aya would otherwise pin them under /sys/fs/bpf.
            let elf = compile::inline_direction_object(
                NumericIdentity(300),
                &policy,
                direction,
                MapPinning::Private,
            )
            .expect("compile");
            let runs = packets
                .iter()
                .map(|(pkt, proto, port, policy_applies)| {
                    let peer = PeerInfo::new(NumericIdentity::WORLD, None);
                    let allow = *policy_applies
                        && verdict_direction(&policy, direction, peer, *proto, *port).is_allow();
                    (
                        pkt.clone(),
                        if allow {
                            TC_ACT_OK as u32
                        } else {
                            TC_ACT_SHOT as u32
                        },
                    )
                })
                .collect();
            out.push(Case {
                name: format!("policy-{i}-{direction}"),
                elf,
                entry: lower::program_for(direction).0.into(),
                runs,
                setup: vec![],
            });
        }
    }
    out
}

fn map_lookup_case() -> Case {
    let mut f = FunctionBuilder::new("lookup", Hook::TcIngress);
    let map = f.map(MapDecl {
        name: "values".into(),
        kind: MapKind::Hash,
        key_size: 4,
        value_size: 8,
    });
    let slot = f.stack_slot(8);
    f.stack_store(slot, 0, 7i64, Size::W);
    let key = f.stack_addr(slot);
    let v = f.map_lookup(map, key);
    let (miss, hit) = (f.block(), f.block());
    f.branch_null(v, miss, hit);
    f.switch_to(miss);
    f.ret(1);
    f.switch_to(hit);
    let x = f.load(v, 0, Size::DW);
    let y = f.alu(AluOp::Add, x, 1);
    f.ret(y);
    let module = vec![f.finish().expect("build")];
    Case {
        name: "hash-lookup".into(),
        elf: object(&module),
        entry: "lookup".into(),
        runs: vec![(
            Packet::ipv4([192, 0, 2, 1], [192, 0, 2, 2])
                .udp(1, 2)
                .build(),
            42,
        )],
        setup: vec![Setup::Map {
            map: "values".into(),
            key: 7u32.to_le_bytes().to_vec(),
            value: 41u64.to_le_bytes().to_vec(),
        }],
    }
}

fn tail_call_case() -> Case {
    let mut main = FunctionBuilder::new("entry", Hook::TcIngress);
    let jt = main.map(MapDecl {
        name: "jt".into(),
        kind: MapKind::ProgArray,
        key_size: 4,
        value_size: 4,
    });
    main.tail_call(jt, 0i64);
    main.ret(5);
    let mut target = FunctionBuilder::new("target", Hook::TcIngress);
    target.ret(9);
    let module = vec![
        main.finish().expect("main"),
        target.finish().expect("target"),
    ];
    Case {
        name: "tail-call".into(),
        elf: object(&module),
        entry: "entry".into(),
        runs: vec![(
            Packet::ipv4([192, 0, 2, 1], [192, 0, 2, 2])
                .udp(1, 2)
                .build(),
            9,
        )],
        setup: vec![Setup::ProgSlot {
            map: "jt".into(),
            index: 0,
            program: "target".into(),
        }],
    }
}

fn ringbuf_case() -> Case {
    let mut f = FunctionBuilder::new("events", Hook::TcIngress);
    let rb = f.map(MapDecl {
        name: "ring".into(),
        kind: MapKind::RingBuf,
        key_size: 0,
        value_size: 0,
    });
    let slot = f.stack_slot(16);
    f.stack_store(slot, 0, 0x1122_3344i64, Size::DW);
    f.stack_store(slot, 8, 0i64, Size::DW);
    let m = f.load_map(rb);
    let p = f.stack_addr(slot);
    let r = f.call(
        &hooks::RINGBUF_OUTPUT,
        &[m.into(), p.into(), 16i64.into(), 0i64.into()],
    );
    let (ok, bad) = (f.block(), f.block());
    f.branch(Cond::Eq, r, 0, ok, bad);
    f.switch_to(ok);
    f.ret(3);
    f.switch_to(bad);
    f.ret(4);
    let module = vec![f.finish().expect("build")];
    Case {
        name: "ringbuf".into(),
        elf: object(&module),
        entry: "events".into(),
        runs: vec![(random_packet(3, 64), 3)],
        setup: vec![],
    }
}

/// ~7,000 rules of compare-and-branch: over 40,000 instructions, so long jumps are needed.
fn long_case() -> Case {
    let mut f = FunctionBuilder::new("chain", Hook::TcIngress);
    let (drop, allow) = (f.block(), f.block());
    let data = f.load_ctx("data");
    let end = f.load_ctx("data_end");
    f.check_packet_bounds(data, end, 38, drop);
    let be = f.load(data, 36, Size::H);
    let dport = f.bswap(16, be);
    for r in 0..7000i64 {
        let next = f.block();
        let t = f.alu(AluOp::Xor, dport, 0x1234 + r);
        let t = f.alu(AluOp::And, t, 0xffff);
        let t = f.alu(AluOp::Add, t, r);
        let key = if r == 6500 {
            ((8080 ^ (0x1234 + r)) & 0xffff) + r
        } else {
            0x7fff_0000 + r
        };
        f.branch(Cond::Eq, t, key, allow, next);
        f.switch_to(next);
    }
    f.jump(drop);
    f.switch_to(allow);
    f.ret(TC_ACT_OK);
    f.switch_to(drop);
    f.ret(TC_ACT_SHOT);
    let module = vec![f.finish().expect("build")];
    let code = codegen::compile(&module).expect("codegen");
    assert!(
        code[0].insns.len() > 40_000,
        "{} instructions",
        code[0].insns.len()
    );
    let a = [192, 0, 2, 1];
    Case {
        name: "long-jumps".into(),
        elf: object(&module),
        entry: "chain".into(),
        runs: vec![
            (Packet::ipv4(a, a).tcp(1, 8080).build(), TC_ACT_OK as u32),
            (Packet::ipv4(a, a).tcp(1, 8081).build(), TC_ACT_SHOT as u32),
        ],
        setup: vec![],
    }
}

fn run_case(case: &Case, obj: &LoadedObject) {
    for s in &case.setup {
        match s {
            Setup::Map { map, key, value } => obj
                .map(map)
                .expect("map")
                .update(key, value, 0)
                .expect("map update"),
            Setup::ProgSlot {
                map,
                index,
                program,
            } => {
                let fd = obj.program(program).expect("program").fd().as_raw_fd() as u32;
                obj.map(map)
                    .expect("prog array")
                    .update(&index.to_le_bytes(), &fd.to_le_bytes(), 0)
                    .expect("slot");
            }
        }
    }
    let prog = obj.program(&case.entry).expect("entry program");
    for (i, (packet, want)) in case.runs.iter().enumerate() {
        let got = prog.run(packet).expect("test run").retval;
        assert_eq!(
            got, *want,
            "{}: run {i} returned {got}, expected {want}",
            case.name
        );
    }
}

fn objdump(path: &std::path::Path) -> Option<String> {
    let out = Command::new("llvm-objdump-19")
        .arg("-d")
        .arg(path)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "llvm-objdump-19 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn fifty_generated_programs_pass_every_loader_disassembler_and_test_run() {
    let Some(_kernel) = kernel_or_skip!() else {
        return;
    };
    let mut cases = random_cases();
    cases.extend(policy_cases());
    cases.extend([
        map_lookup_case(),
        tail_call_case(),
        ringbuf_case(),
        long_case(),
    ]);
    assert!(cases.len() >= 50, "only {} programs", cases.len());
    let have_objdump = Command::new("llvm-objdump-19")
        .arg("--version")
        .output()
        .is_ok();
    assert!(
        have_objdump || std::env::var("CI").is_err(),
        "llvm-objdump-19 missing in CI (run .ci/deps)"
    );
    for case in &cases {
        // (a) + (d)
        let obj =
            load_object_raw(&case.elf).unwrap_or_else(|e| panic!("{}: verifier: {e}", case.name));
        run_case(case, &obj);
        // (b)
        let tmp = TempObject::new(&case.elf).expect("temp file");
        bpftool_loadall(&tmp.path).unwrap_or_else(|e| panic!("{}: bpftool: {e}", case.name));
        tc_attach_check(&tmp.path, "classifier")
            .unwrap_or_else(|e| panic!("{}: tc: {e}", case.name));
        load_object_aya(&case.elf).unwrap_or_else(|e| panic!("{}: aya: {e}", case.name));
        // (c)
        if let Some(theirs) = objdump(&tmp.path) {
            let ours = disassemble_object(&case.elf, &tmp.path.display().to_string())
                .expect("disassemble");
            assert_eq!(
                ours, theirs,
                "{}: ciliumc disasm differs from llvm-objdump-19 -d",
                case.name
            );
        } else {
            eprintln!(
                "SKIPPED (c) for {}: llvm-objdump-19 not installed",
                case.name
            );
        }
    }
    let _harden = JitHardenGuard::set(2).expect("set bpf_jit_harden");
    for case in &cases {
        let obj = load_object_raw(&case.elf)
            .unwrap_or_else(|e| panic!("{} (jit_harden=2): verifier: {e}", case.name));
        run_case(case, &obj);
    }
    eprintln!(
        "{} programs: verifier, bpftool, tc, aya, llvm-objdump, test runs, and again hardened",
        cases.len()
    );
}
