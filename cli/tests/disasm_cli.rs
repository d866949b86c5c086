//! `ciliumc disasm` through the built binary: rule annotations (the object's `.BTF.ext`
//! line_info) by default, llvm-objdump's exact text with `--raw`.

use std::process::Command;

use ciliumc_targets::codegen::{Annotation, Cond, FunctionBuilder, compile};
use ciliumc_targets::disasm::disassemble_object;
use ciliumc_targets::elf::ObjectWriter;
use ciliumc_targets::hooks::{Hook, TC_ACT_OK, TC_ACT_SHOT};

fn rule(r: u32) -> Annotation {
    Annotation {
        file: "policy.yaml".into(),
        line: 4 + r,
        column: 3,
        text: format!(
            "rule {r}: CiliumNetworkPolicy default/p ingress[{r}] (policy.yaml:{}:3)",
            4 + r
        ),
    }
}

fn annotated_object() -> Vec<u8> {
    let mut f = FunctionBuilder::new("prog", Hook::TcIngress);
    let mark = f.load_ctx("mark");
    let (allow, drop, second) = (f.block(), f.block(), f.block());
    f.annotate(rule(0));
    f.branch(Cond::Eq, mark, 7, allow, second);
    f.switch_to(second);
    f.annotate(rule(1));
    f.branch(Cond::Eq, mark, 9, allow, drop);
    f.switch_to(allow);
    f.ret(TC_ACT_OK);
    f.switch_to(drop);
    f.ret(TC_ACT_SHOT);
    let code = compile(&[f.finish().unwrap()]).unwrap();
    ObjectWriter::new().functions(code).write().unwrap()
}

fn ciliumc_disasm(path: &str, raw: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ciliumc"));
    cmd.arg("disasm").arg(path);
    if raw {
        cmd.arg("--raw");
    }
    let out = cmd.output().expect("run ciliumc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn disasm_shows_rules_and_raw_is_plain() {
    let bytes = annotated_object();
    let path = std::env::temp_dir().join(format!("ciliumc-disasm-cli-{}.o", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let p = path.to_str().unwrap().to_owned();
    let annotated = ciliumc_disasm(&p, false);
    let raw = ciliumc_disasm(&p, true);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(raw, disassemble_object(&bytes, &p).unwrap());
    let lines: Vec<&str> = annotated.lines().collect();
    for r in 0..2 {
        let k = lines
            .iter()
            .position(|l| *l == format!("; {}", rule(r).text))
            .unwrap_or_else(|| panic!("rule {r} missing:\n{annotated}"));
        // Followed by the rule's compare.
        let imm = if r == 0 { "0x7" } else { "0x9" };
        assert!(
            lines[k + 1].contains(imm),
            "rule {r} above {:?}",
            lines[k + 1]
        );
    }
    let stripped: Vec<&str> = lines.into_iter().filter(|l| !l.starts_with("; ")).collect();
    assert_eq!(stripped.join("\n") + "\n", raw);
}
