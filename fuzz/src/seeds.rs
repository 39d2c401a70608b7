//! Small synthetic seeds for each target, made here from the formats' specifications (real
//! images are megabytes; these are a few hundred bytes each). `hvfuzz --write-seeds` writes
//! them to `fuzz/corpus/<target>/seed-N`, the corpus kept in the repository.

/// The seeds of `target`.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "decode" => decode(),
        "manifest" => manifest(),
        "elf" => vec![with_head(&[0x07, 0x00], &elf64(0x20_0000, 0x20_0000))],
        "multiboot" => vec![with_head(&[0x07, 0x00, 0x00], &multiboot_aout())],
        "linux" => vec![with_head(&[0; 16], &bzimage())],
        "pack" => pack(),
        "cmdline" => ["", "loglevel=debug", "/boot/hv loglevel=trace fault=pf bench=1 x y=z"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
        // Device operation sequences: the PIC's initialisation, a PIT channel 0 in mode 2,
        // the UART's divisor and FIFO; random bytes do the rest.
        "pic" => vec![vec![0, 0, 0x11, 0, 1, 0x20, 0, 1, 4, 0, 1, 1, 0, 1, 0xfe, 2, 0, 0x80, 3]],
        "pit" => vec![vec![0, 3, 0x34, 0, 0, 0x9c, 0, 0, 0x2e, 4, 0, 0, 1, 0, 5, 0, 2, 1, 1]],
        "uart" => vec![vec![2, 3, 0x80, 2, 0, 1, 2, 3, 3, 2, 2, 0xc7, 2, 0, 0x41, 5, 0, 0]],
        _ => vec![vec![0; 32]],
    }
}

fn with_head(head: &[u8], body: &[u8]) -> Vec<u8> {
    [head, body].concat()
}

/// A mode byte (3 = 64-bit, 2 = 32-bit) and the bytes of instructions that exit or touch MMIO.
fn decode() -> Vec<Vec<u8>> {
    let insns: [&[u8]; 16] = [
        &[3, 0x0f, 0xa2],                                     // cpuid
        &[3, 0x2e, 0x0f, 0xa2],                               // cs cpuid
        &[3, 0x0f, 0x01, 0xd9],                               // vmmcall
        &[3, 0x0f, 0x01, 0xc1],                               // vmcall
        &[3, 0x0f, 0x30],                                     // wrmsr
        &[3, 0xec],                                           // in al, dx
        &[3, 0xf3, 0x6e],                                     // rep outsb
        &[3, 0x8b, 0x03],                                     // mov eax, [rbx]
        &[3, 0x48, 0x89, 0x44, 0x8b, 0x10],                   // mov [rbx+rcx*4+0x10], rax
        &[3, 0xc7, 0x80, 0, 1, 0, 0, 0x78, 0x56, 0x34, 0x12], // mov dword [rax+0x100], imm32
        &[3, 0x48, 0xa1, 0, 0, 0xb0, 0xfe, 0, 0, 0, 0],       // movabs rax, [0xfeb00000]
        &[3, 0x0f, 0xb6, 0x07],                               // movzx eax, byte [rdi]
        &[3, 0x48, 0x63, 0x06],                               // movsxd rax, dword [rsi]
        &[3, 0x0f, 0x22, 0xc0],                               // mov cr0, rax
        &[2, 0x66, 0x8b, 0x05, 0, 0, 0xb0, 0xfe],             // mov ax, [0xfeb00000] (32-bit)
        &[0, 0x8b, 0x07],                                     // mov ax, [bx] (real mode)
    ];
    insns.iter().map(|i| i.to_vec()).collect()
}

