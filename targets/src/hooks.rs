//! Hook descriptions: what a program attached to tc or XDP sees and may call.
//!
//! In: nothing (static tables). Out: the context layouts (`__sk_buff`, `xdp_md`) with the kind of value
//! each field yields, the verdict codes, and helper ids with the argument and return kinds the kernel's
//! verifier enforces. Codegen types its IR against these tables so that a wrong context offset or a
//! helper called with the wrong kind of argument is caught before the kernel sees the program.
//!
//! Offsets and ids were checked against the kernel uapi header `/usr/include/linux/bpf.h` (Linux 6.18):
//! offsets with `offsetof`, helper ids by position in `___BPF_FUNC_MAPPER`.

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// tc (clsact) ingress, `BPF_PROG_TYPE_SCHED_CLS`, context `__sk_buff`.
    TcIngress,
    /// tc (clsact) egress, `BPF_PROG_TYPE_SCHED_CLS`, context `__sk_buff`.
    TcEgress,
    /// XDP, context `xdp_md`.
    Xdp,
}

impl Hook {
    /// The ELF section libbpf, iproute2 and aya all accept for this hook.
    pub fn section(self) -> &'static str {
        match self {
            Hook::TcIngress | Hook::TcEgress => "classifier",
            Hook::Xdp => "xdp",
        }
    }

    /// The context structure's name in BTF (the kernel matches global-function context
    /// arguments by it).
    pub fn ctx_struct(self) -> &'static str {
        match self {
            Hook::TcIngress | Hook::TcEgress => "__sk_buff",
            Hook::Xdp => "xdp_md",
        }
    }

    /// The context structure's fields.
    pub fn ctx_fields(self) -> &'static [CtxField] {
        match self {
            Hook::TcIngress | Hook::TcEgress => SK_BUFF_FIELDS,
            Hook::Xdp => XDP_MD_FIELDS,
        }
    }

    /// A context field by name (`"data"`, `"mark"`, `"cb[2]"`, `"remote_ip6[1]"`, ...).
    pub fn ctx_field(self, name: &str) -> Option<&'static CtxField> {
        self.ctx_fields().iter().find(|f| f.name == name)
    }

    /// Whether `helper` may be called from this hook (the kernel's per-program-type helper list).
    pub fn allows_helper(self, helper: &HelperSig) -> bool {
        match self {
            Hook::TcIngress | Hook::TcEgress => helper.hooks.tc,
            Hook::Xdp => helper.hooks.xdp,
        }
    }

    /// Size of the context structure in bytes.
    pub fn ctx_size(self) -> u32 {
        match self {
            Hook::TcIngress | Hook::TcEgress => 192,
            Hook::Xdp => 24,
        }
    }
}

/// What loading a context field yields (the verifier's register type after the load).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CtxFieldKind {
    /// An integer.
    Scalar,
    /// `PTR_TO_PACKET`: the first byte of packet data.
    PacketStart,
    /// `PTR_TO_PACKET_END`.
    PacketEnd,
    /// `PTR_TO_PACKET_META`: readable only after a bounds check against `data`; codegen does not
    /// dereference it.
    PacketMeta,
}

/// One readable context field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtxField {
    pub name: &'static str,
    /// Byte offset in the context structure.
    pub offset: u16,
    /// Access size in bytes (4 for all fields here, 8 for `tstamp`/`hwtstamp`).
    pub size: u8,
    pub kind: CtxFieldKind,
    /// Whether this hook's programs may read it (tc may not read the socket fields `family` ..
    /// `local_port`; XDP outside devmap may not read `egress_ifindex`).
    pub readable: bool,
}

const fn f(name: &'static str, offset: u16) -> CtxField {
    CtxField {
        name,
        offset,
        size: 4,
        kind: CtxFieldKind::Scalar,
        readable: true,
    }
}

const fn fk(name: &'static str, offset: u16, kind: CtxFieldKind) -> CtxField {
    CtxField {
        name,
        offset,
        size: 4,
        kind,
        readable: true,
    }
}

