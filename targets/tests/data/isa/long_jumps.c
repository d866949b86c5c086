// A branch over a large unrolled body: with -mcpu=v4 clang emits gotol (JMP32|JA, 32-bit offset).
typedef unsigned int __u32;
#define SEC(n) __attribute__((section(n), used))
struct xdp_md { __u32 data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex; };
#if __BPF_CPU_VERSION__ >= 4
#define BODY 12000
#else
#define BODY 200
#endif
SEC("xdp") int long_jumps(struct xdp_md *ctx) {
    __u32 acc = ctx->ingress_ifindex;
    if (ctx->rx_queue_index == 7) {
#pragma unroll
        for (int i = 0; i < BODY; i++) { acc = acc * 1103515245u + i; acc ^= acc >> 7; }
    }
    return acc & 3;
}
char _license[] SEC("license") = "GPL";
