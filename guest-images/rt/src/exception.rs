//! The guest's IDT: 256 naked stubs into one common entry, per-vector handlers, and
//! [`expect_exception`], which runs a closure and reports the exception it raised.
//!
//! Every vector goes through [`dispatch`]. An exception (vector < 32) while [`expect_exception`]
//! is armed resumes after that call (setjmp/longjmp through the interrupt frame). A vector with a
//! registered handler runs it and returns with IRETQ (no EOI: there is no local APIC). Anything
//! else prints `FAIL unexpected ...` and shuts down with status 254.

use core::arch::naked_asm;
use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use hvabi::start::CODE_SELECTOR;

use crate::instr::{self, DescriptorPointer};
use crate::println;

/// #DE.
pub const DE: u8 = 0;
/// #BP.
pub const BP: u8 = 3;
/// #UD.
pub const UD: u8 = 6;
/// #DF.
pub const DF: u8 = 8;
/// #GP.
pub const GP: u8 = 13;
/// #PF.
pub const PF: u8 = 14;

/// The registers an interrupt or exception saved; a handler may change them before IRETQ.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct InterruptFrame {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub vector: u64,
    /// The CPU's error code, 0 for vectors without one.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// An exception seen by [`expect_exception`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    pub vector: u8,
    /// 0 for vectors without an error code.
    pub error_code: u64,
    /// Address of the faulting instruction (of the next one for traps such as #BP).
    pub rip: u64,
    /// CR2 when the vector is #PF, else 0.
    pub cr2: u64,
}

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({:#x}) at {:#x}", vector_name(self.vector), self.error_code, self.rip)?;
        if self.vector == PF {
            write!(f, " cr2 {:#x}", self.cr2)?;
        }
        Ok(())
    }
}

/// The mnemonic of an exception vector (`#GP`), or `vector` for the rest.
pub fn vector_name(vector: u8) -> &'static str {
    const NAMES: [&str; 22] = [
        "#DE",
        "#DB",
        "NMI",
        "#BP",
        "#OF",
        "#BR",
        "#UD",
        "#NM",
        "#DF",
        "vector 9",
        "#TS",
        "#NP",
        "#SS",
        "#GP",
        "#PF",
        "vector 15",
        "#MF",
        "#AC",
        "#MC",
        "#XM",
        "#VE",
        "#CP",
    ];
    NAMES.get(usize::from(vector)).copied().unwrap_or("vector")
}

/// A handler for an interrupt vector.
pub type Handler = fn(&mut InterruptFrame);

/// Registered handlers, as `Handler` cast to usize (0 = none).
static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

/// Runs `handler` for every later interrupt or exception on `vector` (replacing any earlier
/// one). Exceptions inside an [`expect_exception`] go to that call instead.
pub fn register_handler(vector: u8, handler: Handler) {
    HANDLERS[usize::from(vector)].store(handler as usize, Ordering::SeqCst);
}

/// Removes the handler of `vector`.
pub fn unregister_handler(vector: u8) {
    HANDLERS[usize::from(vector)].store(0, Ordering::SeqCst);
}

/// One 64-bit IDT gate.
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    /// Present, DPL 0, 64-bit interrupt gate (0x8e).
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const _: () = assert!(core::mem::size_of::<Gate>() == 16);

