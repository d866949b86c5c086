//! Hand-encoded programs written by the ELF writer, each loaded through raw `bpf()`, aya,
//! `bpftool prog loadall` and iproute2, and run with `BPF_PROG_TEST_RUN` (also under
//! `bpf_jit_harden=2`).

mod common;

use std::net::Ipv6Addr;

use ciliumc_targets::elf::{FuncLinkage, FuncSignature, ObjectWriter, ParamType, ReturnType};
use ciliumc_targets::isa::opcode::{BPF_ADD, BPF_JNE, BPF_W};
use ciliumc_tests::insn::*;
use ciliumc_tests::packet::{ETH_P_ARP, ExtHeader, IPPROTO_SCTP, Packet};
use ciliumc_tests::sys;
use ciliumc_tests::{LoadOptions, kernel_or_skip, load_object_raw, load_object_raw_with};
use common::*;

fn v4(last: u8) -> [u8; 4] {
    [198, 51, 100, last]
}
const SRC4: [u8; 4] = [192, 0, 2, 1];

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

#[test]
fn return_constant_tc() {
    let Some(_k) = kernel_or_skip!() else { return };
    let obj = return_constant("classifier", 42);
    let pkt = Packet::ipv4(SRC4, v4(2)).udp(1, 2).build();
    check_everywhere(&obj, "prog", "classifier", &|_| {}, &[(pkt, 42)]);
}

#[test]
fn return_constant_xdp() {
    let Some(_k) = kernel_or_skip!() else { return };
    let obj = return_constant("xdp", 2);
    let pkt = Packet::ipv6(v6("2001:db8::1"), v6("2001:db8::2"))
        .tcp(1, 2)
        .build();
    check_everywhere(&obj, "prog", "xdp", &|_| {}, &[(pkt, 2)]);
}

/// `truncated`: include an IPv4 frame cut inside its header; the kernel refuses such frames for
/// skb test runs (it pulls the IP header before the program runs), so only XDP sees them.
fn l3_cases(truncated: bool) -> Vec<Case> {
    let a = v6("2001:db8::1");
    let b = v6("2001:db8::2");
    let mut cases = vec![
        (Packet::ipv4(SRC4, v4(2)).tcp(1234, 80).build(), 6),
        (Packet::ipv4(SRC4, v4(2)).udp(1234, 53).build(), 17),
        (
            Packet::ipv4(SRC4, v4(2)).sctp(1234, 5000).build(),
            u32::from(IPPROTO_SCTP),
        ),
        (Packet::ipv4(SRC4, v4(2)).icmp(8, 0).build(), 1),
        (
            Packet::ipv4(SRC4, v4(2))
                .ipv4_options(&[1, 1, 1, 1])
                .fragment(10, false)
                .udp(1, 2)
                .build(),
            17,
        ),
        (Packet::ipv6(a, b).tcp(1, 443).build(), 256 + 6),
        (Packet::ipv6(a, b).icmpv6(128, 0).build(), 256 + 58),
        (
            Packet::ipv6(a, b)
                .ext_header(ExtHeader::HopByHop)
                .udp(1, 2)
                .build(),
            256,
        ),
        (Packet::ethernet(ETH_P_ARP).payload(&[0; 28]).build(), 1000),
    ];
    if truncated {
        cases.push((Packet::ethernet(0x0800).payload(&[0x45; 10]).build(), 2000));
    }
    cases
}

#[test]
fn parse_ethernet_and_ip_tc() {
    let Some(_k) = kernel_or_skip!() else { return };
    let obj = parse_l3("classifier", SKB_DATA, SKB_DATA_END);
    check_everywhere(&obj, "prog", "classifier", &|_| {}, &l3_cases(false));
}

#[test]
fn parse_ethernet_and_ip_xdp() {
    let Some(_k) = kernel_or_skip!() else { return };
    let obj = parse_l3("xdp", XDP_DATA, XDP_DATA_END);
    check_everywhere(&obj, "prog", "xdp", &|_| {}, &l3_cases(true));
}

