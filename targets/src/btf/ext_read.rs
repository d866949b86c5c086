//! Reads `.BTF.ext` line_info back out of a BPF ELF object.
//!
//! In: the bytes of an ELF object (ours or clang's). Out: [`ObjectLineInfo`] records per code
//! section, with file name and source-line text resolved through the `.BTF` string table.
//! Only the BTF header and string table are read, so objects with type kinds that
//! [`super::read::ParsedBtf`] does not know still work. An object without `.BTF.ext` (or without
//! line_info in it) has no records.

use object::{Object, ObjectSection};

use super::read::BtfReadError;

/// One `bpf_line_info` record of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectLineInfo {
    /// The code section it belongs to (e.g. `classifier`, `.text`).
    pub section: String,
    /// Instruction slot within the section (the record's byte offset / 8).
    pub insn: usize,
    pub file: String,
    /// The "source line" text: for ciliumc objects, the annotation text.
    pub text: String,
    pub line: u32,
    pub column: u32,
}

const BTF_MAGIC: u16 = 0xeb9f;
const LINE_INFO_MIN_REC: u32 = 16;

fn malformed(msg: impl Into<String>) -> BtfReadError {
    BtfReadError::Malformed(msg.into())
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, BtfReadError> {
    at.checked_add(4)
        .and_then(|end| bytes.get(at..end))
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| malformed(format!("truncated at byte {at}")))
}

fn check_magic(bytes: &[u8], what: &str) -> Result<usize, BtfReadError> {
    let magic = bytes
        .get(0..2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| malformed(format!("{what}: truncated header")))?;
    if magic != BTF_MAGIC {
        return Err(malformed(format!(
            "{what}: bad magic {magic:#x} (big-endian objects are not supported)"
        )));
    }
    Ok(u32_at(bytes, 4)? as usize)
}

/// The string table of a `.BTF` blob.
fn btf_strings(btf: &[u8]) -> Result<&[u8], BtfReadError> {
    let hdr_len = check_magic(btf, ".BTF")?;
    let str_off = u32_at(btf, 16)? as usize;
    let str_len = u32_at(btf, 20)? as usize;
    let start = hdr_len
        .checked_add(str_off)
        .ok_or_else(|| malformed(".BTF: string offset overflows"))?;
    start
        .checked_add(str_len)
        .and_then(|end| btf.get(start..end))
        .ok_or_else(|| malformed(".BTF: string table outside the section"))
}

fn string_at(strings: &[u8], off: u32) -> Result<String, BtfReadError> {
    let rest = strings
        .get(off as usize..)
        .ok_or_else(|| malformed(format!("string offset {off} outside the string table")))?;
    let end = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| malformed(format!("string at {off} is not terminated")))?;
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// Parses the line_info part of `.BTF.ext` bytes against the `.BTF` string table bytes.
pub fn parse_line_info(btf: &[u8], btf_ext: &[u8]) -> Result<Vec<ObjectLineInfo>, BtfReadError> {
    let strings = btf_strings(btf)?;
    let hdr_len = check_magic(btf_ext, ".BTF.ext")?;
    if hdr_len < 24 {
        return Err(malformed(format!(".BTF.ext: header of {hdr_len} bytes")));
    }
    let line_off = u32_at(btf_ext, 16)? as usize;
    let line_len = u32_at(btf_ext, 20)? as usize;
    if line_len == 0 {
        return Ok(Vec::new());
    }
    let part = hdr_len
        .checked_add(line_off)
        .and_then(|s| Some(s..s.checked_add(line_len)?))
        .and_then(|r| btf_ext.get(r))
        .ok_or_else(|| malformed(".BTF.ext: line_info outside the section"))?;
    let rec_size = u32_at(part, 0)?;
    if rec_size < LINE_INFO_MIN_REC {
        return Err(malformed(format!(
            ".BTF.ext: line_info record size {rec_size}"
        )));
    }
    let rec_size = rec_size as usize;
    let mut out = Vec::new();
    let mut at = 4;
    while at < part.len() {
        let section = string_at(strings, u32_at(part, at)?)?;
        let count = u32_at(part, at + 4)? as usize;
        at += 8;
        let needed = count
            .checked_mul(rec_size)
            .filter(|n| at + n <= part.len())
            .ok_or_else(|| malformed(format!(".BTF.ext: {count} records overrun {section}")))?;
        for k in 0..count {
            let r = at + k * rec_size;
            let line_col = u32_at(part, r + 12)?;
            out.push(ObjectLineInfo {
                section: section.clone(),
                insn: (u32_at(part, r)? / 8) as usize,
                file: string_at(strings, u32_at(part, r + 4)?)?,
                text: string_at(strings, u32_at(part, r + 8)?)?,
                line: line_col >> 10,
                column: line_col & 0x3ff,
            });
        }
        at += needed;
    }
    Ok(out)
}

/// The line_info records of an ELF object, in file order; none without `.BTF` or `.BTF.ext`.
pub fn read_line_info(elf_bytes: &[u8]) -> Result<Vec<ObjectLineInfo>, BtfReadError> {
    let file = object::File::parse(elf_bytes).map_err(|e| malformed(format!("ELF: {e}")))?;
    let data = |name: &str| -> Result<Option<&[u8]>, BtfReadError> {
        match file.section_by_name(name) {
            None => Ok(None),
            Some(s) => s
                .data()
                .map(Some)
                .map_err(|e| malformed(format!("{name}: {e}"))),
        }
    };
    match (data(".BTF")?, data(".BTF.ext")?) {
        (Some(btf), Some(ext)) => parse_line_info(btf, ext),
        _ => Ok(Vec::new()),
    }
}
