//! The BTF encoder against the kernel's BTF checker (`BPF_BTF_LOAD`) and bpftool: every kind
//! the encoder writes, in fixed and random combinations.

use ciliumc_targets::btf::{Btf, FuncLinkage, IntEncoding, Member, VarLinkage, VarSecInfo};
use ciliumc_tests::kernel_or_skip;
use ciliumc_tests::sys;
use ciliumc_tests::tools::{TempObject, run};
use proptest::prelude::*;

/// One of every kind: int, float, ptr, array, struct, union, enum, fwd, typedef, const,
/// volatile, func_proto, func, var, datasec.
fn every_kind() -> Btf {
    let mut b = Btf::new();
    let int = b.add_int("int", 4, IntEncoding::Signed);
    let u8_t = b.add_int("unsigned char", 1, IntEncoding::Unsigned);
    let chr = b.add_int("char", 1, IntEncoding::Char);
    let boolean = b.add_int("_Bool", 1, IntEncoding::Bool);
    let dbl = b.add_float("double", 8);
    let arr = b.add_array(u8_t, int, 16);
    let fwd = b.add_fwd("opaque", false);
    let ptr = b.add_ptr(fwd);
    let st = b.add_struct(
        "record",
        32,
        &[
            Member {
                name: "id".into(),
                ty: int,
                bit_offset: 0,
            },
            Member {
                name: "flag".into(),
                ty: boolean,
                bit_offset: 32,
            },
            Member {
                name: "tag".into(),
                ty: chr,
                bit_offset: 40,
            },
            Member {
                name: "bytes".into(),
                ty: arr,
                bit_offset: 64,
            },
            Member {
                name: "next".into(),
                ty: ptr,
                bit_offset: 192,
            },
        ],
    );
    let un = b.add_union(
        "either",
        8,
        &[
            Member {
                name: "i".into(),
                ty: int,
                bit_offset: 0,
            },
            Member {
                name: "d".into(),
                ty: dbl,
                bit_offset: 0,
            },
        ],
    );
    let en = b.add_enum("color", 4, false, &[("RED", 0), ("GREEN", 1), ("BLUE", 2)]);
    let td = b.add_typedef("record_t", st);
    let cst = b.add_const(td);
    let vol = b.add_volatile(un);
    let cptr = b.add_ptr(cst);
    let proto = b.add_func_proto(int, &[("r", cptr), ("c", en)]);
    b.add_func("use_record", proto, FuncLinkage::Global);
    let var_a = b.add_var("shared", vol, VarLinkage::GlobalAllocated);
    let var_b = b.add_var("count", int, VarLinkage::Static);
    b.add_datasec(
        ".data",
        16,
        &[
            VarSecInfo {
                var: var_a,
                offset: 0,
                size: 8,
            },
            VarSecInfo {
                var: var_b,
                offset: 8,
                size: 4,
            },
        ],
    );
    b
}

