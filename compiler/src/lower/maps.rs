//! The datapath's shared maps: names, layouts, and the encoding of their initial entries.
//!
//! Every endpoint object declares the same shared maps, pinned by name, so one instance serves all
//! programs on a node (as Cilium's `cilium_ipcache`, `cilium_ct4_global`, `cilium_events`). The
//! layouts are the contract with any loader and with `ciliumc agent`; `docs/datapath.md` documents
//! them byte by byte.

use std::net::IpAddr;

use ciliumc_ir::cidr::Cidr;
use ciliumc_ir::manifest::{ManifestMap, MapEntry};
use ciliumc_targets::codegen::{MapDecl, MapKind};
use ciliumc_targets::elf::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, MapDef, MapType, Pinning, TypeDesc};

/// Peer address → security identity (LPM trie).
pub const IPCACHE: &str = "ciliumc_ipcache";
/// Exact peer address → identity for /32 (hash, `u8 addr[4]` key) and /128 (`u8 addr[16]`)
/// entries: one hash lookup finds endpoints and nodes; the LPM trie is asked only on a miss, so
/// it must hold these entries too (a loader that fills only the trie stays correct, just slower).
pub const IPCACHE4: &str = "ciliumc_ipc4";
pub const IPCACHE6: &str = "ciliumc_ipc6";
pub const IPCACHE_EXACT_MAX_ENTRIES: u32 = 262_144;
/// The host routes again, in arrays of buckets that programs probe in code before the exact-match
/// maps (`lower::ipcache`): `u32` key = bucket index, value `struct ipcache_bucket { u32 overflow;
/// u32 pad; struct { u8 addr[4 or 16]; u32 identity; } ways[4]; }`. An address goes to bucket
/// [`ipcache::bucket_index`](super::ipcache::bucket_index); `overflow` is 1 when the bucket does
/// not hold every host route of its index, and programs then ask the exact-match map.
pub const IPCACHE4_BUCKETS: &str = "ciliumc_ipc4bkt";
pub const IPCACHE6_BUCKETS: &str = "ciliumc_ipc6bkt";
pub const BUCKET_WAYS: usize = 4;
pub const BUCKET_HEADER_BYTES: u32 = 8;
/// Buckets per family: 2^15 IPv4 (1.25 MiB), 2^14 IPv6 (1.4 MiB).
pub const IPC4_BUCKET_BITS: u32 = 15;
pub const IPC6_BUCKET_BITS: u32 = 14;
/// The multiplier of the bucket hash (2^32 / the golden ratio).
pub const BUCKET_HASH_MUL: u32 = 0x9E37_79B1;
/// What programs need to know of the ipcache's contents (array, one entry: `{u32 v4_prefixes;
/// u32 v6_prefixes; u32 buckets; u32 pad}`):
/// - how many prefixes of each family the trie holds: after the host routes miss, programs ask
///   the trie only when it holds prefixes of the packet's family, so in a cluster without CIDR
///   identities traffic from unknown addresses (world) skips the trie's lookup call;
/// - `buckets`: 1 when the bucket arrays hold the exact-match maps' entries as placed by the
///   compiler; while it is 0 (a loader that does not write them, or one rewriting them),
///   programs skip the buckets and ask the exact-match maps.
///
/// Whoever fills the maps keeps these: the manifest carries them as this map's entry.
pub const IPCACHE_INFO: &str = "ciliumc_ipcinfo";
pub const IPCACHE_INFO_VALUE_SIZE: u32 = 16;
pub const IPCACHE_INFO_BUCKETS_OFF: i32 = 8;
/// Connection tracking, shared by all endpoints (LRU hash).
pub const CT: &str = "ciliumc_ct";
/// Flow events: one ring of records per CPU in one mmap-able array (layout below and in
/// `docs/datapath.md`).
pub const EVENTS: &str = "ciliumc_events";

/// `struct ipcache_key { u32 prefixlen; u32 family; u8 addr[16]; }`: `prefixlen` counts the
/// family word (32 bits) plus the address prefix, so IPv4 and IPv6 share one trie.
pub const IPCACHE_KEY_SIZE: u32 = 24;
/// `struct ipcache_value { u32 identity; u32 flags; }`.
pub const IPCACHE_VALUE_SIZE: u32 = 8;
pub const IPCACHE_MAX_ENTRIES: u32 = 512_000;
/// Family word values in keys and events.
pub const FAMILY_IPV4: u32 = 4;
pub const FAMILY_IPV6: u32 = 6;

