//! The helpers the policy programs call, with the kernel's argument handling and return codes.
//!
//! In: the machine (registers r1–r5 hold the arguments, memory and maps). Out: r0, or a changed
//! control flow for `tail_call`. Any other helper id is [`VmError::UnknownHelper`]. The clock
//! advances 1 µs per read so time moves forward deterministically.

use super::VmError;
use super::exec::{Flow, MAX_TAIL_CALLS, Machine};
use super::maps::EFAULT;
use super::memory::{MAP_HANDLE_BASE, Memory, Region};
use crate::elf::MapType;

const MAP_LOOKUP_ELEM: i32 = 1;
const MAP_UPDATE_ELEM: i32 = 2;
const MAP_DELETE_ELEM: i32 = 3;
const KTIME_GET_NS: i32 = 5;
const GET_PRANDOM_U32: i32 = 7;
const GET_SMP_PROCESSOR_ID: i32 = 8;
const TAIL_CALL: i32 = 12;
const SKB_LOAD_BYTES: i32 = 26;
const JIFFIES64: i32 = 118;
const KTIME_GET_BOOT_NS: i32 = 125;
const RINGBUF_OUTPUT: i32 = 130;
const RINGBUF_RESERVE: i32 = 131;
const RINGBUF_SUBMIT: i32 = 132;
const RINGBUF_DISCARD: i32 = 133;
const RINGBUF_QUERY: i32 = 134;
const KTIME_GET_COARSE_NS: i32 = 160;

/// The length of a jiffy in the interpreter (HZ=250).
const VM_TICK_NS: u64 = 4_000_000;

/// The ids [`call`] implements, for documentation and tests.
pub const SUPPORTED_HELPERS: &[i32] = &[
    MAP_LOOKUP_ELEM,
    MAP_UPDATE_ELEM,
    MAP_DELETE_ELEM,
    KTIME_GET_NS,
    GET_PRANDOM_U32,
    GET_SMP_PROCESSOR_ID,
    TAIL_CALL,
    SKB_LOAD_BYTES,
    JIFFIES64,
    KTIME_GET_BOOT_NS,
    RINGBUF_OUTPUT,
    RINGBUF_RESERVE,
    RINGBUF_SUBMIT,
    RINGBUF_DISCARD,
    RINGBUF_QUERY,
    KTIME_GET_COARSE_NS,
];

/// The map a handle argument names.
fn map_arg(m: &Machine<'_>, value: u64) -> Result<usize, VmError> {
    value
        .checked_sub(MAP_HANDLE_BASE)
        .and_then(|i| usize::try_from(i).ok())
        .filter(|&i| i < m.maps.len())
        .ok_or_else(|| m.fault(format!("helper argument {value:#x} is not a map")))
}

fn ring_arg(m: &Machine<'_>, value: u64) -> Result<usize, VmError> {
    let map = map_arg(m, value)?;
    if m.maps[map].kind != MapType::RingBuf {
        return Err(m.fault(format!("map {} is not a ring buffer", m.maps[map].name)));
    }
    Ok(map)
}

fn keyed_map_arg(m: &Machine<'_>, value: u64) -> Result<usize, VmError> {
    let map = map_arg(m, value)?;
    if matches!(m.maps[map].kind, MapType::RingBuf | MapType::ProgArray) {
        return Err(m.fault(format!(
            "map {} cannot be used with lookup/update/delete from a program",
            m.maps[map].name
        )));
    }
    Ok(map)
}

fn ctx_arg(m: &Machine<'_>, value: u64) -> Result<(), VmError> {
    if value != Memory::ctx_addr() {
        return Err(m.fault("helper argument is not the context"));
    }
    Ok(())
}

fn errno(code: i64) -> u64 {
    code as u64
}

