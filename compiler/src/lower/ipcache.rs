//! The peer's identity: the ipcache lookup every new flow makes, and the bucket arrays that let
//! most of them finish without a helper call.
//!
//! In: the parsed flow key (family and peer address). Out: the peer's numeric identity in a
//! register, and control at the decision. The order of the lookups:
//!
//! 1. **Buckets** (`ciliumc_ipc4bkt` / `ciliumc_ipc6bkt`, arrays): the address hashes to one
//!    bucket of [`maps::BUCKET_WAYS`] (address, identity) ways, compared in code. An array
//!    lookup is inlined by the verifier, so a hit costs no call: the exact-match hash map's lookup
//!    (a call into `__htab_map_lookup_elem`, jhash and a bucket walk) measured 35–45 ns of a new
//!    flow's ~100 ns here. The compiler places the entries (`bucket_entries`); a bucket that could
//!    not take all of its addresses says so (`overflow`), and only then does a miss go on to...
//! 2. **the exact-match hash maps** (`ciliumc_ipc4` / `ciliumc_ipc6`), which hold every host
//!    route whether or not a bucket holds it too. They are the authority: the buckets are used
//!    only while `ciliumc_ipcinfo.buckets` is 1, which whoever writes the buckets clears while
//!    rewriting them (`ciliumc agent` does), so a bucket read half-written never hides an address.
//! 3. **the LPM trie**, for CIDR identities, asked only when it holds prefixes of the family.
//! 4. A miss everywhere is world.

use std::net::IpAddr;

use ciliumc_ir::identity::NumericIdentity;
use ciliumc_targets::codegen::{
    AluOp, BlockId, Cond, FunctionBuilder, MapId, Size, SlotId, VReg, Width,
};

use super::maps::{self, Entries, FAMILY_IPV4, FAMILY_IPV6};
use super::parse;

/// The maps the lookup reads, as declared in the program.
pub(crate) struct IpcacheMaps {
    pub trie: MapId,
    pub info: MapId,
    /// IPv4, IPv6.
    pub exact: [MapId; 2],
    pub buckets: [MapId; 2],
}

impl IpcacheMaps {
    pub fn declare(f: &mut FunctionBuilder) -> Self {
        IpcacheMaps {
            trie: f.map(maps::ipcache_decl()),
            info: f.map(maps::ipcache_info_decl()),
            exact: [
                f.map(maps::ipcache_exact_decl(FAMILY_IPV4)),
                f.map(maps::ipcache_exact_decl(FAMILY_IPV6)),
            ],
            buckets: [
                f.map(maps::ipcache_buckets_decl(FAMILY_IPV4)),
                f.map(maps::ipcache_buckets_decl(FAMILY_IPV6)),
            ],
        }
    }
}

/// Family index 0 (IPv4) or 1 (IPv6) → (family word, address words, bucket bits).
const FAMILIES: [(u32, u32, u32); 2] = [
    (FAMILY_IPV4, 1, maps::IPC4_BUCKET_BITS),
    (FAMILY_IPV6, 4, maps::IPC6_BUCKET_BITS),
];

/// Emits the lookup of the peer of `flow_key` (family in `family`): `remote` holds its identity
/// when control reaches `decide`.
pub(crate) fn emit_peer_identity(
    f: &mut FunctionBuilder,
    m: &IpcacheMaps,
    family: VReg,
    flow_key: SlotId,
    remote: VReg,
    decide: BlockId,
) {
    let world = f.block();
    let tries = [f.block(), f.block()];
    emit_trie(f, m.trie, flow_key, tries, remote, world, decide);

    let info = f.map_lookup_u32(m.info, 0i64);
    let with_info = f.block();
    // A one-entry array always has its entry 0 (the verifier knows it, and prunes this branch);
    // the check is for the verifier of kernels that do not.
    f.branch_null(info, world, with_info);

    f.switch_to(with_info);
    let families = [f.block(), f.block()];
    f.branch32(
        Cond::Eq,
        family,
        i64::from(FAMILY_IPV4),
        families[0],
        families[1],
    );
    for i in 0..2 {
        let (_, words, bits) = FAMILIES[i];
        f.switch_to(families[i]);
        let exact = f.block();
        let not_exact = f.block();
        let probe = f.block();
        let use_buckets = f.load(info, maps::IPCACHE_INFO_BUCKETS_OFF, Size::W);
        f.branch32(Cond::Eq, use_buckets, 0, exact, probe);

        f.switch_to(probe);
        emit_bucket_probe(
            f,
            m.buckets[i],
            flow_key,
            words,
            bits,
            remote,
            decide,
            exact,
            not_exact,
        );

        f.switch_to(exact);
        emit_exact(f, m.exact[i], flow_key, words, remote, decide, not_exact);

        // Not a host route: the trie, if it holds prefixes of this family.
        f.switch_to(not_exact);
        let prefixes = f.load(info, 4 * i as i32, Size::W);
        f.branch32(Cond::Eq, prefixes, 0, world, tries[i]);
    }

    f.switch_to(world);
    f.assign_const(remote, i64::from(NumericIdentity::WORLD.0));
    f.jump(decide);
}

