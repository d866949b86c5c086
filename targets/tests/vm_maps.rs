//! The VM's map models against the kernel's documented semantics: LPM longest-prefix match
//! (bounded by the lookup key's prefix length), LRU eviction of the least recently used entry,
//! hash update flags (`BPF_NOEXIST`, `BPF_EXIST`) and capacity, array rules, ring-buffer positions.

use ciliumc_targets::elf::MapType;
use ciliumc_targets::vm::UserMap;
use ciliumc_targets::vm::maps::{
    BPF_ANY, BPF_EXIST, BPF_NOEXIST, E2BIG, EAGAIN, EEXIST, EINVAL, ENOENT, ENOSPC,
};
use ciliumc_targets::vm::ringbuf::{BPF_RB_AVAIL_DATA, BPF_RB_PROD_POS, BPF_RB_RING_SIZE, RingBuf};

fn lpm_key(prefix: u32, addr: [u8; 4]) -> Vec<u8> {
    let mut k = prefix.to_le_bytes().to_vec();
    k.extend_from_slice(&addr);
    k
}

/// The u32 value the trie returns for `addr` looked up with prefix length `key_prefix`.
fn lpm_match(map: &mut UserMap, addr: [u8; 4], key_prefix: u32) -> Option<u32> {
    let id = map.lookup(&lpm_key(key_prefix, addr))?;
    let v = map.value(id)?;
    Some(u32::from_le_bytes(v.try_into().ok()?))
}

#[test]
fn lpm_trie_returns_the_longest_matching_prefix() {
    let mut m = UserMap::new("lpm", MapType::LpmTrie, 8, 4, 16).unwrap();
    for (len, addr, v) in [
        (8u32, [10u8, 0, 0, 0], 8u32),
        (16, [10, 1, 0, 0], 16),
        (24, [10, 1, 2, 0], 24),
        (32, [10, 1, 2, 3], 32),
        (0, [0, 0, 0, 0], 1),
    ] {
        assert_eq!(m.update(&lpm_key(len, addr), &v.to_le_bytes(), BPF_ANY), 0);
    }
    let lookup = lpm_match;
    assert_eq!(lookup(&mut m, [10, 1, 2, 3], 32), Some(32));
    assert_eq!(lookup(&mut m, [10, 1, 2, 4], 32), Some(24));
    assert_eq!(lookup(&mut m, [10, 1, 9, 9], 32), Some(16));
    assert_eq!(lookup(&mut m, [10, 9, 9, 9], 32), Some(8));
    assert_eq!(lookup(&mut m, [192, 0, 2, 1], 32), Some(1));
    // The lookup key's own prefix length bounds the match, as in the kernel.
    assert_eq!(lookup(&mut m, [10, 1, 2, 3], 20), Some(16));
    assert_eq!(m.delete(&lpm_key(0, [0, 0, 0, 0])), 0);
    assert_eq!(lookup(&mut m, [192, 0, 2, 1], 32), None);
}

#[test]
fn lpm_trie_lookup_handles_differ_by_matched_prefix() {
    let mut m = UserMap::new("lpm", MapType::LpmTrie, 8, 4, 16).unwrap();
    assert_eq!(
        m.update(&lpm_key(16, [10, 1, 0, 0]), &1u32.to_le_bytes(), BPF_ANY),
        0
    );
    assert_eq!(
        m.update(&lpm_key(24, [10, 1, 2, 0]), &2u32.to_le_bytes(), BPF_ANY),
        0
    );
    let a = m.lookup(&lpm_key(32, [10, 1, 2, 200])).expect("match /24");
    let b = m.lookup(&lpm_key(32, [10, 1, 3, 200])).expect("match /16");
    assert_ne!(a, b);
    assert_eq!(m.lookup(&lpm_key(32, [11, 1, 2, 3])), None);
    // Host bits beyond the prefix are ignored: the same node is updated.
    assert_eq!(
        m.update(&lpm_key(24, [10, 1, 2, 77]), &3u32.to_le_bytes(), BPF_EXIST),
        0
    );
    assert_eq!(
        m.get(&lpm_key(24, [10, 1, 2, 0])),
        Some(&3u32.to_le_bytes()[..])
    );
    assert_eq!(m.len(), 2);
    assert_eq!(m.delete(&lpm_key(24, [10, 1, 2, 0])), 0);
    assert_eq!(m.lookup(&lpm_key(32, [10, 1, 2, 200])), Some(b));
    assert_eq!(m.delete(&lpm_key(24, [10, 1, 2, 0])), -ENOENT);
}

