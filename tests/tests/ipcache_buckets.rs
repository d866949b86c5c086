//! The ipcache's bucket arrays in the kernel (`lower::ipcache`): host routes that share one
//! bucket, more than it has ways, each get their own identity; an address of that bucket that no
//! route has is world; and `ciliumc_ipcinfo.buckets` decides whether programs trust the buckets
//! or go to the exact-match maps.
//!
//! Each of the N colliding addresses gets identity `BASE + i`, and rule `i` allows identity
//! `BASE + i` on TCP port `PORT + i`: a packet from address `i` to port `PORT + j` is allowed
//! exactly when `i == j`, so the verdicts show which identity the program found. The packets only
//! go to `BPF_PROG_TEST_RUN`; the IPv4 addresses come from 10.0.0.0/8 because the documentation
//! ranges are too small to hold six addresses of one bucket.

mod policygen;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ciliumc_compiler::lower::ipcache::bucket_index;
use ciliumc_compiler::lower::{self, maps};
use ciliumc_ir::cidr::Cidr;
use ciliumc_ir::identity::NumericIdentity;
use ciliumc_ir::policy::{
    Direction, DirectionPolicy, L4Match, PeerSet, PortRange, Protocol, Rule, RuleId, RuleKind,
};
use ciliumc_tests::kernel_or_skip;
use ciliumc_tests::loader::{LoadedObject, load_object_raw};
use policygen::*;

const BASE: u32 = 50_000;
const PORT: u16 = 1000;
/// Colliding addresses in the ipcache: more than a bucket's ways, so some overflow.
const ROUTES: usize = maps::BUCKET_WAYS + 2;

/// `n` addresses of each family that share bucket 11.
fn colliding(n: usize) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    let v4 = (0..1u32 << 24)
        .map(|i| Ipv4Addr::from(0x0a00_0000 | i))
        .filter(|a| bucket_index(&a.octets(), maps::IPC4_BUCKET_BITS) == 11)
        .take(n)
        .collect();
    let v6 = (0..u32::MAX)
        .map(|i| Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, (i >> 16) as u16, i as u16))
        .filter(|a| bucket_index(&a.octets(), maps::IPC6_BUCKET_BITS) == 11)
        .take(n)
        .collect();
    (v4, v6)
}

fn policy() -> DirectionPolicy {
    DirectionPolicy::enforced(
        Direction::Ingress,
        (0..ROUTES as u32)
            .map(|i| Rule {
                id: RuleId(i + 1),
                kind: RuleKind::Allow,
                peers: PeerSet::identities([NumericIdentity(BASE + i)]),
                l4: Some(vec![L4Match::new(
                    Protocol::Tcp,
                    PortRange::single(PORT + i as u16),
                )]),
            })
            .collect(),
    )
}

fn verdict(obj: &LoadedObject, peer: IpAddr, port: u16) -> u32 {
    let packet = match peer {
        IpAddr::V4(a) => ciliumc_tests::Packet::ipv4(a, ENDPOINT_V4)
            .tcp(40000, port)
            .build(),
        IpAddr::V6(a) => ciliumc_tests::Packet::ipv6(a, ENDPOINT_V6)
            .tcp(40000, port)
            .build(),
    };
    let (name, _) = lower::program_for(Direction::Ingress);
    let out = obj
        .program(name)
        .expect("program")
        .run(&packet)
        .expect("test run");
    let ct = obj.map(maps::CT).expect("ct map");
    for k in ct.keys().expect("ct keys") {
        ct.delete(&k).expect("ct delete");
    }
    out.retval
}

/// For each address, the index of the one port it is allowed to (None: none, as world).
fn allowed_ports(obj: &LoadedObject, peers: &[IpAddr]) -> Vec<Option<usize>> {
    peers
        .iter()
        .map(|&peer| {
            let allowed: Vec<usize> = (0..ROUTES)
                .filter(|&j| verdict(obj, peer, PORT + j as u16) == 0)
                .collect();
            assert!(allowed.len() <= 1, "{peer} allowed to {allowed:?}");
            allowed.first().copied()
        })
        .collect()
}

