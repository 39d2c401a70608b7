//! The IDT (SDM Vol. 3A §7.14 "Exception and Interrupt Handling in 64-bit Mode"): 256 interrupt
//! gates into one common handler, counters for the interrupts the checks wait for, and
//! [`guarded`], which runs a check so that an exception inside it fails the check instead of the
//! kernel (a setjmp/longjmp through the interrupt frame).

use core::sync::atomic::{AtomicU32, Ordering};

/// The frame the common stub builds: the GPRs it saved, the vector and error code, then what
/// the CPU pushed (SDM Vol. 3A Figure 7-9, 64-bit mode: always SS:RSP).
#[repr(C)]
pub struct Frame {
    pub gprs: [u64; 15],
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// An exception caught by [`guarded`].
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
}

/// Interrupts taken per vector (all 256).
pub static COUNTS: [AtomicU32; 256] = [const { AtomicU32::new(0) }; 256];
/// What each handled interrupt does besides counting (set before the check that waits).
static mut HOOKS: [Option<fn()>; 256] = [None; 256];

/// Runs `hook` on each interrupt at `vector` (after counting it, before the IRET).
pub fn set_hook(vector: u8, hook: fn()) {
    // SAFETY: set with interrupts off, read only by the handler on this one CPU.
    unsafe { HOOKS[usize::from(vector)] = Some(hook) };
}

pub fn count(vector: u8) -> u32 {
    COUNTS[usize::from(vector)].load(Ordering::SeqCst)
}

core::arch::global_asm!(
    r#"
    .section .text, "ax"
    .code64
/* One 16-byte stub per vector; vectors 8, 10-14, 17, 21, 29 and 30 come with an error code
   (SDM Vol. 3A Table 7-1), the others get a 0 in its place. */
    .balign 16
    .global isr_stubs
isr_stubs:
.set i, 0
.rept 256
    .balign 16
    .if (i == 8) || (i >= 10 && i <= 14) || (i == 17) || (i == 21) || (i == 29) || (i == 30)
    .else
    push 0
    .endif
    push i
    jmp isr_common
    .set i, i + 1
.endr

isr_common:
    push r15
    push r14
    push r13
    push r12
    push r11
    push r10
    push r9
    push r8
    push rbp
    push rdi
    push rsi
    push rdx
    push rcx
    push rbx
    push rax
    mov rdi, rsp
    mov rbx, rsp
    and rsp, -16
    call barepc_isr
    mov rsp, rbx
    pop rax
    pop rbx
    pop rcx
    pop rdx
    pop rsi
    pop rdi
    pop rbp
    pop r8
    pop r9
    pop r10
    pop r11
    pop r12
    pop r13
    pop r14
    pop r15
    add rsp, 16
    iretq

/* guard_call(f, ctx) -> 0, or 1 when an exception inside f came back through guard_resume.
   Saves the callee-saved registers and RSP in guard_buf. */
    .global guard_call, guard_resume
guard_call:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov [rip + guard_rsp], rsp
    mov byte ptr [rip + guard_armed], 1
    mov rax, rdi
    mov rdi, rsi
    sub rsp, 8
    call rax
    add rsp, 8
    mov byte ptr [rip + guard_armed], 0
    xor eax, eax
    jmp 1f
guard_resume:
    mov rsp, [rip + guard_rsp]
    mov byte ptr [rip + guard_armed], 0
    mov eax, 1
1:
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

    .section .bss, "aw", @nobits
    .balign 8
    .global guard_rsp, guard_armed
guard_rsp:   .quad 0
guard_armed: .byte 0
"#
);

unsafe extern "C" {
    static isr_stubs: u8;
    static mut guard_armed: u8;
    fn guard_call(f: extern "C" fn(*mut u8), ctx: *mut u8) -> u64;
    fn guard_resume();
}

static mut LAST_FAULT: Fault = Fault { vector: 0, error: 0, rip: 0 };

#[repr(C, align(16))]
struct Idt([u64; 512]);
static mut IDT: Idt = Idt([0; 512]);

/// Fills the IDT with interrupt gates (type 0xE, DPL 0) to the 256 stubs and loads it.
pub fn init() {
    let base = &raw const isr_stubs as u64;
    // SAFETY: run once at start, interrupts off; the stubs are 16 bytes apart (`.balign 16`
    // before each, and none is longer).
    unsafe {
        for v in 0..256u64 {
            let h = base + v * 16;
            let low = (h & 0xffff) | (0x08 << 16) | (0x8e00 << 32) | (((h >> 16) & 0xffff) << 48);
            IDT.0[v as usize * 2] = low;
            IDT.0[v as usize * 2 + 1] = h >> 32;
        }
        let ptr: [u64; 2] =
            [(4095u64) | ((&raw const IDT as u64) << 16), (&raw const IDT as u64) >> 48];
        core::arch::asm!("lidt [{}]", in(reg) ptr.as_ptr(), options(nostack));
    }
}

#[unsafe(no_mangle)]
extern "C" fn barepc_isr(f: &mut Frame) {
    let v = f.vector as usize & 0xff;
    COUNTS[v].fetch_add(1, Ordering::SeqCst);
    if v < 32 {
        // SAFETY: one CPU; the guard's state is written here and in `guarded` only.
        unsafe {
            if guard_armed != 0 {
                LAST_FAULT = Fault { vector: f.vector, error: f.error, rip: f.rip };
                guard_armed = 0;
                f.rip = guard_resume as *const () as u64;
                f.cs = 0x08;
                f.ss = 0x10;
                f.rflags = 0x2;
                // guard_resume reloads RSP itself; any valid stack does for the IRET: the
                // one below this frame.
                f.rsp = (core::ptr::from_mut(f) as u64 - 64) & !0xf;
                return;
            }
        }
        crate::println!(
            "FAIL exception: vector {} error {:#x} at RIP {:#x} (outside any check)",
            f.vector,
            f.error,
            f.rip
        );
        crate::exit(255);
    }
    // SAFETY: one CPU; hooks are set with interrupts off.
    if let Some(hook) = unsafe { HOOKS[v] } {
        hook();
    }
}

/// Runs `f`; an exception inside it comes back as `Err(Fault)` (its frames abandoned).
pub fn guarded<F: FnMut()>(mut f: F) -> Result<(), Fault> {
    extern "C" fn trampoline<F: FnMut()>(ctx: *mut u8) {
        // SAFETY: `ctx` is the `&mut F` that `guarded` passed, alive for the call.
        let f = unsafe { &mut *ctx.cast::<F>() };
        f();
    }
    // SAFETY: guard_call saves the callee-saved registers and RSP and calls `trampoline`; an
    // exception resumes at guard_resume on that RSP, after which nothing of `f`'s frames is
    // used again.
    let faulted = unsafe { guard_call(trampoline::<F>, (&raw mut f).cast()) };
    if faulted == 0 {
        Ok(())
    } else {
        // SAFETY: written by the handler before it resumed us.
        Err(unsafe { LAST_FAULT })
    }
}
