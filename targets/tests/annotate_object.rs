//! Annotations in objects: `.BTF.ext` line_info written by `ObjectWriter`, read back by
//! `btf::ext_read`, shown by `disassemble_object_with_line_info`; objects stay deterministic and
//! the plain disassembly stays llvm-objdump's.

mod annotate_common;

use std::process::Command;

use annotate_common::*;
use ciliumc_targets::btf::ext_read::{ObjectLineInfo, read_line_info};
use ciliumc_targets::disasm::{disassemble_object, disassemble_object_with_line_info};
use ciliumc_targets::elf::{ElfError, ObjectWriter};
use ciliumc_targets::isa::RawInsn;
use ciliumc_targets::program::{Annotation, FunctionCode, LineAnnotation};

fn object(rules: usize, limit: i32) -> (Vec<FunctionCode>, Vec<u8>) {
    let code = compile_module(&annotated_module(rules, 10), limit);
    let bytes = write_object(code.clone());
    (code, bytes)
}

#[test]
fn line_info_reads_back_with_function_starts() {
    let (code, bytes) = object(6, 8);
    let recs = read_line_info(&bytes).unwrap();
    let entry: Vec<&ObjectLineInfo> = recs.iter().filter(|r| r.section == "classifier").collect();
    let text: Vec<&ObjectLineInfo> = recs.iter().filter(|r| r.section == ".text").collect();
    assert_eq!(entry.len(), code[0].line_info.len());
    for (r, a) in entry.iter().zip(&code[0].line_info) {
        assert_eq!(r.insn, a.insn);
        assert_eq!(r.text, a.source.text);
        assert_eq!(r.file, a.source.file);
        assert_eq!((r.line, r.column), (a.source.line, a.source.column));
    }
    // The unannotated subprogram still starts with a record, as the kernel demands.
    assert_eq!(text.len(), 1);
    assert_eq!((text[0].insn, text[0].text.as_str()), (0, "mix"));
    assert_eq!(text[0].file, "ciliumc");
}

#[test]
fn unannotated_function_keeps_its_single_start_record() {
    let f = FunctionCode {
        name: "plain".into(),
        section: "classifier".into(),
        insns: vec![mov_r0(0), exit()],
        ..Default::default()
    };
    let bytes = ObjectWriter::new().function(f).write().unwrap();
    let recs = read_line_info(&bytes).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].insn, recs[0].text.as_str()), (0, "plain"));
}

fn mov_r0(imm: i32) -> RawInsn {
    RawInsn {
        code: 0xb7,
        dst: 0,
        src: 0,
        off: 0,
        imm,
    }
}

fn exit() -> RawInsn {
    RawInsn {
        code: 0x95,
        dst: 0,
        src: 0,
        off: 0,
        imm: 0,
    }
}

fn ld_imm64() -> [RawInsn; 2] {
    [
        RawInsn {
            code: 0x18,
            dst: 0,
            src: 0,
            off: 0,
            imm: 7,
        },
        RawInsn::default(),
    ]
}

fn annotated(insns: Vec<RawInsn>, at: &[usize]) -> FunctionCode {
    FunctionCode {
        name: "f".into(),
        section: "classifier".into(),
        insns,
        relocs: Vec::new(),
        line_info: at
            .iter()
            .map(|&insn| LineAnnotation {
                insn,
                source: Annotation {
                    file: "p.yaml".into(),
                    line: 2,
                    column: 4,
                    text: format!("at {insn}"),
                },
            })
            .collect(),
    }
}