const fn f8(name: &'static str, offset: u16) -> CtxField {
    CtxField {
        name,
        offset,
        size: 8,
        kind: CtxFieldKind::Scalar,
        readable: true,
    }
}

/// A field in the layout that the hook's programs may not read.
const fn hidden(name: &'static str, offset: u16) -> CtxField {
    CtxField {
        name,
        offset,
        size: 4,
        kind: CtxFieldKind::Scalar,
        readable: false,
    }
}

/// `struct __sk_buff` (tc). Arrays appear once per element (`cb[0]`..`cb[4]`, `remote_ip6[0]`..).
pub static SK_BUFF_FIELDS: &[CtxField] = &[
    f("len", 0),
    f("pkt_type", 4),
    f("mark", 8),
    f("queue_mapping", 12),
    f("protocol", 16),
    f("vlan_present", 20),
    f("vlan_tci", 24),
    f("vlan_proto", 28),
    f("priority", 32),
    f("ingress_ifindex", 36),
    f("ifindex", 40),
    f("tc_index", 44),
    f("cb[0]", 48),
    f("cb[1]", 52),
    f("cb[2]", 56),
    f("cb[3]", 60),
    f("cb[4]", 64),
    f("hash", 68),
    f("tc_classid", 72),
    fk("data", 76, CtxFieldKind::PacketStart),
    fk("data_end", 80, CtxFieldKind::PacketEnd),
    f("napi_id", 84),
    hidden("family", 88),
    hidden("remote_ip4", 92),
    hidden("local_ip4", 96),
    hidden("remote_ip6[0]", 100),
    hidden("remote_ip6[1]", 104),
    hidden("remote_ip6[2]", 108),
    hidden("remote_ip6[3]", 112),
    hidden("local_ip6[0]", 116),
    hidden("local_ip6[1]", 120),
    hidden("local_ip6[2]", 124),
    hidden("local_ip6[3]", 128),
    hidden("remote_port", 132),
    hidden("local_port", 136),
    fk("data_meta", 140, CtxFieldKind::PacketMeta),
    f8("tstamp", 152),
    f("wire_len", 160),
    f("gso_segs", 164),
    f("gso_size", 176),
    f8("hwtstamp", 184),
];

/// `struct xdp_md`.
pub static XDP_MD_FIELDS: &[CtxField] = &[
    fk("data", 0, CtxFieldKind::PacketStart),
    fk("data_end", 4, CtxFieldKind::PacketEnd),
    fk("data_meta", 8, CtxFieldKind::PacketMeta),
    f("ingress_ifindex", 12),
    f("rx_queue_index", 16),
    hidden("egress_ifindex", 20),
];

// tc verdicts (include/uapi/linux/pkt_cls.h).
pub const TC_ACT_UNSPEC: i32 = -1;
pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_RECLASSIFY: i32 = 1;
pub const TC_ACT_SHOT: i32 = 2;
pub const TC_ACT_PIPE: i32 = 3;
pub const TC_ACT_STOLEN: i32 = 4;
pub const TC_ACT_REDIRECT: i32 = 7;

// XDP verdicts (enum xdp_action).
pub const XDP_ABORTED: i32 = 0;
pub const XDP_DROP: i32 = 1;
pub const XDP_PASS: i32 = 2;
pub const XDP_TX: i32 = 3;
pub const XDP_REDIRECT: i32 = 4;