fn set_buckets_flag(obj: &LoadedObject, on: bool) {
    let info = obj.map(maps::IPCACHE_INFO).expect("info map");
    let mut value = info
        .lookup(&0u32.to_le_bytes())
        .expect("info lookup")
        .expect("entry 0");
    value[8..12].copy_from_slice(&u32::from(on).to_le_bytes());
    info.update(&0u32.to_le_bytes(), &value, 0)
        .expect("info update");
}

#[test]
fn colliding_host_routes_each_find_their_identity() {
    let Some(_k) = kernel_or_skip!() else {
        return;
    };
    let (v4, v6) = colliding(ROUTES + 1);
    let obj = load_object_raw(&private_object(&policy(), Direction::Ingress)).expect("load");
    let mut ipcache: Vec<(Cidr, u32)> = Vec::new();
    for i in 0..ROUTES {
        ipcache.push((Cidr::host(IpAddr::V4(v4[i])), BASE + i as u32));
        ipcache.push((Cidr::host(IpAddr::V6(v6[i])), BASE + i as u32));
    }
    fill_ipcache_compiled(&obj, &ipcache);
    // Both families' bucket 11 is full and says so.
    for name in [maps::IPCACHE4_BUCKETS, maps::IPCACHE6_BUCKETS] {
        let bucket = obj
            .map(name)
            .expect("bucket map")
            .lookup(&11u32.to_le_bytes())
            .expect("lookup")
            .expect("bucket 11");
        assert_eq!(&bucket[0..4], &1u32.to_le_bytes(), "{name}: overflow");
    }
    let peers: Vec<IpAddr> = v4
        .iter()
        .map(|a| IpAddr::V4(*a))
        .chain(v6.iter().map(|a| IpAddr::V6(*a)))
        .collect();
    let want: Vec<Option<usize>> = (0..2)
        .flat_map(|_| (0..ROUTES).map(Some).chain([None]))
        .collect();
    assert_eq!(allowed_ports(&obj, &peers), want, "buckets on");
    set_buckets_flag(&obj, false);
    assert_eq!(allowed_ports(&obj, &peers), want, "buckets off");
}

/// With the buckets on, the program takes the identity from the bucket; off, from the exact-match
/// map. (A bucket that disagrees with the map is what a reader would see in the middle of a
/// rewrite, which is why `ciliumc agent` turns the buckets off while it writes them.)
#[test]
fn the_buckets_flag_chooses_between_buckets_and_exact_map() {
    let Some(_k) = kernel_or_skip!() else {
        return;
    };
    let peer = Ipv4Addr::new(192, 0, 2, 77);
    let obj = load_object_raw(&private_object(&policy(), Direction::Ingress)).expect("load");
    fill_ipcache_compiled(&obj, &[(Cidr::host(IpAddr::V4(peer)), BASE)]);
    let index = bucket_index(&peer.octets(), maps::IPC4_BUCKET_BITS).to_le_bytes();
    let buckets = obj.map(maps::IPCACHE4_BUCKETS).expect("bucket map");
    let mut bucket = buckets.lookup(&index).expect("lookup").expect("bucket");
    let id_at = maps::BUCKET_HEADER_BYTES as usize + 4;
    assert_eq!(&bucket[id_at..id_at + 4], &BASE.to_le_bytes());
    bucket[id_at..id_at + 4].copy_from_slice(&(BASE + 2).to_le_bytes());
    buckets.update(&index, &bucket, 0).expect("bucket update");
    let peers = [IpAddr::V4(peer)];
    assert_eq!(allowed_ports(&obj, &peers), vec![Some(2)], "buckets on");
    set_buckets_flag(&obj, false);
    assert_eq!(allowed_ports(&obj, &peers), vec![Some(0)], "buckets off");
}
