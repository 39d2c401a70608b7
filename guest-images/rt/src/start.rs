//! `_start`: record the entry state, switch stacks, zero `.bss`, set up, call the guest, shut down.

use core::arch::global_asm;

use hvabi::start::{START_MAGIC, StartInfo};

use crate::{console, exception, hypercall, println};

/// Size of the runtime's own stack (in `.bss`).
const STACK_SIZE: usize = 64 * 1024;

/// The registers at the guest's first instruction, as the hypervisor set them.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct EntryState {
    /// RAX, RBX, RCX, RDX, RSI, RDI, RBP, RSP, R8..R15 (in this order).
    pub gprs: [u64; 16],
    pub rflags: u64,
    pub cs: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
    pub ss: u64,
    /// What SIDT stored: limit (2 bytes) then base (8 bytes).
    idtr: [u8; 16],
    /// What SGDT stored: limit (2 bytes) then base (8 bytes).
    gdtr: [u8; 16],
}

impl EntryState {
    /// Names of [`EntryState::gprs`], for messages.
    pub const GPR_NAMES: [&'static str; 16] = [
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15",
    ];

    /// RSP at entry.
    pub fn rsp(&self) -> u64 {
        self.gprs[7]
    }

    /// RDI at entry (the start-info GPA).
    pub fn rdi(&self) -> u64 {
        self.gprs[5]
    }

    /// IDTR at entry: (base, limit).
    pub fn idtr(&self) -> (u64, u16) {
        split_descriptor_pointer(&self.idtr)
    }

    /// GDTR at entry: (base, limit).
    pub fn gdtr(&self) -> (u64, u16) {
        split_descriptor_pointer(&self.gdtr)
    }
}

fn split_descriptor_pointer(raw: &[u8; 16]) -> (u64, u16) {
    let limit = u16::from_le_bytes([raw[0], raw[1]]);
    let mut base = [0u8; 8];
    base.copy_from_slice(&raw[2..10]);
    (u64::from_le_bytes(base), limit)
}

const _: () = assert!(core::mem::size_of::<EntryState>() == 216);

unsafe extern "C" {
    /// Filled by `_start` before anything else runs; in `.data` so zeroing `.bss` keeps it.
    static guest_rt_entry_state: EntryState;
    static __guest_image_start: u8;
    static __guest_image_end: u8;
}

unsafe extern "Rust" {
    /// The guest's main function, defined by [`crate::entry!`].
    fn __guest_rt_main(info: &'static StartInfo) -> u64;
}

/// The registers the hypervisor started this guest with.
pub fn entry_state() -> &'static EntryState {
    // SAFETY: `_start` writes the state once, before any Rust code runs; nothing writes it after.
    unsafe { &*core::ptr::addr_of!(guest_rt_entry_state) }
}

/// Guest-physical range `[start, end)` of this image (code, data, `.bss` with the stack).
pub fn image_range() -> (u64, u64) {
    (core::ptr::addr_of!(__guest_image_start) as u64, core::ptr::addr_of!(__guest_image_end) as u64)
}