#[test]
fn hash_map_lookup_with_null_check() {
    let Some(_k) = kernel_or_skip!() else { return };
    let obj = hash_lookup();
    let setup = |l: &Loaded<'_>| {
        let m = l.map("verdicts");
        assert_eq!((m.spec.key_size, m.spec.value_size), (4, 8));
        let mut value = 7u32.to_ne_bytes().to_vec();
        value.extend_from_slice(&99u32.to_ne_bytes());
        m.update(&v4(2), &value, 0).unwrap();
        assert_eq!(m.lookup(&v4(2)).unwrap(), Some(value));
        assert_eq!(m.lookup(&v4(3)).unwrap(), None);
    };
    let cases = vec![
        (Packet::ipv4(SRC4, v4(2)).tcp(1, 80).build(), 7),
        (Packet::ipv4(SRC4, v4(3)).tcp(1, 80).build(), 0),
        (
            Packet::ipv6(v6("2001:db8::1"), v6("2001:db8::2"))
                .tcp(1, 80)
                .build(),
            0,
        ),
    ];
    check_everywhere(&obj, "prog", "classifier", &setup, &cases);
}

#[test]
fn array_map_counter_and_other_map_types() {
    let Some(_k) = kernel_or_skip!() else { return };
    let obj = array_counter();
    let pkt = Packet::ipv4(SRC4, v4(2)).udp(1, 2).build();
    let setup = |l: &Loaded<'_>| {
        for (name, ty) in [
            ("counters", 2),
            ("pcpu_array", 6),
            ("pcpu_hash", 5),
            ("lru", 9),
            ("lru_pcpu", 10),
        ] {
            assert_eq!(l.map(name).spec.map_type, ty, "type of {name}");
        }
        assert_eq!(l.map("lru").spec.key_size, 12);
    };
    let cases = vec![(pkt.clone(), 1), (pkt.clone(), 2), (pkt, 3)];
    check_everywhere(&obj, "prog", "classifier", &setup, &cases);
}

#[test]
fn lpm_trie_longest_prefix() {
    let Some(_k) = kernel_or_skip!() else { return };
    let obj = lpm_lookup();
    let key = |len: u32, addr: [u8; 4]| {
        let mut k = len.to_ne_bytes().to_vec();
        k.extend_from_slice(&addr);
        k
    };
    let setup = |l: &Loaded<'_>| {
        let m = l.map("prefixes");
        assert_eq!(m.spec.map_flags & 1, 1, "BPF_F_NO_PREALLOC");
        m.update(&key(24, v4(0)), &5u32.to_ne_bytes(), 0).unwrap();
        m.update(&key(25, v4(128)), &6u32.to_ne_bytes(), 0).unwrap();
    };
    let cases = vec![
        (Packet::ipv4(SRC4, v4(2)).tcp(1, 80).build(), 5),
        (Packet::ipv4(SRC4, v4(200)).tcp(1, 80).build(), 6),
        (Packet::ipv4(SRC4, [203, 0, 113, 1]).tcp(1, 80).build(), 0),
    ];
    check_everywhere(&obj, "prog", "classifier", &setup, &cases);
}

#[test]
fn bpf_to_bpf_calls_static_and_global() {
    let Some(_k) = kernel_or_skip!() else { return };
    for btf_ext in [true, false] {
        let obj = bpf_to_bpf_call(btf_ext);
        let small = Packet::ipv4(SRC4, v4(2)).udp(1, 2).build();
        let big = Packet::ipv4(SRC4, v4(2))
            .udp(1, 2)
            .payload(&[0; 100])
            .build();
        let cases = vec![
            (small.clone(), 42 + small.len() as u32),
            (big.clone(), 42 + big.len() as u32),
        ];
        check_everywhere(&obj, "prog", "classifier", &|_| {}, &cases);
    }
}

#[test]
fn global_subprogram_is_verified_on_its_own() {
    let Some(_k) = kernel_or_skip!() else { return };
    let opts = LoadOptions {
        verifier_log_level: 1,
    };
    // With BTF func_info the kernel verifies `pkt_len` once as a global function.
    let loaded = load_object_raw_with(&bpf_to_bpf_call(true), opts).unwrap();
    let program = loaded.program("prog").unwrap();
    // "is safe for any args that match its prototype" since 6.8, "is global and valid" before.
    let global =
        |log: &str| log.contains("is safe for any args") || log.contains("is global and valid");
    assert!(
        program.log.contains("('pkt_len') is") && global(&program.log),
        "log:\n{}",
        program.log
    );
    assert!(program.verified_insns() > 0);
    assert_eq!(sys::prog_info(program.fd()).unwrap().name, "prog");
    // Without it, subprograms are static and analysed within the caller.
    let loaded = load_object_raw_with(&bpf_to_bpf_call(false), opts).unwrap();
    let log = &loaded.program("prog").unwrap().log;
    assert!(!global(log), "log:\n{log}");
    assert!(log.contains("processed"), "log:\n{log}");
}