#[test]
fn lpm_trie_refuses_bad_prefixes_and_overflow() {
    let mut m = UserMap::new("lpm", MapType::LpmTrie, 8, 4, 2).unwrap();
    assert_eq!(
        m.update(&lpm_key(33, [1, 2, 3, 4]), &[0; 4], BPF_ANY),
        -EINVAL
    );
    assert_eq!(m.update(&lpm_key(8, [1, 0, 0, 0]), &[0; 4], BPF_ANY), 0);
    assert_eq!(m.update(&lpm_key(16, [1, 2, 0, 0]), &[0; 4], BPF_ANY), 0);
    assert_eq!(
        m.update(&lpm_key(24, [1, 2, 3, 0]), &[0; 4], BPF_ANY),
        -ENOSPC
    );
    assert_eq!(
        m.update(&lpm_key(8, [1, 0, 0, 0]), &[0; 4], BPF_NOEXIST),
        -EEXIST
    );
    assert_eq!(
        m.update(&lpm_key(9, [1, 0, 0, 0]), &[0; 4], BPF_EXIST),
        -ENOENT
    );
}

#[test]
fn hash_update_flags_and_capacity() {
    let mut m = UserMap::new("h", MapType::Hash, 4, 4, 2).unwrap();
    let k = |i: u32| i.to_le_bytes();
    assert_eq!(m.update(&k(1), &k(10), BPF_EXIST), -ENOENT);
    assert_eq!(m.update(&k(1), &k(10), BPF_NOEXIST), 0);
    assert_eq!(m.update(&k(1), &k(11), BPF_NOEXIST), -EEXIST);
    assert_eq!(m.get(&k(1)), Some(&k(10)[..]));
    assert_eq!(m.update(&k(1), &k(12), BPF_EXIST), 0);
    assert_eq!(m.get(&k(1)), Some(&k(12)[..]));
    assert_eq!(m.update(&k(2), &k(20), BPF_ANY), 0);
    assert_eq!(
        m.update(&k(3), &k(30), BPF_ANY),
        -E2BIG,
        "full hash refuses new keys"
    );
    assert_eq!(
        m.update(&k(2), &k(21), BPF_ANY),
        0,
        "full hash still updates existing keys"
    );
    assert_eq!(m.update(&k(2), &k(21), 3), -EINVAL);
    assert_eq!(m.update(&k(2), &[0; 3], BPF_ANY), -EINVAL);
    assert_eq!(m.delete(&k(2)), 0);
    assert_eq!(m.delete(&k(2)), -ENOENT);
    assert_eq!(m.update(&k(3), &k(30), BPF_ANY), 0);
    assert_eq!(m.keys(), vec![k(1).to_vec(), k(3).to_vec()]);
}

#[test]
fn lru_hash_evicts_the_least_recently_used_entry() {
    let mut m = UserMap::new("lru", MapType::LruHash, 4, 4, 3).unwrap();
    let k = |i: u32| i.to_le_bytes();
    for i in 1..=3 {
        assert_eq!(m.update(&k(i), &k(i), BPF_ANY), 0);
    }
    assert!(m.lookup(&k(1)).is_some(), "touch 1: 2 is now the oldest");
    assert_eq!(
        m.update(&k(4), &k(4), BPF_ANY),
        0,
        "LRU never refuses for capacity"
    );
    assert_eq!(m.len(), 3);
    assert!(m.get(&k(2)).is_none(), "2 was evicted");
    assert!(m.get(&k(1)).is_some() && m.get(&k(3)).is_some() && m.get(&k(4)).is_some());
    assert_eq!(m.update(&k(3), &k(33), BPF_ANY), 0, "update refreshes 3");
    assert_eq!(m.update(&k(5), &k(5), BPF_NOEXIST), 0);
    assert!(
        m.get(&k(1)).is_none(),
        "1 was the oldest after 3 was refreshed"
    );
    assert_eq!(m.update(&k(5), &k(5), BPF_NOEXIST), -EEXIST);
}