/// The peer address's word `i` (as loaded from the packet: little-endian of network bytes).
fn peer_word(f: &mut FunctionBuilder, flow_key: SlotId, i: u32) -> VReg {
    f.stack_load(flow_key, parse::KEY_PEER_ADDR + 4 * i, Size::W)
}

/// The exact-match hash map: a hit sets `remote` and goes to `decide`, a miss to `miss`.
fn emit_exact(
    f: &mut FunctionBuilder,
    exact: MapId,
    flow_key: SlotId,
    words: u32,
    remote: VReg,
    decide: BlockId,
    miss: BlockId,
) {
    let key = f.stack_slot(4 * words);
    for i in 0..words {
        let w = peer_word(f, flow_key, i);
        f.stack_store(key, 4 * i, w, Size::W);
    }
    let key_ptr = f.stack_addr(key);
    let hit = f.map_lookup(exact, key_ptr);
    let found = f.block();
    f.branch_null(hit, miss, found);
    f.switch_to(found);
    let id = f.load(hit, 0, Size::W);
    f.assign(remote, id);
    f.jump(decide);
}

/// The address's bucket: a way holding the address (with a non-zero identity) sets `remote` and
/// goes to `decide`; otherwise `overflowed` if the bucket could not hold all of its addresses,
/// else `not_exact` (no host route has this address).
#[allow(clippy::too_many_arguments)]
fn emit_bucket_probe(
    f: &mut FunctionBuilder,
    buckets: MapId,
    flow_key: SlotId,
    words: u32,
    bits: u32,
    remote: VReg,
    decide: BlockId,
    overflowed: BlockId,
    not_exact: BlockId,
) {
    let addr: Vec<VReg> = (0..words).map(|i| peer_word(f, flow_key, i)).collect();
    // Multiplicative hashing of the words, top `bits` bits (`bucket_index`).
    let mut h: Option<VReg> = None;
    for &w in &addr {
        let mixed = match h {
            None => w,
            Some(h) => f.alu32(AluOp::Xor, h, w),
        };
        h = Some(f.alu32(AluOp::Mul, mixed, i64::from(maps::BUCKET_HASH_MUL as i32)));
    }
    let Some(h) = h else {
        return;
    };
    let index = f.alu32(AluOp::Rsh, h, i64::from(32 - bits));
    let bucket = f.map_lookup_u32(buckets, index);
    let probed = f.block();
    f.branch_null(bucket, overflowed, probed);
    f.switch_to(probed);
    // The ways are compared without branches: each way's identity is or-ed into `found` under a
    // mask that is all ones when its address equals the peer's (the addresses of a bucket are
    // distinct, so at most one way contributes). The verifier then walks one path through the
    // probe instead of one per way: each path it stores costs tens of microseconds of load time
    // here, far more than the few instructions per way cost a packet.
    let way_bytes = 4 * words + 4;
    let found = f.vreg();
    f.assign_const(found, 0);
    for way in 0..maps::BUCKET_WAYS as u32 {
        let base = maps::BUCKET_HEADER_BYTES + way * way_bytes;
        // `differs`: a 32-bit value, zero exactly when the way's address is the peer's.
        let mut differs: Option<VReg> = None;
        for (i, &w) in addr.iter().enumerate() {
            let stored = f.load(bucket, (base + 4 * i as u32) as i32, Size::W);
            let x = f.alu32(AluOp::Xor, stored, w);
            differs = Some(match differs {
                None => x,
                Some(d) => f.alu32(AluOp::Or, d, x),
            });
        }
        let Some(differs) = differs else {
            return;
        };
        // 32-bit results are zero-extended, so `-differs` has bit 63 set unless it is zero:
        // `ne` is 1 for another address, 0 for this one; `ne - 1` is the mask.
        let negated = f.neg(Width::W64, differs);
        let ne = f.alu(AluOp::Rsh, negated, 63);
        let mask = f.alu(AluOp::Sub, ne, 1);
        let id = f.load(bucket, (base + 4 * words) as i32, Size::W);
        let picked = f.alu(AluOp::And, id, mask);
        f.alu_into(found, AluOp::Or, Width::W64, found, picked);
    }
    let hit = f.block();
    let missed = f.block();
    // Identity 0 is an empty way (the compiler never places address 0 or identity 0).
    f.branch(Cond::Eq, found, 0, missed, hit);
    f.switch_to(hit);
    f.assign(remote, found);
    f.jump(decide);
    f.switch_to(missed);
    let overflow = f.load(bucket, 0, Size::W);
    f.branch32(Cond::Eq, overflow, 0, not_exact, overflowed);
}

