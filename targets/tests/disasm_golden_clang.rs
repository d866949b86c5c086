//! Golden test: our `disassemble_object` against `llvm-objdump-19 -d` on objects clang-19 builds
//! from the C files in `tests/data/isa`, for every `-mcpu` (v1..v4), with and without
//! `--mattr=+alu32`.

mod isa_common;

use std::path::Path;
use std::process::Command;

use ciliumc_targets::disasm::{DisasmOptions, disassemble_object, disassemble_object_with};
use isa_common::tools::{first_differences, objdump, require_tool, scratch_dir};

#[test]
fn clang_objects_disassemble_like_llvm_objdump() {
    let (Some(clang), Some(llvm_objdump)) =
        (require_tool("clang-19"), require_tool("llvm-objdump-19"))
    else {
        return;
    };
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/isa");
    let dir = scratch_dir("clang");
    let mut sources: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    sources.sort();
    assert!(
        sources.len() >= 3,
        "expected the C test inputs in {}",
        data.display()
    );
    let mut compared = 0;
    let mut failures = String::new();
    let mut all_text = String::new();
    for src in &sources {
        for cpu in ["v1", "v2", "v3", "v4"] {
            let stem = src.file_stem().unwrap().to_string_lossy();
            let obj = dir.join(format!("{stem}_{cpu}.o"));
            let st = Command::new(&clang)
                .args(["-O2", "-g", "-target", "bpf", &format!("-mcpu={cpu}"), "-c"])
                .arg(src)
                .arg("-o")
                .arg(&obj)
                .status()
                .expect("run clang-19");
            assert!(
                st.success(),
                "clang-19 failed on {} -mcpu={cpu}",
                src.display()
            );
            let bytes = std::fs::read(&obj).unwrap();
            let shown = obj.to_string_lossy().to_string();
            for alu32 in [false, true] {
                let (ours, theirs) = if alu32 {
                    let opts = DisasmOptions {
                        alu32: true,
                        lossless: false,
                    };
                    (
                        disassemble_object_with(&bytes, &shown, opts).unwrap(),
                        objdump(&llvm_objdump, &obj, &["--mattr=+alu32"]),
                    )
                } else {
                    (
                        disassemble_object(&bytes, &shown).unwrap(),
                        objdump(&llvm_objdump, &obj, &[]),
                    )
                };
                assert!(
                    theirs.lines().count() > 10,
                    "objdump printed almost nothing for {shown}"
                );
                compared += 1;
                all_text.push_str(&theirs);
                if ours != theirs {
                    failures.push_str(&format!(
                        "{shown} (alu32={alu32}):\n{}",
                        first_differences(&ours, &theirs, 5)
                    ));
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{failures}");
    // The inputs must keep exercising what this test is for.
    for needle in [
        "gotol ",
        "call 0x1",
        "call -0x1",
        " ll",
        "lock *(u64 *)",
        "lock *(u32 *)",
        "atomic_fetch_or(",
        "w8 = atomic_fetch_and((u32 *)",
        "xchg_64(",
        "cmpxchg_64(",
        "s/= ",
        "s%= ",
        "= (s8)",
        "= (s16)",
        "= (s32)",
        "*(s8 *)",
        "*(s16 *)",
        "= bswap16 ",
        "= be16 ",
        "skb[0x",
        "skb[r",
        "if w",
        "s>>=",
        "<unknown>",
        "Disassembly of section .text:",
        "Disassembly of section classifier:",
    ] {
        assert!(
            all_text.contains(needle),
            "no clang object exercised `{needle}`"
        );
    }
    assert_eq!(compared, sources.len() * 8);
}
