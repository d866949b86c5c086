//! Hand-encoded programs written by the ELF writer, each loaded through raw `bpf()`, aya,
//! `bpftool prog loadall` and iproute2, and run with `BPF_PROG_TEST_RUN` (also under
//! `bpf_jit_harden=2`).

mod common;

use std::net::Ipv6Addr;

use ciliumc_tests::kernel_or_skip;
use ciliumc_tests::packet::{ETH_P_ARP, ExtHeader, IPPROTO_SCTP, Packet};
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
    let pkt = Packet::ipv6(v6("2001:db8::1"), v6("2001:db8::2")).tcp(1, 2).build();
    check_everywhere(&obj, "prog", "xdp", &|_| {}, &[(pkt, 2)]);
}

fn l3_cases() -> Vec<Case> {
    let a = v6("2001:db8::1");
    let b = v6("2001:db8::2");
    vec![
        (Packet::ipv4(SRC4, v4(2)).tcp(1234, 80).build(), 6),
        (Packet::ipv4(SRC4, v4(2)).udp(1234, 53).build(), 17),
        (Packet::ipv4(SRC4, v4(2)).sctp(1234, 5000).build(), u32::from(IPPROTO_SCTP)),
        (Packet::ipv4(SRC4, v4(2)).icmp(8, 0).build(), 1),
        (Packet::ipv4(SRC4, v4(2)).ipv4_options(&[1, 1, 1, 1]).fragment(10, false).udp(1, 2).build(), 17),
        (Packet::ipv6(a, b).tcp(1, 443).build(), 256 + 6),
        (Packet::ipv6(a, b).icmpv6(128, 0).build(), 256 + 58),
        (Packet::ipv6(a, b).ext_header(ExtHeader::HopByHop).udp(1, 2).build(), 256),
        (Packet::ethernet(ETH_P_ARP).payload(&[0; 28]).build(), 1000),
        // An IPv4 EtherType with a truncated header.
        (Packet::ethernet(0x0800).payload(&[0x45; 10]).build(), 2000),
    ]
}

#[test]
fn parse_ethernet_and_ip_tc() {
    let Some(_k) = kernel_or_skip!() else { return };
    let obj = parse_l3("classifier", SKB_DATA, SKB_DATA_END);
    check_everywhere(&obj, "prog", "classifier", &|_| {}, &l3_cases());
}

#[test]
fn parse_ethernet_and_ip_xdp() {
    let Some(_k) = kernel_or_skip!() else { return };
    let obj = parse_l3("xdp", XDP_DATA, XDP_DATA_END);
    check_everywhere(&obj, "prog", "xdp", &|_| {}, &l3_cases());
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
        (Packet::ipv6(v6("2001:db8::1"), v6("2001:db8::2")).tcp(1, 80).build(), 0),
    ];
    check_everywhere(&obj, "prog", "classifier", &setup, &cases);
}

#[test]
fn array_map_counter_and_other_map_types() {
    let Some(_k) = kernel_or_skip!() else { return };
    let obj = array_counter();
    let pkt = Packet::ipv4(SRC4, v4(2)).udp(1, 2).build();
    let setup = |l: &Loaded<'_>| {
        for (name, ty) in [("counters", 2), ("pcpu_array", 6), ("pcpu_hash", 5), ("lru", 9), ("lru_pcpu", 10)] {
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
        let big = Packet::ipv4(SRC4, v4(2)).udp(1, 2).payload(&[0; 100]).build();
        let cases = vec![(small.clone(), 42 + small.len() as u32), (big.clone(), 42 + big.len() as u32)];
        check_everywhere(&obj, "prog", "classifier", &|_| {}, &cases);
    }
}

#[test]
fn global_subprogram_is_verified_on_its_own() {
    let Some(_k) = kernel_or_skip!() else { return };
    // With BTF func_info the kernel verifies `pkt_len` as a global function ("Func#N ... is
    // global and valid"); without it, the subprogram is inlined into the caller's analysis.
    let obj = bpf_to_bpf_call(true);
    let loaded = ciliumc_tests::load_object_raw(&obj).unwrap();
    let program = loaded.program("prog").unwrap();
    assert!(program.verified_insns() > 0);
    let info = ciliumc_tests::sys::prog_info(program.fd()).unwrap();
    assert_eq!(info.name, "prog");
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