#[test]
fn writer_refuses_line_info_the_kernel_would_refuse() {
    let [a, b] = ld_imm64();
    let insns = vec![a, b, mov_r0(1), exit()];
    let write = |at: &[usize]| {
        ObjectWriter::new()
            .function(annotated(insns.clone(), at))
            .write()
    };
    assert!(write(&[0, 2, 3]).is_ok());
    for bad in [&[1][..], &[2, 2], &[3, 2], &[4]] {
        match write(bad) {
            Err(ElfError::BadLineInfo { insn, .. }) => assert!(bad.contains(&insn)),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn huge_line_and_column_are_clamped() {
    let mut f = annotated(vec![mov_r0(0), exit()], &[0]);
    f.line_info[0].source.line = u32::MAX;
    f.line_info[0].source.column = 5000;
    let bytes = ObjectWriter::new().function(f).write().unwrap();
    let r = &read_line_info(&bytes).unwrap()[0];
    assert_eq!((r.line, r.column), ((1 << 22) - 1, 1023));
}

#[test]
fn annotated_disassembly_puts_each_rule_before_its_code() {
    let (code, bytes) = object(6, 8);
    let plain = disassemble_object(&bytes, "x.o").unwrap();
    let text = disassemble_object_with_line_info(&bytes, "x.o").unwrap();
    // Removing the comment lines gives the plain (llvm-objdump) text back.
    let stripped: String = text
        .lines()
        .filter(|l| !l.starts_with("; "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(stripped, plain);
    let lines: Vec<&str> = text.lines().collect();
    for a in &code[0].line_info {
        let comment = format!("; {}", a.source.text);
        let k = lines
            .iter()
            .position(|l| *l == comment)
            .unwrap_or_else(|| panic!("{comment:?} missing:\n{text}"));
        let next = lines[k + 1];
        let addr = format!("{:>8}:", a.insn);
        assert!(
            next.starts_with(&addr),
            "{comment:?} is followed by {next:?}, expected slot {}",
            a.insn
        );
    }
    assert!(text.contains(
        "; rule 5: CiliumNetworkPolicy default/rule5 ingress[0] (testdata/demo/policy.yaml:30:5)"
    ));
    assert!(text.contains("; mix\n"));
}

#[test]
fn objects_stay_deterministic_and_unannotated_objects_unchanged() {
    let (_, a) = object(5, 8);
    let (_, b) = object(5, 8);
    assert_eq!(a, b);
    // Without annotations the object is what it was before annotations existed: one record per
    // function start, naming it.
    let mut code = compile_module(&annotated_module(5, 10), 8);
    for c in &mut code {
        c.line_info.clear();
    }
    let plain = write_object(code);
    let recs = read_line_info(&plain).unwrap();
    let names: Vec<(&str, usize, &str)> = recs
        .iter()
        .map(|r| (r.section.as_str(), r.insn, r.text.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![("classifier", 0, "annotated"), (".text", 0, "mix")]
    );
}

/// llvm-objdump reads BTF line_info too: `ciliumc disasm` (with annotations) prints exactly what
/// `llvm-objdump-19 -d -S` prints, and `--raw` what `llvm-objdump-19 -d` prints; with and without
/// rule annotations.
#[test]
fn annotated_text_is_llvm_objdump_source_view() {
    let Ok(out) = Command::new("llvm-objdump-19").arg("--version").output() else {
        eprintln!("skipping: llvm-objdump-19 not installed");
        return;
    };
    assert!(out.status.success());
    let (code, annotated) = object(4, 8);
    let mut bare_code = code.clone();
    for c in &mut bare_code {
        c.line_info.clear();
    }
    let bare = write_object(bare_code);
    let dir = std::env::temp_dir().join(format!("ciliumc-annot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in [("annot.o", &annotated), ("bare.o", &bare)] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let p = path.to_str().unwrap();
        let llvm = |args: &[&str]| {
            let out = Command::new("llvm-objdump-19")
                .args(args)
                .arg(p)
                .output()
                .unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(
            llvm(&["-d"]),
            disassemble_object(bytes, p).unwrap(),
            "{name} -d"
        );
        let source = llvm(&["-d", "-S"]);
        assert_eq!(
            source,
            disassemble_object_with_line_info(bytes, p).unwrap(),
            "{name} -d -S"
        );
        if name == "annot.o" {
            for r in 0..4 {
                assert!(source.contains(&format!("; {}", rule_annotation(r).text)));
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The cases where llvm-objdump -S hides a record (repeated file and line on the next
/// instruction whatever the column or text, line 0, empty text) or shows it again (after an
/// instruction without a record, or from another file): our annotated text follows it exactly.
#[test]
fn repeated_lines_follow_llvm_objdump() {
    use ciliumc_targets::codegen::{Cond, FunctionBuilder, compile};
    use ciliumc_targets::hooks::Hook;
    let Ok(out) = Command::new("llvm-objdump-19").arg("--version").output() else {
        eprintln!("skipping: llvm-objdump-19 not installed");
        return;
    };
    assert!(out.status.success());
    let a = |text: &str, file: &str, line: u32, column: u32| Annotation {
        file: file.into(),
        line,
        column,
        text: text.into(),
    };
    let mut f = FunctionBuilder::new("prog", Hook::TcIngress);
    f.annotate(a("first", "p.yaml", 4, 3));
    let m = f.load_ctx("mark");
    let (x, y, z) = (f.block(), f.block(), f.block());
    f.annotate(a("same line again", "p.yaml", 4, 3));
    f.branch(Cond::Eq, m, 7, x, z);
    f.switch_to(z);
    f.annotate(a("same line, other column", "p.yaml", 4, 9));
    let _ = f.load_ctx("priority");
    f.annotate(a("same line, other file", "q.yaml", 4, 9));
    let _ = f.load_ctx("priority");
    f.annotate(a("line zero", "q.yaml", 0, 0));
    let _ = f.load_ctx("priority");
    f.annotate(a("after line zero", "p.yaml", 4, 3));
    f.branch(Cond::Eq, m, 8, x, y);
    f.switch_to(y);
    f.annotate(a("", "p.yaml", 7, 1));
    let _ = f.load_ctx("priority");
    f.annotate(a("two\nlines", "p.yaml", 8, 1));
    f.ret(2);
    f.switch_to(x);
    f.annotate(a("first", "p.yaml", 4, 3));
    f.ret(1);
    let code = compile(&[f.finish().unwrap()]).unwrap();
    let bytes = ObjectWriter::new().functions(code).write().unwrap();
    let path = std::env::temp_dir().join(format!("ciliumc-annot-rep-{}.o", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let p = path.to_str().unwrap().to_owned();
    let out = Command::new("llvm-objdump-19")
        .args(["-d", "-S", &p])
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let llvm = String::from_utf8(out.stdout).unwrap();
    let ours = disassemble_object_with_line_info(&bytes, &p).unwrap();
    assert_eq!(ours, llvm);
    for shown in [
        "; first\n",
        "; same line, other file\n",
        "; after line zero\n",
        "; two lines\n",
    ] {
        assert!(ours.contains(shown), "{shown:?} missing:\n{ours}");
    }
    for hidden in ["same line again", "other column", "line zero\n"] {
        assert!(
            !ours.contains(&format!("; {hidden}")),
            "{hidden:?} shown:\n{ours}"
        );
    }
    assert_eq!(ours.matches("; first\n").count(), 2);
}