impl Gate {
    const EMPTY: Self = Self {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attr: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    fn interrupt(handler: u64) -> Self {
        Self {
            offset_low: handler as u16,
            selector: CODE_SELECTOR,
            ist: 0,
            type_attr: 0x8e,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt(UnsafeCell<[Gate; 256]>);

// SAFETY: one vCPU; the table is written only by `init`, before interrupts are enabled.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([Gate::EMPTY; 256]));

/// Size of each stub in [`vector_stubs`].
const STUB_SIZE: u64 = 16;

/// Fills the IDT with the stubs and loads it.
pub fn init() {
    // The stubs start at the first 16-byte boundary at or after the function's address.
    let base = (vector_stubs as *const () as u64).next_multiple_of(STUB_SIZE);
    // SAFETY: nothing else accesses the table during init (interrupts are off, one vCPU).
    let gates = unsafe { &mut *IDT.0.get() };
    for (vector, gate) in gates.iter_mut().enumerate() {
        *gate = Gate::interrupt(base + vector as u64 * STUB_SIZE);
    }
    let ptr = DescriptorPointer { limit: (256 * 16 - 1) as u16, base: IDT.0.get() as u64 };
    // SAFETY: the table is static and every gate points at a stub that reaches `dispatch`.
    unsafe { instr::lidt(&ptr) };
}

/// Loads the runtime's IDT again (after a test loaded its own).
pub fn reload() {
    let ptr = DescriptorPointer { limit: (256 * 16 - 1) as u16, base: IDT.0.get() as u64 };
    // SAFETY: as in `init`; `init` filled the table before `_start` called the guest.
    unsafe { instr::lidt(&ptr) };
}

/// 256 stubs, 16 bytes apart: push a 0 error code where the CPU pushes none, push the vector,
/// jump to [`common_entry`].
#[unsafe(naked)]
unsafe extern "C" fn vector_stubs() {
    naked_asm!(
        ".set guest_rt_vec, 0",
        ".rept 256",
        ".balign 16, 0xcc",
        ".if (guest_rt_vec == 8) || (guest_rt_vec == 10) || (guest_rt_vec == 11) || (guest_rt_vec == 12) || (guest_rt_vec == 13) || (guest_rt_vec == 14) || (guest_rt_vec == 17) || (guest_rt_vec == 21) || (guest_rt_vec == 29) || (guest_rt_vec == 30)",
        ".else",
        "pushq $0",
        ".endif",
        "pushq $guest_rt_vec",
        "jmp {common}",
        ".set guest_rt_vec, guest_rt_vec + 1",
        ".endr",
        common = sym common_entry,
        options(att_syntax),
    )
}

/// Saves the GPRs (the CPU aligned RSP to 16 before its frame: 7 words so far + 15 = 22 words,
/// so the call is aligned), calls [`dispatch`], restores and returns with IRETQ.
#[unsafe(naked)]
unsafe extern "C" fn common_entry() {
    naked_asm!(
        "push r15", "push r14", "push r13", "push r12", "push r11", "push r10", "push r9",
        "push r8", "push rbp", "push rdi", "push rsi", "push rdx", "push rcx", "push rbx",
        "push rax",
        "mov rdi, rsp",
        "cld",
        "call {dispatch}",
        "pop rax", "pop rbx", "pop rcx", "pop rdx", "pop rsi", "pop rdi", "pop rbp", "pop r8",
        "pop r9", "pop r10", "pop r11", "pop r12", "pop r13", "pop r14", "pop r15",
        "add rsp, 16",
        "iretq",
        dispatch = sym dispatch,
    )
}

extern "C" fn dispatch(frame: &mut InterruptFrame) {
    let vector = frame.vector as u8;
    if vector < 32 {
        let armed = ARMED.swap(core::ptr::null_mut(), Ordering::SeqCst);
        if !armed.is_null() {
            // SAFETY: ARMED points at the JumpBuffer of the `expect_exception` call now running
            // below us on this stack; it stays alive until that call returns.
            let jb = unsafe { &mut *armed };
            jb.fault = Exception {
                vector,
                error_code: frame.error_code,
                rip: frame.rip,
                cr2: if vector == PF { instr::read_cr2() } else { 0 },
            };
            frame.rbx = jb.rbx;
            frame.rbp = jb.rbp;
            frame.r12 = jb.r12;
            frame.r13 = jb.r13;
            frame.r14 = jb.r14;
            frame.r15 = jb.r15;
            frame.rsp = jb.rsp;
            frame.rip = jb.rip;
            frame.rflags = jb.rflags;
            return;
        }
    }
    let handler = HANDLERS[usize::from(vector)].load(Ordering::SeqCst);
    if handler != 0 {
        // SAFETY: only `register_handler` stores non-zero values, each a `Handler`.
        let handler: Handler = unsafe { core::mem::transmute::<usize, Handler>(handler) };
        handler(frame);
        return;
    }
    let cr2 = if vector == PF { instr::read_cr2() } else { 0 };
    println!(
        "FAIL unexpected {} (vector {vector}) error {:#x} at rip {:#x} rsp {:#x} cr2 {cr2:#x}",
        vector_name(vector),
        frame.error_code,
        frame.rip,
        frame.rsp
    );
    crate::shutdown(254)
}

/// Where [`expect_exception`] resumes: the callee-saved registers, RSP, RIP and RFLAGS of
/// `catch_call`, and what went wrong.
#[repr(C)]
struct JumpBuffer {
    rbx: u64,
    rbp: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
    rsp: u64,
    rip: u64,
    rflags: u64,
    fault: Exception,
}

/// The armed jump buffer (null when none).
static ARMED: AtomicPtr<JumpBuffer> = AtomicPtr::new(core::ptr::null_mut());

/// Calls `f(data)` after saving into `jb` how to return from here; returns 0 when `f` returns,
/// 1 when [`dispatch`] resumed at label 2 (with RSP back at our return address).
#[unsafe(naked)]
unsafe extern "C" fn catch_call(
    jb: *mut JumpBuffer,
    f: extern "C" fn(*mut u8),
    data: *mut u8,
) -> u64 {
    naked_asm!(
        "mov [rdi + 0], rbx",
        "mov [rdi + 8], rbp",
        "mov [rdi + 16], r12",
        "mov [rdi + 24], r13",
        "mov [rdi + 32], r14",
        "mov [rdi + 40], r15",
        "mov [rdi + 48], rsp",
        "lea rax, [rip + 2f]",
        "mov [rdi + 56], rax",
        "pushfq",
        "pop rax",
        "mov [rdi + 64], rax",
        // RSP is 8 mod 16 here (our return address): realign for the call.
        "sub rsp, 8",
        "mov rdi, rdx",
        "call rsi",
        "add rsp, 8",
        "xor eax, eax",
        "ret",
        "2:",
        "mov eax, 1",
        "ret",
    )
}

/// Runs `f`; if it raises an exception (vector 0..=31), returns it, with execution resumed
/// right after this call. `None` means `f` returned normally.
///
/// Use it around the one instruction under test. When `f` faults, its frames are abandoned:
/// values it owns are not dropped (leaked), so keep `f` to plain data and instructions.
/// Nests: an exception goes to the innermost call.
pub fn expect_exception<F: FnOnce()>(f: F) -> Option<Exception> {
    extern "C" fn trampoline<F: FnOnce()>(data: *mut u8) {
        // SAFETY: `data` is the `Option<F>` of the `expect_exception` frame below us.
        let slot = unsafe { &mut *data.cast::<Option<F>>() };
        if let Some(f) = slot.take() {
            f();
        }
    }

    let mut slot = Some(f);
    let mut jb = JumpBuffer {
        rbx: 0,
        rbp: 0,
        r12: 0,
        r13: 0,
        r14: 0,
        r15: 0,
        rsp: 0,
        rip: 0,
        rflags: 0,
        fault: Exception { vector: 0, error_code: 0, rip: 0, cr2: 0 },
    };
    let outer = ARMED.swap(&raw mut jb, Ordering::SeqCst);
    // SAFETY: `jb` and `slot` outlive the call; `catch_call` saves exactly the state the
    // SysV ABI requires a callee to preserve, and `dispatch` restores it before resuming, so
    // to this frame the call looks like an ordinary return. ARMED is cleared by `dispatch`
    // before it resumes and below on a normal return.
    let faulted = unsafe { catch_call(&raw mut jb, trampoline::<F>, (&raw mut slot).cast::<u8>()) };
    ARMED.store(outer, Ordering::SeqCst);
    (faulted != 0).then_some(jb.fault)
}