fn manifest() -> Vec<Vec<u8>> {
    let texts = [
        "name = \"probe\"\n[[partition]]\nname = \"probe\"\nimage = \"probe\"\nmemory = 16\n\
         expect = \"exit\"\n",
        "timeslice_us = 2000\n[[partition]]\nname = 'mgmt'\nrole = \"management\"\nimage = \"mgmt\"\n\
         devices = [\"ports:0x1f0-0x1f7\", \"irq:14\",\n  \"pci:00:01.1\"]\non_stop = \"poweroff\"\n\
         [[partition]]\nname = \"g_1\"\nimage = \"vmlinuz\"\nformat = \"linux\"\ninitrd = \"initrd.gz\"\n\
         memory = 0x60 # MiB\ncmdline = \"console=ttyS0 \\\"q\\\"\"\nexpect = \"fault\"\n",
    ];
    texts.iter().map(|t| t.as_bytes().to_vec()).collect()
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// An ELF64 executable with one PT_LOAD segment (R X) at `paddr`, entry at its start: the
/// ELF header (64 bytes), one program header (56 bytes), 16 bytes of code (System V ABI,
/// x86-64 supplement, 4.1 and 5.1).
pub fn elf64(paddr: u64, entry: u64) -> Vec<u8> {
    let mut b = vec![0u8; 64 + 56 + 16];
    put(&mut b, 0, &[0x7f, b'E', b'L', b'F', 2, 1, 1]);
    put(&mut b, 16, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut b, 18, &0x3eu16.to_le_bytes()); // EM_X86_64
    put(&mut b, 20, &1u32.to_le_bytes());
    put(&mut b, 24, &entry.to_le_bytes());
    put(&mut b, 32, &64u64.to_le_bytes()); // e_phoff
    put(&mut b, 52, &64u16.to_le_bytes()); // e_ehsize
    put(&mut b, 54, &56u16.to_le_bytes()); // e_phentsize
    put(&mut b, 56, &1u16.to_le_bytes()); // e_phnum
    let ph = 64;
    put(&mut b, ph, &1u32.to_le_bytes()); // PT_LOAD
    put(&mut b, ph + 4, &5u32.to_le_bytes()); // R X
    put(&mut b, ph + 8, &0u64.to_le_bytes()); // p_offset
    put(&mut b, ph + 16, &paddr.to_le_bytes()); // p_vaddr
    put(&mut b, ph + 24, &paddr.to_le_bytes()); // p_paddr
    put(&mut b, ph + 32, &(136u64).to_le_bytes()); // p_filesz
    put(&mut b, ph + 40, &(0x2000u64).to_le_bytes()); // p_memsz
    put(&mut b, ph + 48, &0x1000u64.to_le_bytes()); // p_align
    put(&mut b, 120, &[0xf4; 16]);
    b
}

/// A multiboot 1 kernel with the address fields (flag 16): header at offset 0, loaded at
/// 1 MiB, 4 KiB of image and 4 KiB of bss (Multiboot Specification 0.6.96, 3.1).
fn multiboot_aout() -> Vec<u8> {
    let mut b = vec![0xf4u8; 4096];
    let magic = 0x1bad_b002u32;
    let flags = (1u32 << 16) | 0b10;
    let load = 0x10_0000u32;
    put(&mut b, 0, &magic.to_le_bytes());
    put(&mut b, 4, &flags.to_le_bytes());
    put(&mut b, 8, &magic.wrapping_add(flags).wrapping_neg().to_le_bytes());
    for (i, v) in [load, load, load + 4096, load + 8192, load + 32].iter().enumerate() {
        put(&mut b, 12 + 4 * i, &v.to_le_bytes());
    }
    b
}

/// A bzImage of boot protocol 2.15: one setup sector, 2 KiB of "kernel", relocatable,
/// 64-bit entry, `HdrS` header (Linux `Documentation/arch/x86/boot.rst`).
fn bzimage() -> Vec<u8> {
    let mut b = vec![0u8; 1024 + 2048];
    b[0x1f1] = 1; // setup_sects
    put(&mut b, 0x1f4, &(2048u32 / 16).to_le_bytes()); // syssize
    put(&mut b, 0x1fe, &0xaa55u16.to_le_bytes());
    put(&mut b, 0x200, &[0xeb, 0x66]); // jump: the header ends at 0x268
    put(&mut b, 0x202, b"HdrS");
    put(&mut b, 0x206, &0x020fu16.to_le_bytes());
    b[0x211] = 1; // loadflags: LOADED_HIGH
    put(&mut b, 0x214, &0x10_0000u32.to_le_bytes()); // code32_start
    put(&mut b, 0x22c, &0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    put(&mut b, 0x230, &0x20_0000u32.to_le_bytes()); // kernel_alignment
    b[0x234] = 1; // relocatable_kernel
    put(&mut b, 0x236, &0x1u16.to_le_bytes()); // xloadflags: XLF_KERNEL_64
    put(&mut b, 0x238, &2047u32.to_le_bytes()); // cmdline_size
    put(&mut b, 0x258, &0x100_0000u64.to_le_bytes()); // pref_address
    put(&mut b, 0x260, &0x40_0000u32.to_le_bytes()); // init_size
    b
}

fn pack() -> Vec<Vec<u8>> {
    let files: [(&str, &[u8]); 3] =
        [("manifest", b"[[partition]]\n"), ("probe", &[0x7f, b'E', b'L', b'F']), ("cmdline", b"x")];
    let lens: Vec<usize> = files.iter().map(|(_, b)| b.len()).collect();
    let mut blob = vec![0u8; hvabi::pack::packed_len(&lens)];
    hvabi::pack::write(&files, &mut blob);
    // The data is 4 KiB-aligned: the header and table alone are the interesting part, with
    // the files' bytes right behind them in a second seed.
    vec![blob[..16 + 3 * 64].to_vec(), blob]
}