/// The kind of value a helper argument must be (a summary of the kernel's `enum bpf_arg_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArgKind {
    /// `ARG_PTR_TO_CTX`.
    Ctx,
    /// `ARG_CONST_MAP_PTR` of a map usable with lookup/update/delete.
    Map,
    /// `ARG_CONST_MAP_PTR` of a `BPF_MAP_TYPE_PROG_ARRAY`.
    ProgArray,
    /// `ARG_CONST_MAP_PTR` of a `BPF_MAP_TYPE_RINGBUF`.
    RingBuf,
    /// `ARG_PTR_TO_MAP_KEY`: initialized memory of the preceding map's key size.
    MapKey,
    /// `ARG_PTR_TO_MAP_VALUE`: initialized memory of the preceding map's value size.
    MapValue,
    /// `ARG_PTR_TO_MEM`: initialized memory; its size is the next argument, a `Size`.
    Mem,
    /// `ARG_PTR_TO_MEM | PTR_MAYBE_NULL`: as `Mem`, or the constant 0 (then the size must be 0).
    MemOrNull,
    /// `ARG_PTR_TO_UNINIT_MEM`: memory the helper writes; its size is the next argument.
    UninitMem,
    /// `ARG_CONST_SIZE(_OR_ZERO)`: a constant byte count for the preceding memory argument.
    Size,
    /// `ARG_CONST_ALLOC_SIZE_OR_ZERO`: a constant size of memory the helper allocates.
    AllocSize,
    /// `ARG_PTR_TO_RINGBUF_MEM | OBJ_RELEASE`: a non-null record from `ringbuf_reserve`.
    RingBufRecord,
    /// `ARG_ANYTHING`: any scalar.
    Scalar,
}

/// What a helper returns in r0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetKind {
    /// An integer (`RET_INTEGER`, also helpers declared `RET_VOID`, whose r0 is unknown).
    Scalar,
    /// `RET_PTR_TO_MAP_VALUE_OR_NULL` of the map passed as the first argument.
    MapValueOrNull,
    /// `RET_PTR_TO_RINGBUF_MEM_OR_NULL` sized by the `AllocSize` argument; must be released.
    RingBufRecordOrNull,
    /// `RET_VOID`: r0 is not readable after the call.
    Void,
}

/// Which hooks may call a helper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HookSet {
    pub tc: bool,
    pub xdp: bool,
}

const BOTH: HookSet = HookSet {
    tc: true,
    xdp: true,
};
const TC: HookSet = HookSet {
    tc: true,
    xdp: false,
};
const XDP: HookSet = HookSet {
    tc: false,
    xdp: true,
};

/// A helper's id and signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HelperSig {
    pub name: &'static str,
    /// `BPF_FUNC_*` id (the `imm` of `call`).
    pub id: i32,
    pub args: &'static [ArgKind],
    pub ret: RetKind,
    /// Refused to programs without a GPL-compatible license.
    pub gpl_only: bool,
    /// The helper may move packet data: the verifier invalidates every packet pointer after the call
    /// (`bpf_helper_changes_pkt_data`).
    pub changes_packet: bool,
    pub hooks: HookSet,
}

const fn h(
    name: &'static str,
    id: i32,
    args: &'static [ArgKind],
    ret: RetKind,
    hooks: HookSet,
) -> HelperSig {
    HelperSig {
        name,
        id,
        args,
        ret,
        gpl_only: false,
        changes_packet: false,
        hooks,
    }
}

const fn changes(mut sig: HelperSig) -> HelperSig {
    sig.changes_packet = true;
    sig
}

const fn gpl(mut sig: HelperSig) -> HelperSig {
    sig.gpl_only = true;
    sig
}

use ArgKind::*;
use RetKind::Scalar as Int;

