// tc program: map lookup, helper calls, atomics, bpf-to-bpf call, loops, switch.
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
#define SEC(n) __attribute__((section(n), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
struct __sk_buff { __u32 len, pkt_type, mark, queue_mapping, protocol, vlan_present, vlan_tci, vlan_proto, priority, ingress_ifindex, ifindex, tc_index, cb[5], hash, tc_classid, data, data_end; };
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static long (*bpf_skb_load_bytes)(const void *skb, __u32 offset, void *to, __u32 len) = (void *)26;
struct { __uint(type, 2); __uint(max_entries, 16); __type(key, __u32); __type(value, __u64); } counters SEC(".maps");
struct { __uint(type, 1); __uint(max_entries, 1024); __type(key, __u64); __type(value, __s64); } table SEC(".maps");
__u64 global_counter;
const volatile __u32 config_val = 7;

static __attribute__((noinline)) __u64 mix(__u64 a, __u64 b) {
    __u64 r = a;
    for (int i = 0; i < (int)(b & 7); i++) r = r * 31 + (a >> i);
    return r;
}

SEC("classifier") int prog(struct __sk_buff *skb) {
    __u32 key = skb->mark & 15;
    __u64 *v = bpf_map_lookup_elem(&counters, &key);
    if (!v) return 2;
    __sync_fetch_and_add(v, 1);
#if __BPF_CPU_VERSION__ >= 3
    __u64 old = __sync_fetch_and_or(v, 4);
#else
    __u64 old = *v;
#endif
    __s64 *t = bpf_map_lookup_elem(&table, &old);
#if __BPF_CPU_VERSION__ >= 3
    if (t) { __sync_lock_test_and_set(t, 5); __sync_val_compare_and_swap(t, 5, 9); __sync_fetch_and_xor(t, 3); __sync_fetch_and_and(t, 1); }
#endif
    __u32 w = skb->len; __u32 *wp = (void*)&global_counter;
    __sync_fetch_and_add(wp, w);
#if __BPF_CPU_VERSION__ >= 3
    __u32 old32 = __sync_fetch_and_and(wp, 0xff);
#else
    __u32 old32 = w;
#endif
    global_counter += mix(old, skb->priority) + config_val + old32;
    switch (skb->protocol) {
    case 1: return 10; case 2: return 20; case 3: return 33; case 4: return 40; case 5: return 51; case 6: return 61; case 9: return 99;
    }
    __u64 x = bpf_ktime_get_ns();
    bpf_map_update_elem(&table, &x, &x, 0);
    return 0;
}
char _license[] SEC("license") = "GPL";