#[test]
fn arrays_have_every_element_and_refuse_noexist_and_delete() {
    for kind in [MapType::Array, MapType::PercpuArray] {
        let mut m = UserMap::new("a", kind, 4, 8, 4).unwrap();
        let id = m.lookup(&3u32.to_le_bytes()).expect("element 3 exists");
        assert!(m.lookup(&4u32.to_le_bytes()).is_none());
        assert_eq!(m.lookup(&3u32.to_le_bytes()), Some(id));
        assert_eq!(m.get(&3u32.to_le_bytes()), Some(&[0u8; 8][..]));
        assert_eq!(m.update(&1u32.to_le_bytes(), &[1; 8], BPF_NOEXIST), -EEXIST);
        assert_eq!(m.update(&9u32.to_le_bytes(), &[1; 8], BPF_ANY), -E2BIG);
        assert_eq!(m.update(&1u32.to_le_bytes(), &[1; 8], BPF_EXIST), 0);
        assert_eq!(m.delete(&1u32.to_le_bytes()), -EINVAL);
    }
    assert!(UserMap::new("bad", MapType::Array, 8, 8, 4).is_err());
}

#[test]
fn per_cpu_initial_values_accept_the_kernel_user_layout() {
    let mut m = UserMap::new("pc", MapType::PercpuArray, 4, 4, 1).unwrap();
    // Two CPUs, each value padded to 8 bytes: the first CPU's value is kept.
    let mut v = vec![7, 0, 0, 0, 0, 0, 0, 0];
    v.extend([9, 0, 0, 0, 0, 0, 0, 0]);
    m.insert_initial(&0u32.to_le_bytes(), &v).unwrap();
    assert_eq!(m.get(&0u32.to_le_bytes()), Some(&[7, 0, 0, 0][..]));
    assert!(m.insert_initial(&0u32.to_le_bytes(), &[1, 2, 3]).is_err());
}

#[test]
fn ring_buffer_positions_and_capacity_follow_the_kernel() {
    let mut r = RingBuf::new(4096);
    assert_eq!(r.query(BPF_RB_RING_SIZE), 4096);
    assert_eq!(r.output(&[1; 64], 0), 0);
    // 8-byte header, rounded to 8.
    assert_eq!(r.query(BPF_RB_AVAIL_DATA), 72);
    assert_eq!(r.output(&[2; 5], 2), 0);
    assert_eq!(r.query(BPF_RB_PROD_POS), 72 + 16);
    assert_eq!(r.output(&[0; 4], 4), -EINVAL);
    let h = r.reserve(16, 0).expect("room");
    assert!(r.reserve(16, 1).is_none(), "reserve flags must be 0");
    let drained = r.drain();
    assert_eq!(
        drained,
        vec![vec![1; 64], vec![2; 5]],
        "stops at the reserved record"
    );
    assert_eq!(r.query(BPF_RB_AVAIL_DATA), 24);
    assert!(r.release(h, false));
    assert!(!r.release(h, true));
    assert!(r.drain().is_empty());
    assert_eq!(r.query(BPF_RB_AVAIL_DATA), 0);
    // Fill: (4096 - 1) / 72 records fit.
    let mut n = 0;
    while r.output(&[0; 64], 0) == 0 {
        n += 1;
    }
    assert_eq!(n, 4095 / 72);
    assert_eq!(r.output(&[0; 64], 0), -EAGAIN);
}