pub static MAP_LOOKUP_ELEM: HelperSig = h(
    "map_lookup_elem",
    1,
    &[Map, MapKey],
    RetKind::MapValueOrNull,
    BOTH,
);
pub static MAP_UPDATE_ELEM: HelperSig = h(
    "map_update_elem",
    2,
    &[Map, MapKey, MapValue, Scalar],
    Int,
    BOTH,
);
pub static MAP_DELETE_ELEM: HelperSig = h("map_delete_elem", 3, &[Map, MapKey], Int, BOTH);
pub static KTIME_GET_NS: HelperSig = h("ktime_get_ns", 5, &[], Int, BOTH);
pub static GET_PRANDOM_U32: HelperSig = h("get_prandom_u32", 7, &[], Int, BOTH);
pub static GET_SMP_PROCESSOR_ID: HelperSig = h("get_smp_processor_id", 8, &[], Int, BOTH);
pub static SKB_STORE_BYTES: HelperSig = changes(h(
    "skb_store_bytes",
    9,
    &[Ctx, Scalar, Mem, Size, Scalar],
    Int,
    TC,
));
pub static L3_CSUM_REPLACE: HelperSig = changes(h(
    "l3_csum_replace",
    10,
    &[Ctx, Scalar, Scalar, Scalar, Scalar],
    Int,
    TC,
));
pub static L4_CSUM_REPLACE: HelperSig = changes(h(
    "l4_csum_replace",
    11,
    &[Ctx, Scalar, Scalar, Scalar, Scalar],
    Int,
    TC,
));
pub static TAIL_CALL: HelperSig = h(
    "tail_call",
    12,
    &[Ctx, ProgArray, Scalar],
    RetKind::Void,
    BOTH,
);
pub static CLONE_REDIRECT: HelperSig =
    changes(h("clone_redirect", 13, &[Ctx, Scalar, Scalar], Int, TC));
pub static REDIRECT: HelperSig = h("redirect", 23, &[Scalar, Scalar], Int, BOTH);
pub static SKB_LOAD_BYTES: HelperSig = h(
    "skb_load_bytes",
    26,
    &[Ctx, Scalar, UninitMem, Size],
    Int,
    TC,
);
pub static CSUM_DIFF: HelperSig = h(
    "csum_diff",
    28,
    &[MemOrNull, Size, MemOrNull, Size, Scalar],
    Int,
    BOTH,
);
pub static SKB_CHANGE_PROTO: HelperSig =
    changes(h("skb_change_proto", 31, &[Ctx, Scalar, Scalar], Int, TC));
pub static SKB_CHANGE_TYPE: HelperSig = h("skb_change_type", 32, &[Ctx, Scalar], Int, TC);
pub static GET_HASH_RECALC: HelperSig = h("get_hash_recalc", 34, &[Ctx], Int, TC);
pub static SKB_CHANGE_TAIL: HelperSig =
    changes(h("skb_change_tail", 38, &[Ctx, Scalar, Scalar], Int, TC));
pub static SKB_PULL_DATA: HelperSig = changes(h("skb_pull_data", 39, &[Ctx, Scalar], Int, TC));
pub static CSUM_UPDATE: HelperSig = h("csum_update", 40, &[Ctx, Scalar], Int, TC);
pub static SET_HASH_INVALID: HelperSig = h("set_hash_invalid", 41, &[Ctx], Int, TC);
pub static XDP_ADJUST_HEAD: HelperSig = changes(h("xdp_adjust_head", 44, &[Ctx, Scalar], Int, XDP));
pub static SKB_ADJUST_ROOM: HelperSig = changes(h(
    "skb_adjust_room",
    50,
    &[Ctx, Scalar, Scalar, Scalar],
    Int,
    TC,
));
pub static XDP_ADJUST_META: HelperSig = changes(h("xdp_adjust_meta", 54, &[Ctx, Scalar], Int, XDP));
pub static XDP_ADJUST_TAIL: HelperSig = changes(h("xdp_adjust_tail", 65, &[Ctx, Scalar], Int, XDP));
pub static FIB_LOOKUP: HelperSig = gpl(h("fib_lookup", 69, &[Ctx, Mem, Size, Scalar], Int, BOTH));
pub static SKB_ECN_SET_CE: HelperSig = h("skb_ecn_set_ce", 97, &[Ctx], Int, TC);
/// `bpf_jiffies64`: the tick counter. The verifier inlines it on 64-bit JITs (one load), unlike
/// the clock helpers.
pub static JIFFIES64: HelperSig = h("jiffies64", 118, &[], Int, BOTH);
pub static KTIME_GET_BOOT_NS: HelperSig = h("ktime_get_boot_ns", 125, &[], Int, BOTH);
pub static RINGBUF_OUTPUT: HelperSig = h(
    "ringbuf_output",
    130,
    &[RingBuf, Mem, Size, Scalar],
    Int,
    BOTH,
);
pub static RINGBUF_RESERVE: HelperSig = h(
    "ringbuf_reserve",
    131,
    &[RingBuf, AllocSize, Scalar],
    RetKind::RingBufRecordOrNull,
    BOTH,
);
pub static RINGBUF_SUBMIT: HelperSig = h(
    "ringbuf_submit",
    132,
    &[RingBufRecord, Scalar],
    RetKind::Void,
    BOTH,
);
pub static RINGBUF_DISCARD: HelperSig = h(
    "ringbuf_discard",
    133,
    &[RingBufRecord, Scalar],
    RetKind::Void,
    BOTH,
);
/// Flags 0 = `BPF_RB_AVAIL_DATA`: bytes written and not yet consumed.
pub static RINGBUF_QUERY: HelperSig = h("ringbuf_query", 134, &[RingBuf, Scalar], Int, BOTH);
pub static CSUM_LEVEL: HelperSig = h("csum_level", 135, &[Ctx, Scalar], Int, TC);
pub static REDIRECT_NEIGH: HelperSig = h(
    "redirect_neigh",
    152,
    &[Scalar, MemOrNull, Size, Scalar],
    Int,
    TC,
);
pub static REDIRECT_PEER: HelperSig = h("redirect_peer", 155, &[Scalar, Scalar], Int, TC);
pub static KTIME_GET_COARSE_NS: HelperSig = h("ktime_get_coarse_ns", 160, &[], Int, BOTH);
pub static CHECK_MTU: HelperSig = h(
    "check_mtu",
    163,
    &[Ctx, Scalar, UninitMem, Scalar, Scalar],
    Int,
    BOTH,
);