/// `struct ct_key { u8 ep_addr[16]; u8 peer_addr[16]; u16 ep_port; u16 peer_port; u8 proto;
/// u8 family; u16 pad; }`: oriented from the endpoint that owns the program, so the reply of a flow
/// and its later packets find the same entry (ports in host order).
pub const CT_KEY_SIZE: u32 = 40;
/// `struct ct_value { u32 rule_id; u8 origin (1 ingress, 2 egress); u8 pad[3]; }`.
pub const CT_VALUE_SIZE: u32 = 8;
pub const CT_MAX_ENTRIES: u32 = 65_536;

/// Records in each CPU's ring (a power of two).
pub const EVENT_RING_RECORDS: u32 = 4096;
/// Array slots per CPU: the ring's header (slot 0: `u64 head`, the number of records this CPU
/// ever wrote) and its records. CPU `c`'s ring starts at index `c * EVENT_RING_STRIDE`.
pub const EVENT_RING_STRIDE: u32 = EVENT_RING_RECORDS + 1;
/// Bytes per slot: `u64 seq` (the record's sequence number + 1 once complete, 0 while it is
/// being written) and the 64-byte event.
pub const EVENT_SLOT_BYTES: u32 = 72;
/// CPUs the declared array has rings for. A loader may create the map with more entries (a
/// multiple of [`EVENT_RING_STRIDE`]), as `ciliumc agent` does for the machine's possible CPUs;
/// events from a CPU without a ring are counted in [`EVENTS_LOST`].
pub const EVENT_RING_DEFAULT_CPUS: u32 = 64;
/// Per-CPU count of events that had no ring to go to (index 0, u64): readers report it as lost
/// events, with the records overwritten before they read them.
pub const EVENTS_LOST: &str = "ciliumc_evlost";

fn ipcache_key_type() -> TypeDesc {
    TypeDesc::structure(
        "ciliumc_ipcache_key",
        [
            ("prefixlen", TypeDesc::U32),
            ("family", TypeDesc::U32),
            ("addr", TypeDesc::Bytes(16)),
        ],
    )
}

fn ipcache_value_type() -> TypeDesc {
    TypeDesc::structure(
        "ciliumc_ipcache_value",
        [("identity", TypeDesc::U32), ("flags", TypeDesc::U32)],
    )
}

fn bucket_type(family: u32) -> TypeDesc {
    let (name, way, addr) = if family == FAMILY_IPV4 {
        ("ciliumc_ipcache_bucket4", "ciliumc_ipcache_way4", 4)
    } else {
        ("ciliumc_ipcache_bucket6", "ciliumc_ipcache_way6", 16)
    };
    TypeDesc::structure(
        name,
        [
            ("overflow", TypeDesc::U32),
            ("pad", TypeDesc::U32),
            (
                "ways",
                TypeDesc::Array {
                    elem: Box::new(TypeDesc::structure(
                        way,
                        [("addr", TypeDesc::Bytes(addr)), ("identity", TypeDesc::U32)],
                    )),
                    len: BUCKET_WAYS as u32,
                },
            ),
        ],
    )
}

fn ct_key_type() -> TypeDesc {
    TypeDesc::structure(
        "ciliumc_ct_key",
        [
            ("ep_addr", TypeDesc::Bytes(16)),
            ("peer_addr", TypeDesc::Bytes(16)),
            ("ep_port", TypeDesc::U16),
            ("peer_port", TypeDesc::U16),
            ("proto", TypeDesc::U8),
            ("family", TypeDesc::U8),
            ("pad", TypeDesc::U16),
        ],
    )
}

fn ct_value_type() -> TypeDesc {
    TypeDesc::structure(
        "ciliumc_ct_value",
        [
            ("rule_id", TypeDesc::U32),
            ("origin", TypeDesc::U8),
            ("pad", TypeDesc::Bytes(3)),
        ],
    )
}

