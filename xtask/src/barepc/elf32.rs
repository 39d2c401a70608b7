//! ELF64 to ELF32: the linker writes `barepc` as ELF64 (the Rust target's class), but Multiboot
//! loaders take a kernel without the a.out-kludge addresses only as ELF32 (Multiboot
//! Specification 0.6.96 §3.1.3; QEMU's and the hypervisor's loaders refuse ELFCLASS64). A
//! multiboot loader reads the program headers only, so the ELF32 file carries the ELF header,
//! the `PT_LOAD` headers and their bytes, and no sections (System V ABI, "ELF Header" and
//! "Program Header"; Intel386 supplement: EM_386).

use anyhow::{Result, bail, ensure};

const PT_LOAD: u32 = 1;
const EM_386: u16 = 3;
const EHDR32: usize = 52;
const PHDR32: usize = 32;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// One loadable segment.
struct Load<'a> {
    vaddr: u32,
    paddr: u32,
    mem_size: u32,
    flags: u32,
    data: &'a [u8],
}

/// The ELF32 executable with `elf64`'s loadable segments and entry point. Every address and
/// size must fit in 32 bits.
pub fn from_elf64(elf64: &[u8]) -> Result<Vec<u8>> {
    ensure!(elf64.len() >= 64 && elf64[..4] == *b"\x7fELF", "not an ELF file");
    ensure!(elf64[4] == 2 && elf64[5] == 1, "not a little-endian ELF64 file");
    let narrow = |v: u64, what: &str| -> Result<u32> {
        u32::try_from(v).map_err(|_| anyhow::anyhow!("{what} {v:#x} does not fit in 32 bits"))
    };
    let entry = narrow(u64_at(elf64, 24), "entry point")?;
    let phoff = usize::try_from(u64_at(elf64, 32))?;
    let (phentsize, phnum) = (usize::from(u16_at(elf64, 54)), usize::from(u16_at(elf64, 56)));
    ensure!(phentsize == 56, "program header entries of {phentsize} bytes, not 56");
    let table = phoff
        .checked_add(phnum * 56)
        .and_then(|end| elf64.get(phoff..end))
        .ok_or_else(|| anyhow::anyhow!("the program headers lie outside the file"))?;
    let mut loads = Vec::new();
    for ph in table.chunks_exact(56) {
        if u32_at(ph, 0) != PT_LOAD {
            continue;
        }
        let (offset, file_size) = (u64_at(ph, 8), u64_at(ph, 32));
        let data = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(file_size).ok())
            .and_then(|(o, n)| elf64.get(o..o.checked_add(n)?))
            .ok_or_else(|| anyhow::anyhow!("a segment lies outside the file"))?;
        loads.push(Load {
            vaddr: narrow(u64_at(ph, 16), "segment address")?,
            paddr: narrow(u64_at(ph, 24), "segment address")?,
            mem_size: narrow(u64_at(ph, 40), "segment size")?,
            flags: u32_at(ph, 4),
            data,
        });
    }
    if loads.is_empty() {
        bail!("no loadable segment");
    }
    // Layout: header, program headers, then each segment's bytes at a page-aligned offset
    // congruent to its address (the System V ABI's rule for p_offset and p_vaddr).
    let mut out = vec![0u8; EHDR32 + PHDR32 * loads.len()];
    let mut offsets = Vec::new();
    for l in &loads {
        let page = out.len().div_ceil(4096) * 4096;
        let at = page + (l.vaddr as usize % 4096);
        out.resize(at, 0);
        offsets.push(at as u32);
        out.extend_from_slice(l.data);
    }
    let header = &mut out[..EHDR32];
    header[..4].copy_from_slice(b"\x7fELF");
    header[4..7].copy_from_slice(&[1, 1, 1]); // ELFCLASS32, little-endian, version 1
    let put16 = |h: &mut [u8], at: usize, v: u16| h[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 = |h: &mut [u8], at: usize, v: u32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put16(header, 16, 2); // ET_EXEC
    put16(header, 18, EM_386);
    put32(header, 20, 1);
    put32(header, 24, entry);
    put32(header, 28, EHDR32 as u32);
    put16(header, 40, EHDR32 as u16);
    put16(header, 42, PHDR32 as u16);
    put16(header, 44, loads.len() as u16);
    put16(header, 46, 40); // e_shentsize of ELF32, though there are no sections
    for (i, (l, off)) in loads.iter().zip(offsets).enumerate() {
        let ph = &mut out[EHDR32 + i * PHDR32..EHDR32 + (i + 1) * PHDR32];
        for (at, v) in [
            (0, PT_LOAD),
            (4, off),
            (8, l.vaddr),
            (12, l.paddr),
            (16, l.data.len() as u32),
            (20, l.mem_size),
            (24, l.flags),
            (28, 4096),
        ] {
            put32(ph, at, v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF64 file with two PT_LOADs (0x8000: 3 bytes; 0x1000000: 4 bytes + 12 of .bss) and a
    /// PT_NOTE that must not be carried over.
    fn elf64(entry: u64) -> Vec<u8> {
        let mut f = vec![0u8; 0x3000];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[16] = 2;
        f[18] = 62;
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54] = 56;
        f[56] = 3;
        let ph = |f: &mut Vec<u8>, i: usize, kind: u32, off: u64, addr: u64, fs: u64, ms: u64| {
            let at = 64 + i * 56;
            f[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            f[at + 4..at + 8].copy_from_slice(&5u32.to_le_bytes());
            for (o, v) in [(8, off), (16, addr), (24, addr), (32, fs), (40, ms)] {
                f[at + o..at + o + 8].copy_from_slice(&v.to_le_bytes());
            }
        };
        ph(&mut f, 0, 1, 0x1000, 0x8000, 3, 3);
        ph(&mut f, 1, 4, 0x1800, 0x9000, 8, 8);
        ph(&mut f, 2, 1, 0x2000, 0x100_0000, 4, 16);
        f[0x1000..0x1003].copy_from_slice(b"low");
        f[0x2000..0x2004].copy_from_slice(b"high");
        f
    }

    #[test]
    fn loadable_segments_and_entry_are_kept() {
        let out = from_elf64(&elf64(0x100_0000)).unwrap();
        assert_eq!(out[..7], *b"\x7fELF\x01\x01\x01");
        assert_eq!(u16_at(&out, 16), 2);
        assert_eq!(u16_at(&out, 18), EM_386);
        assert_eq!(u32_at(&out, 24), 0x100_0000);
        assert_eq!(u16_at(&out, 42), 32);
        assert_eq!(u16_at(&out, 44), 2, "the PT_NOTE is left out");
        let seg = |i: usize| {
            let p = &out[EHDR32 + i * 32..];
            let (off, fs) = (u32_at(p, 4) as usize, u32_at(p, 16) as usize);
            (u32_at(p, 0), u32_at(p, 12), u32_at(p, 20), &out[off..off + fs], off % 4096)
        };
        assert_eq!(seg(0), (1, 0x8000, 3, &b"low"[..], 0));
        assert_eq!(seg(1), (1, 0x100_0000, 16, &b"high"[..], 0));
    }

    #[test]
    fn what_does_not_fit_is_refused() {
        assert!(from_elf64(&elf64(0x1_0000_0000)).is_err(), "entry above 4 GiB");
        let mut f = elf64(0x100_0000);
        f[4] = 1;
        assert!(from_elf64(&f).is_err(), "already ELF32");
        let mut f = elf64(0x100_0000);
        f[64 + 2 * 56 + 8..64 + 2 * 56 + 16].copy_from_slice(&0x10_0000u64.to_le_bytes());
        assert!(from_elf64(&f).is_err(), "segment outside the file");
        assert!(from_elf64(b"\x7fELF").is_err());
    }
}