/// Calls helper `id` with the machine's r1–r5; sets r0.
pub(crate) fn call(m: &mut Machine<'_>, id: i32) -> Result<Flow, VmError> {
    let (r1, r2, r3, r4) = (m.regs[1], m.regs[2], m.regs[3], m.regs[4]);
    let r0 = match id {
        MAP_LOOKUP_ELEM => {
            let map = keyed_map_arg(m, r1)?;
            let key = m.read_bytes(r2, u64::from(m.maps[map].key_size))?;
            match m.maps[map].lookup(&key) {
                Some(id) => m
                    .mem
                    .pointer_to(Region::MapValue { map, id })
                    .map_err(|f| m.memory_fault(f))?,
                None => 0,
            }
        }
        MAP_UPDATE_ELEM => {
            let map = keyed_map_arg(m, r1)?;
            let key = m.read_bytes(r2, u64::from(m.maps[map].key_size))?;
            let value = m.read_bytes(r3, u64::from(m.maps[map].value_size))?;
            errno(m.maps[map].update(&key, &value, r4))
        }
        MAP_DELETE_ELEM => {
            let map = keyed_map_arg(m, r1)?;
            let key = m.read_bytes(r2, u64::from(m.maps[map].key_size))?;
            errno(m.maps[map].delete(&key))
        }
        KTIME_GET_NS | KTIME_GET_BOOT_NS | KTIME_GET_COARSE_NS => {
            *m.clock_ns += 1_000;
            *m.clock_ns
        }
        GET_PRANDOM_U32 => {
            *m.clock_ns += 1;
            let mut z = m.clock_ns.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            u64::from((z >> 32) as u32)
        }
        GET_SMP_PROCESSOR_ID => 0,
        // The interpreter's clock ticks at HZ=250.
        JIFFIES64 => *m.clock_ns / VM_TICK_NS,
        TAIL_CALL => return tail_call(m, r1, r2, r3),
        SKB_LOAD_BYTES => {
            ctx_arg(m, r1)?;
            let off = r2 as u32 as usize;
            // The destination is checked before anything is copied or allocated.
            let Machine { mem, maps, .. } = &mut *m;
            let dest = mem.slice(maps, r3, r4, true);
            let dest_len = match dest {
                Ok(d) => d.len(),
                Err(f) => return Err(m.memory_fault(f)),
            };
            let bytes = m
                .mem
                .packet
                .get(off..off.saturating_add(dest_len))
                .filter(|_| off <= 0xffff)
                .map(<[u8]>::to_vec);
            match bytes {
                Some(b) => {
                    m.write_bytes(r3, &b)?;
                    0
                }
                None => {
                    m.write_bytes(r3, &vec![0; dest_len])?;
                    errno(-EFAULT)
                }
            }
        }
        RINGBUF_OUTPUT => {
            let map = ring_arg(m, r1)?;
            let data = m.read_bytes(r2, r3)?;
            let no_ring = m.fault("the ring buffer map has no ring");
            let ring = m.maps[map].ring_mut().ok_or(no_ring)?;
            errno(ring.output(&data, r4))
        }
        RINGBUF_RESERVE => {
            let map = ring_arg(m, r1)?;
            let no_ring = m.fault("the ring buffer map has no ring");
            let ring = m.maps[map].ring_mut().ok_or(no_ring)?;
            match ring.reserve(r2, r3) {
                Some(handle) => m
                    .mem
                    .pointer_to(Region::Record { map, handle })
                    .map_err(|f| m.memory_fault(f))?,
                None => 0,
            }
        }
        RINGBUF_SUBMIT | RINGBUF_DISCARD => {
            let Some((Region::Record { map, handle }, 0)) = m.mem.locate(r1) else {
                return Err(m.fault("ring-buffer submit/discard of a pointer that is not a record"));
            };
            let no_ring = m.fault("the ring buffer map has no ring");
            let ring = m.maps[map].ring_mut().ok_or(no_ring)?;
            if !ring.release(handle, id == RINGBUF_SUBMIT) {
                return Err(m.fault("ring-buffer record released twice"));
            }
            0
        }
        RINGBUF_QUERY => {
            let map = ring_arg(m, r1)?;
            m.maps[map].ring().map_or(0, |r| r.query(r2))
        }
        _ => {
            return Err(VmError::UnknownHelper {
                at: m.location(),
                id,
            });
        }
    };
    m.regs[0] = r0;
    Ok(Flow::Next)
}

/// `bpf_tail_call`: on success the program is replaced; on failure (empty slot, index out of
/// range, more than 33 tail calls) execution continues after the call.
fn tail_call(m: &mut Machine<'_>, ctx: u64, map: u64, index: u64) -> Result<Flow, VmError> {
    ctx_arg(m, ctx)?;
    let map = map_arg(m, map)?;
    if m.maps[map].kind != MapType::ProgArray {
        return Err(m.fault(format!("map {} is not a prog array", m.maps[map].name)));
    }
    let target = m.maps[map]
        .program(index as u32)
        .map(str::to_string)
        .and_then(|p| m.entry(&p));
    match target {
        Some((section, slot)) if m.tail_calls < MAX_TAIL_CALLS => {
            if m.in_subprogram() {
                return Err(m.fault("tail call from a subprogram is not supported"));
            }
            m.tail_calls += 1;
            Ok(Flow::TailCall { section, slot })
        }
        _ => {
            m.regs[0] = 0;
            Ok(Flow::Next)
        }
    }
}