/// The ELF definitions of the shared maps, in a fixed order.
pub fn shared_map_defs() -> Vec<MapDef> {
    vec![
        MapDef::lpm_trie(
            IPCACHE,
            ipcache_key_type(),
            ipcache_value_type(),
            IPCACHE_MAX_ENTRIES,
        )
        .with_flags(BPF_F_NO_PREALLOC)
        .with_pinning(Pinning::ByName),
        MapDef::hash(
            IPCACHE4,
            TypeDesc::Bytes(4),
            ipcache_value_type(),
            IPCACHE_EXACT_MAX_ENTRIES,
        )
        .with_flags(BPF_F_NO_PREALLOC)
        .with_pinning(Pinning::ByName),
        MapDef::hash(
            IPCACHE6,
            TypeDesc::Bytes(16),
            ipcache_value_type(),
            IPCACHE_EXACT_MAX_ENTRIES,
        )
        .with_flags(BPF_F_NO_PREALLOC)
        .with_pinning(Pinning::ByName),
        MapDef::array(
            IPCACHE4_BUCKETS,
            bucket_type(FAMILY_IPV4),
            1 << IPC4_BUCKET_BITS,
        )
        .with_pinning(Pinning::ByName),
        MapDef::array(
            IPCACHE6_BUCKETS,
            bucket_type(FAMILY_IPV6),
            1 << IPC6_BUCKET_BITS,
        )
        .with_pinning(Pinning::ByName),
        MapDef::array(
            IPCACHE_INFO,
            TypeDesc::structure(
                "ciliumc_ipcache_info",
                [
                    ("v4_prefixes", TypeDesc::U32),
                    ("v6_prefixes", TypeDesc::U32),
                    ("buckets", TypeDesc::U32),
                    ("pad", TypeDesc::U32),
                ],
            ),
            1,
        )
        .with_pinning(Pinning::ByName),
        MapDef::typed(
            CT,
            MapType::LruHash,
            ct_key_type(),
            ct_value_type(),
            CT_MAX_ENTRIES,
        )
        .with_pinning(Pinning::ByName),
        MapDef::array(
            EVENTS,
            TypeDesc::Bytes(EVENT_SLOT_BYTES),
            EVENT_RING_DEFAULT_CPUS * EVENT_RING_STRIDE,
        )
        .with_flags(BPF_F_MMAPABLE)
        .with_pinning(Pinning::ByName),
        MapDef::typed(
            EVENTS_LOST,
            MapType::PercpuArray,
            TypeDesc::U32,
            TypeDesc::U64,
            1,
        )
        .with_pinning(Pinning::ByName),
        frag_map_def(FAMILY_IPV4),
        frag_map_def(FAMILY_IPV6),
    ]
}

pub fn ipcache_decl() -> MapDecl {
    MapDecl {
        name: IPCACHE.into(),
        kind: MapKind::LpmTrie,
        key_size: IPCACHE_KEY_SIZE,
        value_size: IPCACHE_VALUE_SIZE,
    }
}

pub fn ipcache_info_decl() -> MapDecl {
    MapDecl {
        name: IPCACHE_INFO.into(),
        kind: MapKind::Array,
        key_size: 4,
        value_size: IPCACHE_INFO_VALUE_SIZE,
    }
}

/// The entry of [`IPCACHE_INFO`] for a trie holding these keys ([`ipcache_key`] layout), with
/// the buckets off: for loaders that fill the trie and the exact-match maps only.
pub fn ipcache_info_entry<'a>(trie_keys: impl IntoIterator<Item = &'a [u8]>) -> (Vec<u8>, Vec<u8>) {
    ipcache_info_entry_with(trie_keys, false)
}

/// The entry of [`IPCACHE_INFO`] for a trie holding these keys; `buckets` when the bucket arrays
/// are filled as [`ipcache_map_entries`] fills them.
pub fn ipcache_info_entry_with<'a>(
    trie_keys: impl IntoIterator<Item = &'a [u8]>,
    buckets: bool,
) -> (Vec<u8>, Vec<u8>) {
    let (mut v4, mut v6) = (0u32, 0u32);
    for key in trie_keys {
        match key
            .get(4..8)
            .map(|f| u32::from_le_bytes([f[0], f[1], f[2], f[3]]))
        {
            Some(FAMILY_IPV4) => v4 += 1,
            Some(FAMILY_IPV6) => v6 += 1,
            _ => {}
        }
    }
    let mut value = v4.to_le_bytes().to_vec();
    value.extend_from_slice(&v6.to_le_bytes());
    value.extend_from_slice(&u32::from(buckets).to_le_bytes());
    value.extend_from_slice(&0u32.to_le_bytes());
    (0u32.to_le_bytes().to_vec(), value)
}