/// The trie lookup of each family (entered at `entries`): a hit sets `remote` and goes to
/// `decide`, a miss goes to `world`.
fn emit_trie(
    f: &mut FunctionBuilder,
    trie: MapId,
    flow_key: SlotId,
    entries: [BlockId; 2],
    remote: VReg,
    world: BlockId,
    decide: BlockId,
) {
    let here = f.current();
    let found = f.block();
    let key = f.stack_slot(maps::IPCACHE_KEY_SIZE);
    let keyed = f.block();
    for (i, &(family, words, _)) in FAMILIES.iter().enumerate() {
        f.switch_to(entries[i]);
        f.stack_store(key, 0, i64::from(32 + 32 * words), Size::W);
        f.stack_store(key, 4, i64::from(family), Size::W);
        f.jump(keyed);
    }
    f.switch_to(keyed);
    for i in 0..4 {
        let w = peer_word(f, flow_key, i);
        f.stack_store(key, 8 + 4 * i, w, Size::W);
    }
    let key_ptr = f.stack_addr(key);
    let hit = f.map_lookup(trie, key_ptr);
    f.branch_null(hit, world, found);
    f.switch_to(found);
    let id = f.load(hit, 0, Size::W);
    f.assign(remote, id);
    f.jump(decide);
    f.switch_to(here);
}

/// The bucket of an address (network-order bytes, 4 or 16): the words as the program loads them
/// (little-endian of the bytes), mixed by multiplication, top `bits` bits.
pub fn bucket_index(addr: &[u8], bits: u32) -> u32 {
    let mut h = 0u32;
    for w in addr.chunks_exact(4) {
        let w = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        h = (h ^ w).wrapping_mul(maps::BUCKET_HASH_MUL);
    }
    h >> (32 - bits)
}

