//! Properties of the VM: arbitrary packets and arbitrary (decodable) instruction streams end in a
//! result or a `VmError`, never a panic; a bounds-checking parser's answer depends only on the
//! bytes it checked.

mod isa_common;

use ciliumc_targets::elf::{MapDef, ObjectWriter, TypeDesc};
use ciliumc_targets::isa::{Insn, encode};
use ciliumc_targets::program::FunctionCode;
use ciliumc_targets::vm::{Vm, VmError};
use isa_common::strategy::program;
use proptest::prelude::*;

fn object_of(insns: &[Insn]) -> Option<Vec<u8>> {
    ObjectWriter::new()
        .function(FunctionCode {
            name: "prog".into(),
            section: "classifier".into(),
            insns: encode(insns),
            relocs: Vec::new(),
            line_info: Vec::new(),
        })
        .map(MapDef::hash("h", TypeDesc::U32, TypeDesc::U64, 4))
        .map(MapDef::ringbuf("events", 4096))
        .write()
        .ok()
}

/// Parses Ethernet + IPv4 + the L4 ports with bounds checks, returns `proto << 16 | dport`.
const PARSER: &str = "
    r2 = *(u32 *)(r1 + 0x4c)
    r3 = *(u32 *)(r1 + 0x50)
    r4 = r2
    r4 += 0x22
    if r4 > r3 goto short
    r5 = *(u16 *)(r2 + 0xc)
    if r5 != 0x8 goto other
    r6 = *(u8 *)(r2 + 0xe)
    r6 &= 0xf
    r6 <<= 0x2
    if r6 < 0x14 goto other
    r7 = *(u8 *)(r2 + 0x17)
    r2 += r6
    r4 = r2
    r4 += 0x12
    if r4 > r3 goto short
    r0 = *(u16 *)(r2 + 0x10)
    r0 = be16 r0
    r7 <<= 0x10
    r0 |= r7
    exit
short:
    r0 = 0x2
    exit
other:
    r0 = 0x1
    exit
";

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_packets_never_panic_the_parser(packet in prop::collection::vec(any::<u8>(), 0..128)) {
        let insns = ciliumc_targets::asm::assemble(PARSER).unwrap();
        let mut vm = Vm::from_object(&object_of(&insns).unwrap()).unwrap();
        let r = vm.run("prog", &packet);
        // The parser checks every read, so every packet must run to completion.
        prop_assert!(r.is_ok(), "{r:?}");
        let ret = r.unwrap().ret;
        if packet.len() < 34 {
            prop_assert_eq!(ret, 2);
        } else if packet[12..14] != [8, 0] || (packet[14] & 15) < 5 {
            prop_assert_eq!(ret, 1);
        } else {
            let l4 = 14 + usize::from(packet[14] & 15) * 4;
            if packet.len() < l4 + 4 {
                prop_assert_eq!(ret, 2);
            } else {
                let want = u64::from(packet[23]) << 16
                    | u64::from(u16::from_be_bytes([packet[l4 + 2], packet[l4 + 3]]));
                prop_assert_eq!(ret, want);
            }
        }
    }

    #[test]
    fn random_programs_end_in_a_result_or_an_error(
        insns in program(),
        packet in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        let Some(bytes) = object_of(&insns) else { return Ok(()); };
        let Ok(mut vm) = Vm::from_object(&bytes) else { return Ok(()); };
        vm.set_step_limit(5_000);
        match vm.run("prog", &packet) {
            Ok(_) | Err(VmError::OutOfBounds { .. }) | Err(VmError::Fault { .. })
            | Err(VmError::UnknownHelper { .. }) | Err(VmError::StepLimit(_)) => {}
            Err(e) => prop_assert!(false, "unexpected error kind {e:?}"),
        }
    }
}