/// The bucket array of a family.
pub fn ipcache_buckets_decl(family: u32) -> MapDecl {
    let (name, addr) = if family == FAMILY_IPV4 {
        (IPCACHE4_BUCKETS, 4)
    } else {
        (IPCACHE6_BUCKETS, 16)
    };
    MapDecl {
        name: name.into(),
        kind: MapKind::Array,
        key_size: 4,
        value_size: BUCKET_HEADER_BYTES + BUCKET_WAYS as u32 * (addr + 4),
    }
}

/// The exact-match ipcache of a family.
pub fn ipcache_exact_decl(family: u32) -> MapDecl {
    let (name, key_size) = if family == FAMILY_IPV4 {
        (IPCACHE4, 4)
    } else {
        (IPCACHE6, 16)
    };
    MapDecl {
        name: name.into(),
        kind: MapKind::Hash,
        key_size,
        value_size: IPCACHE_VALUE_SIZE,
    }
}

pub fn ct_decl() -> MapDecl {
    MapDecl {
        name: CT.into(),
        kind: MapKind::LruHash,
        key_size: CT_KEY_SIZE,
        value_size: CT_VALUE_SIZE,
    }
}

pub fn events_lost_decl() -> MapDecl {
    MapDecl {
        name: EVENTS_LOST.into(),
        kind: MapKind::PerCpuArray,
        key_size: 4,
        value_size: 8,
    }
}

/// IP fragment tracking (Cilium's `cilium_ipv4_frag_datagrams` / `cilium_ipv6_frag_datagrams`):
/// the L4 ports of a fragmented datagram, written when its first fragment (the one holding the L4
/// header) is parsed, read by its later fragments. LRU hash, shared by every program.
pub const FRAG4: &str = "ciliumc_frag4";
pub const FRAG6: &str = "ciliumc_frag6";
/// `struct frag4_key { be32 daddr; be32 saddr; be16 id; u8 proto; u8 pad; }` (Cilium's
/// `struct ipv4_frag_id`): addresses as on the wire, not oriented from the endpoint.
pub const FRAG4_KEY_SIZE: u32 = 12;
/// `struct frag6_key { be32 id; u8 proto; u8 pad[3]; u8 saddr[16]; u8 daddr[16]; }` (Cilium's
/// `struct ipv6_frag_id`); `proto` is the fragment header's next header.
pub const FRAG6_KEY_SIZE: u32 = 40;
/// `struct frag_ports { be16 sport; be16 dport; }` (Cilium's `struct ipv4_frag_l4ports`).
pub const FRAG_VALUE_SIZE: u32 = 4;
/// Cilium's default `--bpf-fragments-map-max`.
pub const FRAG_MAX_ENTRIES: u32 = 8192;

fn frag_key_type(family: u32) -> TypeDesc {
    if family == FAMILY_IPV4 {
        TypeDesc::structure(
            "ciliumc_frag4_key",
            [
                ("daddr", TypeDesc::Bytes(4)),
                ("saddr", TypeDesc::Bytes(4)),
                ("id", TypeDesc::U16),
                ("proto", TypeDesc::U8),
                ("pad", TypeDesc::U8),
            ],
        )
    } else {
        TypeDesc::structure(
            "ciliumc_frag6_key",
            [
                ("id", TypeDesc::U32),
                ("proto", TypeDesc::U8),
                ("pad", TypeDesc::Bytes(3)),
                ("saddr", TypeDesc::Bytes(16)),
                ("daddr", TypeDesc::Bytes(16)),
            ],
        )
    }
}

fn frag_value_type() -> TypeDesc {
    TypeDesc::structure(
        "ciliumc_frag_ports",
        [("sport", TypeDesc::U16), ("dport", TypeDesc::U16)],
    )
}

/// The ELF definition of a family's fragment map.
pub fn frag_map_def(family: u32) -> MapDef {
    let name = if family == FAMILY_IPV4 { FRAG4 } else { FRAG6 };
    MapDef::typed(
        name,
        MapType::LruHash,
        frag_key_type(family),
        frag_value_type(),
        FRAG_MAX_ENTRIES,
    )
    .with_pinning(Pinning::ByName)
}

/// The fragment map of a family, as programs reference it.
pub fn frag_decl(family: u32) -> MapDecl {
    let (name, key_size) = if family == FAMILY_IPV4 {
        (FRAG4, FRAG4_KEY_SIZE)
    } else {
        (FRAG6, FRAG6_KEY_SIZE)
    };
    MapDecl {
        name: name.into(),
        kind: MapKind::LruHash,
        key_size,
        value_size: FRAG_VALUE_SIZE,
    }
}

