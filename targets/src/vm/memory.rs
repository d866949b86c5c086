//! The VM's address space: tagged regions, so that pointer arithmetic stays plain integer
//! arithmetic and every dereference is checked against the region the pointer came from.
//!
//! In: addresses computed by the program. Out: the bytes of the region they fall in, or the reason
//! they fall in none. Region `i` spans `[(i + 1) << 32, (i + 1) << 32 + len)`: a pointer that walks
//! off its region lands in a gap or another region's base, and `0` (NULL) is in no region.
//! Map handles (`ld_imm64` of a map) sit above every region and cannot be dereferenced.

use std::collections::HashMap;

use super::maps::{UserMap, ValueId};
use crate::hooks::SK_BUFF_FIELDS;

pub(crate) const CTX_SIZE: usize = 192;
pub(crate) const STACK_SIZE: usize = 512;
/// The kernel's `MAX_CALL_FRAMES`.
pub(crate) const MAX_FRAMES: usize = 8;
/// Where map handles start; region tags stay far below.
pub(crate) const MAP_HANDLE_BASE: u64 = 0xff00_0000_0000_0000;
const MAX_REGIONS: usize = 1 << 24;

const CTX_REGION: usize = 0;
const PACKET_REGION: usize = 1;
const FIRST_STACK_REGION: usize = 2;

/// `__sk_buff` offsets that load pointers rather than integers.
pub(crate) const CTX_DATA: u64 = 76;
pub(crate) const CTX_DATA_END: u64 = 80;
pub(crate) const CTX_DATA_META: u64 = 140;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Region {
    Ctx,
    Packet,
    Stack(usize),
    MapValue { map: usize, id: ValueId },
    Record { map: usize, handle: u64 },
}

pub(crate) fn base(region: usize) -> u64 {
    (region as u64 + 1) << 32
}

/// Why an access failed (the executor adds the location).
#[derive(Debug)]
pub(crate) enum Fault {
    OutOfBounds {
        addr: u64,
        size: u64,
        region: String,
    },
    Other(String),
}

pub(crate) struct Memory {
    regions: Vec<Region>,
    known: HashMap<Region, usize>,
    pub ctx: [u8; CTX_SIZE],
    pub packet: Vec<u8>,
    stacks: Vec<[u8; STACK_SIZE]>,
}

impl Memory {
    pub fn new(packet: &[u8], ctx: [u8; CTX_SIZE]) -> Memory {
        let mut regions = vec![Region::Ctx, Region::Packet];
        regions.extend((0..MAX_FRAMES).map(Region::Stack));
        let known = regions.iter().enumerate().map(|(i, r)| (*r, i)).collect();
        Memory {
            regions,
            known,
            ctx,
            packet: packet.to_vec(),
            stacks: vec![[0; STACK_SIZE]; MAX_FRAMES],
        }
    }

    pub fn ctx_addr() -> u64 {
        base(CTX_REGION)
    }

    pub fn packet_addr(&self) -> u64 {
        base(PACKET_REGION)
    }

    pub fn packet_end(&self) -> u64 {
        base(PACKET_REGION) + self.packet.len() as u64
    }

    /// The frame pointer (one past the top) of call depth `depth`; its stack is zeroed, as the
    /// verifier makes every read follow a write anyway.
    pub fn enter_frame(&mut self, depth: usize) -> u64 {
        if let Some(s) = self.stacks.get_mut(depth) {
            *s = [0; STACK_SIZE];
        }
        base(FIRST_STACK_REGION + depth) + STACK_SIZE as u64
    }

    /// A pointer to the start of `region`, registering it on first use.
    pub fn pointer_to(&mut self, region: Region) -> Result<u64, Fault> {
        if let Some(&i) = self.known.get(&region) {
            return Ok(base(i));
        }
        if self.regions.len() >= MAX_REGIONS {
            return Err(Fault::Other("too many live map values or records".into()));
        }
        let i = self.regions.len();
        self.regions.push(region);
        self.known.insert(region, i);
        Ok(base(i))
    }

    /// The region and offset `addr` points into, if any.
    pub fn locate(&self, addr: u64) -> Option<(Region, u64)> {
        let tag = (addr >> 32).checked_sub(1)?;
        let region = *self.regions.get(usize::try_from(tag).ok()?)?;
        Some((region, addr & 0xffff_ffff))
    }

    /// `size` bytes at `addr`, checked against the region's bounds.
    pub fn slice<'m>(
        &'m mut self,
        maps: &'m mut [UserMap],
        addr: u64,
        size: u64,
        write: bool,
    ) -> Result<&'m mut [u8], Fault> {
        let oob = |region: &str| Fault::OutOfBounds {
            addr,
            size,
            region: region.to_string(),
        };
        let Some((region, off)) = self.locate(addr) else {
            return Err(oob(if addr == 0 {
                "memory (NULL)"
            } else {
                "every region"
            }));
        };
        let range = |len: usize, name: &str| {
            let end = off.checked_add(size).filter(|&e| e <= len as u64);
            end.map(|e| off as usize..e as usize)
                .ok_or_else(|| oob(name))
        };
        match region {
            Region::Ctx => {
                let r = range(CTX_SIZE, "the context")?;
                check_ctx_access(r.start as u64, size, write)?;
                Ok(&mut self.ctx[r])
            }
            Region::Packet => {
                let r = range(self.packet.len(), "the packet")?;
                Ok(&mut self.packet[r])
            }
            Region::Stack(d) => {
                let r = range(STACK_SIZE, "the stack")?;
                let stack = self.stacks.get_mut(d).ok_or_else(|| oob("the stack"))?;
                Ok(&mut stack[r])
            }
            Region::MapValue { map, id } => {
                let m = maps.get_mut(map).ok_or_else(|| oob("a map value"))?;
                let name = format!("a value of map {}", m.name);
                let v = m
                    .value_mut(id)
                    .ok_or_else(|| Fault::Other(format!("use of a deleted value of map {name}")))?;
                let r = range(v.len(), &name)?;
                Ok(&mut v[r])
            }
            Region::Record { map, handle } => {
                let ring = maps
                    .get_mut(map)
                    .and_then(UserMap::ring_mut)
                    .ok_or_else(|| oob("a ring-buffer record"))?;
                let rec = ring
                    .record_mut(handle)
                    .filter(|r| r.state == super::ringbuf::RecordState::Reserved)
                    .ok_or_else(|| {
                        Fault::Other("use of a submitted or discarded ring-buffer record".into())
                    })?;
                let r = range(rec.data.len(), "a ring-buffer record")?;
                Ok(&mut rec.data[r])
            }
        }
    }
}

/// tc programs may read the context except the socket fields, and write only the fields the
/// kernel's `tc_cls_act_is_valid_access` lets them.
fn check_ctx_access(off: u64, size: u64, write: bool) -> Result<(), Fault> {
    let end = off + size;
    for f in SK_BUFF_FIELDS {
        let (fs, fe) = (u64::from(f.offset), u64::from(f.offset) + u64::from(f.size));
        if off < fe && fs < end && !f.readable {
            return Err(Fault::Other(format!("access to context field {}", f.name)));
        }
    }
    if write {
        const WRITABLE: &[(u64, u64)] = &[
            (8, 4),
            (12, 4),
            (32, 4),
            (44, 4),
            (48, 20),
            (72, 4),
            (152, 8),
        ];
        if !WRITABLE.iter().any(|&(s, l)| off >= s && end <= s + l) {
            return Err(Fault::Other(format!(
                "write of {size} bytes to the context at offset {off}"
            )));
        }
    }
    Ok(())
}