/// The bucket arrays' entries for these host routes (address, identity; the first route of an
/// address wins), in address order: each
/// bucket takes its first [`maps::BUCKET_WAYS`] addresses; one that cannot take an address (it is
/// full, or the address or identity is 0, which mean an empty way) is marked `overflow`, and
/// programs then ask the exact-match map. Only non-empty buckets are listed.
pub fn bucket_entries(routes: &[(IpAddr, u32)]) -> [Entries; 2] {
    // Stable sort by address: of two routes for one address, the first given wins, as in
    // `maps::ipcache_map_entries`.
    let mut sorted: Vec<&(IpAddr, u32)> = routes.iter().collect();
    sorted.sort_by_key(|(a, _)| *a);
    sorted.dedup_by_key(|(a, _)| *a);
    let mut out: [std::collections::BTreeMap<u32, Vec<u8>>; 2] = Default::default();
    for (addr, identity) in sorted {
        let (i, bytes) = match addr {
            IpAddr::V4(a) => (0, a.octets().to_vec()),
            IpAddr::V6(a) => (1, a.octets().to_vec()),
        };
        let (_, words, bits) = FAMILIES[i];
        let way_bytes = (4 * words + 4) as usize;
        let header = maps::BUCKET_HEADER_BYTES as usize;
        let index = bucket_index(&bytes, bits);
        let bucket = out[i]
            .entry(index)
            .or_insert_with(|| vec![0; header + maps::BUCKET_WAYS * way_bytes]);
        let free = (0..maps::BUCKET_WAYS).find(|w| {
            let at = header + w * way_bytes + 4 * words as usize;
            bucket[at..at + 4] == [0; 4]
        });
        match free {
            Some(w) if *identity != 0 && bytes.iter().any(|b| *b != 0) => {
                let at = header + w * way_bytes;
                bucket[at..at + bytes.len()].copy_from_slice(&bytes);
                bucket[at + bytes.len()..at + way_bytes].copy_from_slice(&identity.to_le_bytes());
            }
            _ => bucket[0..4].copy_from_slice(&1u32.to_le_bytes()),
        }
    }
    out.map(|m| {
        m.into_iter()
            .map(|(k, v)| (k.to_le_bytes().to_vec(), v))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn way(bucket: &[u8], words: usize, w: usize) -> (Vec<u8>, u32) {
        let size = 4 * words + 4;
        let at = maps::BUCKET_HEADER_BYTES as usize + w * size;
        let id = &bucket[at + 4 * words..at + size];
        (
            bucket[at..at + 4 * words].to_vec(),
            u32::from_le_bytes([id[0], id[1], id[2], id[3]]),
        )
    }

    /// Addresses in 10.0.0.0/8 and 2001:db8::/64 that share one bucket, `n` of each family.
    fn colliding(n: usize) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
        let v4: Vec<Ipv4Addr> = (0..1u32 << 24)
            .map(|i| Ipv4Addr::from(0x0a00_0000 | i))
            .filter(|a| bucket_index(&a.octets(), maps::IPC4_BUCKET_BITS) == 7)
            .take(n)
            .collect();
        let v6: Vec<Ipv6Addr> = (0..=u32::MAX)
            .map(|i| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16))
            .filter(|a| bucket_index(&a.octets(), maps::IPC6_BUCKET_BITS) == 7)
            .take(n)
            .collect();
        (v4, v6)
    }

    #[test]
    fn every_address_is_in_its_bucket_or_the_bucket_says_overflow() {
        let (v4, v6) = colliding(6);
        let mut routes: Vec<(IpAddr, u32)> = Vec::new();
        for (i, a) in v4.iter().enumerate() {
            routes.push((IpAddr::V4(*a), 100 + i as u32));
        }
        for (i, a) in v6.iter().enumerate() {
            routes.push((IpAddr::V6(*a), 200 + i as u32));
        }
        routes.push((IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 300));
        routes.reverse();
        let [b4, b6] = bucket_entries(&routes);
        // Colliding at 7, and 203.0.113.9 elsewhere (or also at 7).
        let full = b4
            .iter()
            .find(|(k, _)| k == &7u32.to_le_bytes().to_vec())
            .expect("bucket 7");
        let ways: Vec<_> = (0..maps::BUCKET_WAYS).map(|w| way(&full.1, 1, w)).collect();
        // Address order: the four lowest colliding addresses are in ways, the rest overflow.
        for (w, (addr, id)) in ways.iter().enumerate() {
            assert_eq!(addr, &v4[w].octets().to_vec());
            assert_eq!(*id, 100 + w as u32);
        }
        assert_eq!(&full.1[0..4], &1u32.to_le_bytes());
        let full6 = b6
            .iter()
            .find(|(k, _)| k == &7u32.to_le_bytes().to_vec())
            .expect("bucket 7");
        assert_eq!(way(&full6.1, 4, 3).0, v6[3].octets().to_vec());
        assert_eq!(&full6.1[0..4], &1u32.to_le_bytes());
        let lone = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
        let index = bucket_index(&[203, 0, 113, 9], maps::IPC4_BUCKET_BITS);
        if index != 7 {
            let (_, v) = b4
                .iter()
                .find(|(k, _)| k == &index.to_le_bytes().to_vec())
                .expect("its bucket");
            assert_eq!(way(v, 1, 0), (vec![203, 0, 113, 9], 300));
            assert_eq!(&v[0..4], &[0; 4], "{lone} alone does not overflow");
        }
    }

    #[test]
    fn placement_does_not_depend_on_input_order() {
        let (v4, v6) = colliding(5);
        let mut routes: Vec<(IpAddr, u32)> = v4.iter().map(|a| (IpAddr::V4(*a), 9)).collect();
        routes.extend(v6.iter().map(|a| (IpAddr::V6(*a), 10)));
        let forward = bucket_entries(&routes);
        routes.reverse();
        assert_eq!(forward, bucket_entries(&routes));
    }

    #[test]
    fn address_zero_and_identity_zero_are_left_to_the_exact_map() {
        let routes = [
            (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5),
            (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 0),
        ];
        let [b4, _] = bucket_entries(&routes);
        for (k, v) in &b4 {
            assert_eq!(&v[0..4], &1u32.to_le_bytes(), "bucket {k:?} says overflow");
            assert!((0..maps::BUCKET_WAYS).all(|w| way(v, 1, w).1 == 0));
        }
        assert!(!b4.is_empty());
    }
}