#[test]
fn kernel_accepts_every_kind() {
    let Some(_k) = kernel_or_skip!() else { return };
    let bytes = every_kind().to_bytes();
    sys::btf_load(&bytes).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn kernel_rejects_a_broken_blob() {
    let Some(_k) = kernel_or_skip!() else { return };
    // A struct member pointing past the last type: the checker must refuse it, so the
    // acceptance test above is meaningful.
    let mut b = Btf::new();
    b.add_struct(
        "broken",
        4,
        &[Member {
            name: "x".into(),
            ty: 99,
            bit_offset: 0,
        }],
    );
    let err = sys::btf_load(&b.to_bytes()).unwrap_err();
    assert!(err.to_string().contains("Invalid"), "{err}");
}

#[test]
fn bpftool_dumps_every_kind() {
    let Some(_k) = kernel_or_skip!() else { return };
    let file = TempObject::new(&every_kind().to_bytes()).unwrap();
    let dump = run(
        "bpftool",
        &["btf", "dump", "file", file.path.to_str().unwrap()],
    )
    .unwrap();
    for want in [
        "INT 'int' size=4 bits_offset=0 nr_bits=32 encoding=SIGNED",
        "INT 'char' size=1 bits_offset=0 nr_bits=8 encoding=CHAR",
        "INT '_Bool' size=1 bits_offset=0 nr_bits=8 encoding=BOOL",
        "FLOAT 'double' size=8",
        "ARRAY '(anon)' type_id=2 index_type_id=1 nr_elems=16",
        "FWD 'opaque' fwd_kind=struct",
        "STRUCT 'record' size=32 vlen=5",
        "'next' type_id=8 bits_offset=192",
        "UNION 'either' size=8 vlen=2",
        "ENUM 'color' encoding=UNSIGNED size=4 vlen=3",
        "'BLUE' val=2",
        "TYPEDEF 'record_t' type_id=9",
        "CONST '(anon)' type_id=12",
        "VOLATILE '(anon)' type_id=10",
        "FUNC 'use_record' type_id=16 linkage=global",
        "VAR 'shared' type_id=14, linkage=global",
        "VAR 'count' type_id=1, linkage=static",
        "DATASEC '.data' size=16 vlen=2",
    ] {
        assert!(dump.contains(want), "missing `{want}` in:\n{dump}");
    }
}

/// A random but valid BTF: ints, then aggregates, pointers, arrays and modifiers over earlier
/// types, then a func per proto.
fn random_btf() -> impl Strategy<Value = Vec<(u8, u32, u32)>> {
    prop::collection::vec((0u8..8, any::<u32>(), 1u32..8), 1..40)
}

fn build(ops: &[(u8, u32, u32)]) -> Btf {
    let mut b = Btf::new();
    let int = b.add_int("int", 4, IntEncoding::Signed);
    let mut sized = vec![(int, 4u32)];
    for (i, &(op, pick, n)) in ops.iter().enumerate() {
        let (base, size) = sized[pick as usize % sized.len()];
        let name = format!("t{i}");
        // Keep aggregate sizes far from u32 overflow, which the kernel rightly refuses.
        let op = if size.saturating_mul(n) > 1 << 20 && matches!(op, 2 | 3) {
            1
        } else {
            op
        };
        match op {
            0 => sized.push((
                b.add_int(&name, [1, 2, 4, 8][n as usize % 4], IntEncoding::Unsigned),
                [1, 2, 4, 8][n as usize % 4],
            )),
            1 => sized.push((b.add_ptr(base), 8)),
            2 => sized.push((b.add_array(base, int, n), size * n)),
            3 => {
                let members: Vec<Member> = (0..n)
                    .map(|m| Member {
                        name: format!("m{m}"),
                        ty: base,
                        bit_offset: m * size * 8,
                    })
                    .collect();
                sized.push((b.add_struct(&name, size * n, &members), size * n));
            }
            4 => sized.push((b.add_typedef(&name, base), size)),
            5 => sized.push((b.add_const(base), size)),
            6 => {
                let proto = b.add_func_proto(int, &[("a", base)]);
                b.add_func(&name, proto, FuncLinkage::Static);
            }
            _ => {
                let members = [
                    Member {
                        name: "a".into(),
                        ty: base,
                        bit_offset: 0,
                    },
                    Member {
                        name: "b".into(),
                        ty: int,
                        bit_offset: 0,
                    },
                ];
                sized.push((b.add_union(&name, size.max(4), &members), size.max(4)));
            }
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]
    #[test]
    fn kernel_accepts_random_valid_btf(ops in random_btf()) {
        let Some(_k) = kernel_or_skip!() else { return Ok(()) };
        let b = build(&ops);
        let bytes = b.to_bytes();
        prop_assert!(sys::btf_load(&bytes).is_ok(), "{}", sys::btf_load(&bytes).unwrap_err());
    }
}
