// cpu v4 operations: sign-extending loads and moves, sdiv/smod, bswap, gotol candidates.
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef unsigned short __u16;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
#define SEC(n) __attribute__((section(n), used))
struct __sk_buff { __u32 len, pkt_type, mark, queue_mapping, protocol, vlan_present, vlan_tci, vlan_proto, priority, ingress_ifindex, ifindex, tc_index, cb[5], hash, tc_classid, data, data_end; };

__s64 sx_loads(__s8 *a, __s16 *b, __s32 *c) { return *a + *b + *c; }
__s64 sx_moves(__s64 a, __s64 b, __s64 c) { return (__s8)a + (__s16)b + (__s32)c; }
__s32 sx_moves32(__s32 a, __s32 b) { return (__s8)a * (__s16)b; }
#if __BPF_CPU_VERSION__ >= 4
__s64 sdivmod(__s64 a, __s64 b) { return a / b + a % b; }
__s32 sdivmod32(__s32 a, __s32 b) { return a / b + a % b + a / 7 + a % -3; }
#endif
__u64 udivmod(__u64 a, __u64 b) { return a / b + a % b + a / 13 + a % 10; }
__u32 udivmod32(__u32 a, __u32 b) { return a / b + a % b; }
__u64 swaps(__u64 a, __u32 b, __u16 c) { return __builtin_bswap64(a) + __builtin_bswap32(b) + __builtin_bswap16(c); }
__u64 shifts(__u64 a, __s64 b, __u32 c, __s32 d, int n) { return (a << n) + (b >> n) + (a >> 3) + (c << n) + (d >> n) + (c >> 5) + (d >> 7) + (__u32)(c << 3); }
__u64 bits(__u64 a, __u64 b, __u32 c) { return (a & b) | (a ^ 0x1234) | (~a) | (-b) | (c & 0xffff) | (c ^ b) | (__u32)-c; }
__u64 big(__u64 a) { return a + 0x123456789abcdefULL + (a * 0xfffffffffULL); }
__u64 cmp32(__u32 a, __u32 b, __s32 c) { if (a < b) return 1; if (c < -5) return 2; if (a == 17) return 3; if ((a & 8)) return 4; if (c >= b) return 5; return 6; }
__u64 cmp64(__u64 a, __u64 b, __s64 c) { if (a <= b) return 1; if (c > -5) return 2; if (a != 17) return 3; if ((a & b)) return 4; if (c <= (__s64)b) return 5; return 6; }
void stores(__u64 *p, __u32 *q, __u16 *r, unsigned char *s, __u64 v) { p[0] = 0; p[1] = v; q[0] = 7; q[1] = v; r[0] = -1; r[1] = v; s[0] = 3; s[3] = v; }
SEC("classifier") int prog(struct __sk_buff *skb) { return skb->len + sx_loads((void*)0, 0, 0); }
char _license[] SEC("license") = "GPL";