/// Every helper codegen knows, by id.
pub static HELPERS: &[&HelperSig] = &[
    &MAP_LOOKUP_ELEM,
    &MAP_UPDATE_ELEM,
    &MAP_DELETE_ELEM,
    &KTIME_GET_NS,
    &GET_PRANDOM_U32,
    &GET_SMP_PROCESSOR_ID,
    &SKB_STORE_BYTES,
    &L3_CSUM_REPLACE,
    &L4_CSUM_REPLACE,
    &TAIL_CALL,
    &CLONE_REDIRECT,
    &REDIRECT,
    &SKB_LOAD_BYTES,
    &CSUM_DIFF,
    &SKB_CHANGE_PROTO,
    &SKB_CHANGE_TYPE,
    &GET_HASH_RECALC,
    &SKB_CHANGE_TAIL,
    &SKB_PULL_DATA,
    &CSUM_UPDATE,
    &SET_HASH_INVALID,
    &XDP_ADJUST_HEAD,
    &SKB_ADJUST_ROOM,
    &XDP_ADJUST_META,
    &XDP_ADJUST_TAIL,
    &FIB_LOOKUP,
    &SKB_ECN_SET_CE,
    &JIFFIES64,
    &KTIME_GET_BOOT_NS,
    &RINGBUF_OUTPUT,
    &RINGBUF_RESERVE,
    &RINGBUF_SUBMIT,
    &RINGBUF_DISCARD,
    &RINGBUF_QUERY,
    &CSUM_LEVEL,
    &REDIRECT_NEIGH,
    &REDIRECT_PEER,
    &KTIME_GET_COARSE_NS,
    &CHECK_MTU,
];

/// A helper by name (without the `bpf_` prefix).
pub fn helper(name: &str) -> Option<&'static HelperSig> {
    HELPERS.iter().copied().find(|h| h.name == name)
}

/// A helper by `BPF_FUNC_*` id.
pub fn helper_by_id(id: i32) -> Option<&'static HelperSig> {
    HELPERS.iter().copied().find(|h| h.id == id)
}

/// Size of `struct bpf_fib_lookup`, the `params` of `fib_lookup`.
pub const BPF_FIB_LOOKUP_SIZE: u32 = 64;