pub fn events_decl() -> MapDecl {
    MapDecl {
        name: EVENTS.into(),
        kind: MapKind::Array,
        key_size: 4,
        value_size: EVENT_SLOT_BYTES,
    }
}

/// Key bytes of an ipcache entry for a prefix.
pub fn ipcache_key(cidr: &Cidr) -> Vec<u8> {
    let mut key = Vec::with_capacity(IPCACHE_KEY_SIZE as usize);
    let (family, addr): (u32, Vec<u8>) = match cidr.addr() {
        IpAddr::V4(a) => (FAMILY_IPV4, a.octets().to_vec()),
        IpAddr::V6(a) => (FAMILY_IPV6, a.octets().to_vec()),
    };
    key.extend_from_slice(&(32 + u32::from(cidr.prefix_len())).to_le_bytes());
    key.extend_from_slice(&family.to_le_bytes());
    key.extend_from_slice(&addr);
    key.resize(IPCACHE_KEY_SIZE as usize, 0);
    key
}

pub fn ipcache_value(identity: u32) -> Vec<u8> {
    let mut v = identity.to_le_bytes().to_vec();
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

/// The manifest description of a map definition with its initial entries.
pub fn manifest_map(def: &MapDef, entries: Vec<(Vec<u8>, Vec<u8>)>) -> ManifestMap {
    ManifestMap {
        name: def.name.clone(),
        map_type: def.map_type.name().to_string(),
        key_size: def.key_size(),
        value_size: def.value_size(),
        max_entries: def.max_entries,
        flags: def.map_flags,
        pinning: match def.pinning {
            Pinning::ByName => "by_name".to_string(),
            _ => "none".to_string(),
        },
        entries: entries
            .into_iter()
            .map(|(k, v)| MapEntry {
                key: hex::encode(k),
                value: hex::encode(v),
            })
            .collect(),
    }
}

/// A map's initial entries: (key bytes, value bytes).
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

fn is_host_route(c: &Cidr) -> bool {
    match c.addr() {
        IpAddr::V4(_) => c.prefix_len() == 32,
        IpAddr::V6(_) => c.prefix_len() == 128,
    }
}

/// Every ipcache map's initial entries for these (prefix, identity) pairs, by map name. A prefix
/// has one identity: the first pair given for it (`compile::ipcache_prefixes` gives one each).
pub fn ipcache_map_entries(prefixes: &[(Cidr, u32)]) -> Vec<(String, Entries)> {
    let mut seen = std::collections::BTreeSet::new();
    let prefixes: Vec<(Cidr, u32)> = prefixes
        .iter()
        .filter(|(c, _)| seen.insert(*c))
        .copied()
        .collect();
    let prefixes = prefixes.as_slice();
    // Host routes live in the exact-match maps, which programs read first; the trie keeps only
    // the shorter prefixes (CIDR identities, node and pod ranges), so a miss there stays shallow.
    // Programs stay correct when host routes are in the trie too (loaders may put them there),
    // as long as `IPCACHE_INFO` counts what the trie holds.
    let lpm: Entries = prefixes
        .iter()
        .filter(|(c, _)| !is_host_route(c))
        .map(|(c, id)| (ipcache_key(c), ipcache_value(*id)))
        .collect();
    let info = ipcache_info_entry_with(lpm.iter().map(|(k, _)| k.as_slice()), true);
    let routes: Vec<(IpAddr, u32)> = prefixes
        .iter()
        .filter(|(c, _)| is_host_route(c))
        .map(|(c, id)| (c.addr(), *id))
        .collect();
    let [buckets4, buckets6] = super::ipcache::bucket_entries(&routes);
    let exact = |want_v4: bool| -> Entries {
        routes
            .iter()
            .filter(|(a, _)| a.is_ipv4() == want_v4)
            .map(|(a, id)| {
                let key = match a {
                    IpAddr::V4(a) => a.octets().to_vec(),
                    IpAddr::V6(a) => a.octets().to_vec(),
                };
                (key, ipcache_value(*id))
            })
            .collect()
    };
    vec![
        (IPCACHE.to_string(), lpm),
        (IPCACHE4.to_string(), exact(true)),
        (IPCACHE6.to_string(), exact(false)),
        (IPCACHE4_BUCKETS.to_string(), buckets4),
        (IPCACHE6_BUCKETS.to_string(), buckets6),
        (IPCACHE_INFO.to_string(), vec![info]),
    ]
}
