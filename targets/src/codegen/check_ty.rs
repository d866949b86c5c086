//! The verifier-level types the checker tracks, their merge at control-flow joins, and the
//! stack-initialization bitmap.
//!
//! In: nothing but IR ids. Out: [`Ty`], [`join`], [`StackInit`] for [`super`] (the checker).

use super::super::ir::{Function, MapId, SlotId};

/// The verifier-level type of a virtual register at one program point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    /// Not defined on some path here.
    Undef,
    /// Different, incompatible types on different paths.
    Conflict,
    /// An integer below 2^bits.
    Scalar {
        bits: u8,
    },
    Ctx,
    /// `base + off` where `base` is packet data plus a variable part (`base` 0: none);
    /// bytes `[0, range)` from `base` are proven readable; the variable part is at most `var_max`.
    Packet {
        base: u32,
        off: i32,
        var_max: u32,
        range: u32,
    },
    PacketEnd,
    PacketMeta,
    /// A packet pointer after a helper that may move packet data.
    Invalid {
        helper: &'static str,
    },
    MapPtr {
        map: MapId,
    },
    MapValueOrNull {
        map: MapId,
        id: u32,
    },
    MapValue {
        map: MapId,
        off: i32,
    },
    Stack {
        slot: SlotId,
        off: i32,
    },
    RecordOrNull {
        id: u32,
        size: u32,
    },
    Record {
        id: u32,
        size: u32,
        off: i32,
    },
}

impl Ty {
    pub(super) fn describe(&self, func: &Function) -> String {
        match *self {
            Ty::Undef => "an undefined value".into(),
            Ty::Conflict => "different types on different paths".into(),
            Ty::Scalar { bits } => format!("a {bits}-bit scalar"),
            Ty::Ctx => "the context".into(),
            Ty::Packet { .. } => "a packet pointer".into(),
            Ty::PacketEnd => "the packet end".into(),
            Ty::PacketMeta => "the packet metadata pointer".into(),
            Ty::Invalid { helper } => format!("a packet pointer invalidated by {helper}"),
            Ty::MapPtr { map } => format!("map '{}'", map_name(func, map)),
            Ty::MapValueOrNull { map, .. } => {
                format!("a value of map '{}' or null", map_name(func, map))
            }
            Ty::MapValue { map, .. } => format!("a value of map '{}'", map_name(func, map)),
            Ty::Stack { slot, .. } => format!("a pointer to {slot}"),
            Ty::RecordOrNull { .. } => "a ring-buffer record or null".into(),
            Ty::Record { .. } => "a ring-buffer record".into(),
        }
    }
}

pub(super) fn map_name(func: &Function, map: MapId) -> &str {
    func.maps
        .get(map.0 as usize)
        .map(|m| m.name.as_str())
        .unwrap_or("?")
}

pub(super) fn join(a: Ty, b: Ty) -> Ty {
    match (a, b) {
        _ if a == b => a,
        (Ty::Undef, _) | (_, Ty::Undef) => Ty::Undef,
        (Ty::Scalar { bits: x }, Ty::Scalar { bits: y }) => Ty::Scalar { bits: x.max(y) },
        (
            Ty::Packet {
                base,
                off,
                var_max,
                range: r1,
            },
            Ty::Packet {
                base: b2,
                off: o2,
                var_max: v2,
                range: r2,
            },
        ) if base == b2 && off == o2 && var_max == v2 => Ty::Packet {
            base,
            off,
            var_max,
            range: r1.min(r2),
        },
        (Ty::MapValueOrNull { map, id }, Ty::MapValue { map: m2, off: 0 })
        | (Ty::MapValue { map: m2, off: 0 }, Ty::MapValueOrNull { map, id })
            if map == m2 =>
        {
            Ty::MapValueOrNull { map, id }
        }
        (Ty::Invalid { helper }, _) | (_, Ty::Invalid { helper }) => Ty::Invalid { helper },
        _ => Ty::Conflict,
    }
}

pub(super) fn bits_of(v: u64) -> u8 {
    (64 - v.leading_zeros()) as u8
}

/// One bit per byte of the 512-byte frame.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct StackInit([u64; 8]);

impl StackInit {
    pub(super) fn write(&mut self, from: u32, len: u32) {
        for b in from..from + len {
            self.0[(b / 64) as usize] |= 1 << (b % 64);
        }
    }

    pub(super) fn all_written(&self, from: u32, len: u32) -> bool {
        (from..from + len).all(|b| self.0[(b / 64) as usize] & (1 << (b % 64)) != 0)
    }

    pub(super) fn meet(&self, o: &StackInit) -> StackInit {
        let mut r = *self;
        for (a, b) in r.0.iter_mut().zip(&o.0) {
            *a &= b;
        }
        r
    }
}
