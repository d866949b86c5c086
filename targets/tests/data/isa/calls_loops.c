// bpf-to-bpf calls, bounded loops, xdp packet parsing, legacy LD_ABS/LD_IND loads.
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef unsigned short __u16;
typedef unsigned char __u8;
#define SEC(n) __attribute__((section(n), used))
struct xdp_md { __u32 data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex; };
struct ethhdr { __u8 dst[6], src[6]; __u16 proto; };
struct iphdr { __u8 ihl_ver, tos; __u16 len, id, frag; __u8 ttl, proto; __u16 csum; __u32 saddr, daddr; };
unsigned long long load_byte(void *skb, unsigned long long off) asm("llvm.bpf.load.byte");
unsigned long long load_half(void *skb, unsigned long long off) asm("llvm.bpf.load.half");
unsigned long long load_word(void *skb, unsigned long long off) asm("llvm.bpf.load.word");

static __attribute__((noinline)) int classify(__u32 saddr, __u32 daddr, __u8 proto) {
    if (proto == 6 && (daddr & 0xffffff00) == 0xc0000200) return 1;
    if (proto == 17) return saddr > daddr ? 2 : 3;
    return 0;
}

static __attribute__((noinline)) __u32 checksum(__u16 *p, int n) {
    __u32 s = 0;
    for (int i = 0; i < n && i < 10; i++) s += p[i];
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return ~s;
}

SEC("xdp") int xdp_prog(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end) return 1;
    if (eth->proto != __builtin_bswap16(0x0800)) return 2;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end) return 1;
    int c = classify(ip->saddr, ip->daddr, ip->proto);
    if (c == 1) return 1;
    if ((void *)ip + 20 <= end && checksum((__u16 *)ip, 10) != 0) return 1;
    return 2 + c;
}

SEC("socket") int sock_prog(void *skb) {
    __u64 proto = load_half(skb, 12);
    if (proto != 0x0800) return 0;
    __u64 ihl = (load_byte(skb, 14) & 0xf) * 4;
    __u64 port = load_half(skb, 14 + ihl + 2);
    return port == 80 ? -1 : (int)load_word(skb, 26);
}

SEC("classifier") int loop_prog(struct xdp_md *ctx) {
    __u32 acc = ctx->ingress_ifindex;
#pragma unroll
    for (int i = 0; i < 300; i++) {
        if (acc & (1u << (i & 31))) acc = acc * 1103515245u + i; else acc ^= acc >> 3;
    }
    return acc & 7;
}
char _license[] SEC("license") = "GPL";