#[test]
fn global_subprogram_signature_is_enforced() {
    let Some(_k) = kernel_or_skip!() else { return };
    // Declaring the context argument of a global function as a scalar makes the kernel refuse
    // its context read: proof that the kernel uses the func_info we write.
    let main = Asm::new()
        .call("peek")
        .push(exit())
        .finish("prog", "classifier");
    let peek = Asm::new()
        .push(ldx(BPF_W, R0, R1, SKB_LEN))
        .push(exit())
        .finish("peek", ".text");
    let scalar = FuncSignature {
        linkage: FuncLinkage::Global,
        params: vec![("x".into(), ParamType::Scalar { bytes: 8 })],
        returns: ReturnType::Int,
    };
    let obj = ObjectWriter::new()
        .function(main.clone())
        .function(peek.clone())
        .signature("peek", scalar)
        .write()
        .unwrap();
    let err = load_object_raw(&obj).unwrap_err();
    let log = err.verifier_log().expect("verifier error");
    assert!(log.contains("peek"), "log:\n{log}");
    let ctx = FuncSignature {
        linkage: FuncLinkage::Global,
        params: vec![("ctx".into(), ParamType::Ctx("__sk_buff".into()))],
        returns: ReturnType::Int,
    };
    let obj = ObjectWriter::new()
        .function(main)
        .function(peek)
        .signature("peek", ctx)
        .write()
        .unwrap();
    let pkt = Packet::ipv4(SRC4, v4(2)).udp(1, 2).build();
    check_everywhere(
        &obj,
        "prog",
        "classifier",
        &|_| {},
        &[(pkt.clone(), pkt.len() as u32)],
    );
}

#[test]
fn tail_call_through_prog_array() {
    let Some(_k) = kernel_or_skip!() else { return };
    let obj = tail_call();
    let pkt = Packet::ipv4(SRC4, v4(2)).udp(1, 2).build();
    // Empty slot: the tail call falls through.
    check_everywhere(&obj, "prog", "classifier", &|_| {}, &[(pkt.clone(), 1)]);
    let fill = |l: &Loaded<'_>| l.set_tail_call("jumps", 0, "target");
    check_everywhere(&obj, "prog", "classifier", &fill, &[(pkt, 42)]);
}

#[test]
fn ringbuf_output_reaches_user_space() {
    let Some(_k) = kernel_or_skip!() else { return };
    let obj = ringbuf_output();
    let pkt = Packet::ipv4(SRC4, v4(2)).udp(1, 2).build();
    check_everywhere(&obj, "prog", "classifier", &|_| {}, &[(pkt.clone(), 0)]);

    let mut ebpf = ciliumc_tests::load_object_aya(&obj).unwrap();
    let fd = ciliumc_tests::loader::aya_program_fd(&ebpf, "prog").unwrap();
    assert_eq!(ciliumc_tests::sys::test_run(fd, &pkt, 1).unwrap().retval, 0);
    let mut ring = aya::maps::RingBuf::try_from(ebpf.map_mut("events").unwrap()).unwrap();
    let item = ring.next().expect("one record");
    assert_eq!(&*item, &RINGBUF_RECORD.to_ne_bytes());
}

#[test]
fn large_program_loads_everywhere() {
    let Some(_k) = kernel_or_skip!() else { return };
    // 40,000 slots: beyond BPF_MAXINSNS (4096) and the 16-bit jump range (hence `gotol`). The
    // body adds a register, not an immediate: with bpf_jit_harden=2 the kernel blinds every
    // immediate by patching the program one instruction at a time, which took 31 s for 40,000
    // `r0 += 1` on this machine (6.18), against 0.2 s without hardening.
    const N: usize = 40_000;
    let mut a = Asm::new();
    a.push(mov64_imm(R0, 0));
    a.push(mov64_imm(R2, 1));
    a.jmp_imm_to(BPF_JNE, R1, 0, "body");
    a.gotol_to("end");
    a.label("body");
    for _ in 0..N - 6 {
        a.push(alu64_reg(BPF_ADD, R0, R2));
    }
    a.label("end").push(exit());
    let f = a.finish("prog", "classifier");
    assert_eq!(f.insns.len(), N - 1);
    let obj = ObjectWriter::new().function(f).write().unwrap();
    let pkt = Packet::ipv4(SRC4, v4(2)).udp(1, 2).build();
    check_everywhere(
        &obj,
        "prog",
        "classifier",
        &|_| {},
        &[(pkt, (N - 6) as u32)],
    );
}