// Offsets into EntryState: gprs 0..128, rflags 128, cs 136, ds 144, es 152, fs 160, gs 168,
// ss 176, idtr 184, gdtr 200. Only MOV, LEA, SIDT and SGDT run before PUSHFQ: none alters RFLAGS.
global_asm!(
    ".pushsection .data.guest_rt_entry_state, \"aw\"",
    ".balign 16",
    ".global guest_rt_entry_state",
    "guest_rt_entry_state:",
    ".zero 216",
    ".popsection",
    ".pushsection .bss.guest_rt_stack, \"aw\", @nobits",
    ".balign 16",
    "guest_rt_stack_bottom:",
    ".zero {stack_size}",
    "guest_rt_stack_top:",
    ".popsection",
    ".pushsection .text._start, \"ax\"",
    ".global _start",
    "_start:",
    "mov [rip + guest_rt_entry_state + 0], rax",
    "mov [rip + guest_rt_entry_state + 8], rbx",
    "mov [rip + guest_rt_entry_state + 16], rcx",
    "mov [rip + guest_rt_entry_state + 24], rdx",
    "mov [rip + guest_rt_entry_state + 32], rsi",
    "mov [rip + guest_rt_entry_state + 40], rdi",
    "mov [rip + guest_rt_entry_state + 48], rbp",
    "mov [rip + guest_rt_entry_state + 56], rsp",
    "mov [rip + guest_rt_entry_state + 64], r8",
    "mov [rip + guest_rt_entry_state + 72], r9",
    "mov [rip + guest_rt_entry_state + 80], r10",
    "mov [rip + guest_rt_entry_state + 88], r11",
    "mov [rip + guest_rt_entry_state + 96], r12",
    "mov [rip + guest_rt_entry_state + 104], r13",
    "mov [rip + guest_rt_entry_state + 112], r14",
    "mov [rip + guest_rt_entry_state + 120], r15",
    "mov word ptr [rip + guest_rt_entry_state + 136], cs",
    "mov word ptr [rip + guest_rt_entry_state + 144], ds",
    "mov word ptr [rip + guest_rt_entry_state + 152], es",
    "mov word ptr [rip + guest_rt_entry_state + 160], fs",
    "mov word ptr [rip + guest_rt_entry_state + 168], gs",
    "mov word ptr [rip + guest_rt_entry_state + 176], ss",
    "sidt [rip + guest_rt_entry_state + 184]",
    "sgdt [rip + guest_rt_entry_state + 200]",
    "lea rsp, [rip + guest_rt_stack_top]",
    "pushfq",
    "pop rax",
    "mov [rip + guest_rt_entry_state + 128], rax",
    // Zero .bss (the stack lies in it, but nothing on it is live yet).
    "mov r12, rdi",
    "lea rdi, [rip + __guest_bss_start]",
    "lea rcx, [rip + __guest_bss_end]",
    "sub rcx, rdi",
    "xor eax, eax",
    "cld",
    "rep stosb",
    "mov rdi, r12",
    "xor ebp, ebp",
    "call {rt_start}",
    "2:",
    "cli",
    "hlt",
    "jmp 2b",
    ".popsection",
    stack_size = const STACK_SIZE,
    rt_start = sym rt_start,
);

/// The first Rust code: `info` is RDI at entry.
extern "C" fn rt_start(info: *const StartInfo) -> ! {
    hypercall::init();
    console::init();
    exception::init();
    let addr = info as u64;
    // The page is wherever RDI says (0x5000 in a guest, `MGMT_START_INFO_GPA`, 0x8000, in the
    // management partition): check it looks like one before trusting it. A pointer outside the
    // mapped RAM faults here, which the IDT reports (status 254).
    let aligned = addr != 0 && addr.is_multiple_of(8);
    // SAFETY: a non-null, aligned pointer the hypervisor handed us; reading the magic word can
    // at worst fault, which the IDT loaded above reports.
    if !aligned || unsafe { core::ptr::read_volatile(&raw const (*info).magic) } != START_MAGIC {
        println!("FAIL start-info pointer: RDI = {addr:#x} does not point at a start-info page");
        shutdown(253);
    }
    // SAFETY: RDI points at the start-info page (its magic checked above), inside RAM and
    // identity-mapped; the hypervisor writes it before start and never again, and nothing in
    // this guest writes it.
    let info: &'static StartInfo = unsafe { &*info };
    // SAFETY: `entry!` defines `__guest_rt_main` with exactly this signature; a guest binary
    // that lacks it does not link.
    let status = unsafe { __guest_rt_main(info) };
    shutdown(status)
}

/// Ends the partition with `status` (0 = success) by the Shutdown hypercall.
pub fn shutdown(status: u64) -> ! {
    hypercall::shutdown(status);
    // The hypervisor does not return from Shutdown; if it does, stop here.
    println!("FAIL shutdown hypercall returned");
    loop {
        crate::instr::cli();
        crate::instr::hlt();
    }
}
