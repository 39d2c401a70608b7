//! SYSCALL from ring 3 and SYSRET back (SDM Vol. 2B "SYSCALL", "SYSRET"; Vol. 3A §5.8.8): the
//! kernel enters ring 3 with IRETQ, the ring-3 code makes a SYSCALL (recorded by the entry:
//! RCX, R11, CS, SS), gets a value back through SYSRETQ, records its own CS, and leaves with a
//! second SYSCALL that returns to the kernel's caller.

use crate::cpu::wrmsr;

const EFER: u32 = 0xc000_0080;
const STAR: u32 = 0xc000_0081;
const LSTAR: u32 = 0xc000_0082;
const FMASK: u32 = 0xc000_0084;
/// What the entry returns for ring 3's first SYSCALL (RAX 0x5a5a; its second, RAX 0xe1,
/// leaves ring 3).
pub const PONG: u64 = 0x600d;

/// What one round trip recorded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Record {
    /// RCX, R11, CS, SS at the SYSCALL entry (the first call).
    pub entry_rcx: u64,
    pub entry_r11: u64,
    pub entry_cs: u64,
    pub entry_ss: u64,
    /// RAX and CS as ring 3 saw them after SYSRETQ.
    pub user_rax: u64,
    pub user_cs: u64,
    /// Where ring 3's first SYSCALL returns to (the instruction after it).
    pub expect_rcx: u64,
}

core::arch::global_asm!(
    r#"
    .section .text, "ax"
    .code64
    .global user_enter, syscall_entry, user_code, user_after_syscall
/* user_enter(record: *mut Record, user_stack_top) -> returns when ring 3 makes LEAVE. */
user_enter:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov [rip + sys_kernel_rsp], rsp
    mov [rip + sys_record], rdi
    push 0x23                          /* SS: user data, RPL 3 */
    push rsi                           /* RSP */
    push 0x2                           /* RFLAGS: interrupts off */
    push 0x2b                          /* CS: user code 64-bit, RPL 3 */
    lea rax, [rip + user_code]
    push rax
    iretq

/* Ring 3. */
user_code:
    mov eax, 0x5a5a
    syscall
user_after_syscall:
    mov rdi, [rip + sys_record]
    mov [rdi + 32], rax
    mov ax, cs
    movzx eax, ax
    mov [rdi + 40], rax
    mov eax, 0xe1
    syscall
    ud2

/* SYSCALL lands here at CPL 0 on ring 3's stack (SYSCALL does not switch stacks). */
syscall_entry:
    cmp rax, 0xe1
    je 2f
    mov rdi, [rip + sys_record]
    mov [rdi], rcx
    mov [rdi + 8], r11
    mov ax, cs
    movzx eax, ax
    mov [rdi + 16], rax
    mov ax, ss
    movzx eax, ax
    mov [rdi + 24], rax
    mov eax, 0x600d
    sysretq
2:
    mov rsp, [rip + sys_kernel_rsp]
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

    .section .bss, "aw", @nobits
    .balign 8
sys_kernel_rsp: .quad 0
sys_record:     .quad 0
"#
);

unsafe extern "C" {
    fn user_enter(record: *mut Record, stack_top: u64);
    fn syscall_entry();
    static user_after_syscall: u8;
}

#[repr(C, align(16))]
struct Stack([u8; 8192]);
static mut USER_STACK: Stack = Stack([0; 8192]);

/// Sets EFER.SCE, STAR (kernel CS 0x08, SYSRET base 0x18: CS 0x2b, SS 0x23), LSTAR and FMASK
/// (IF, TF, DF, AC), runs the ring-3 code and returns what it recorded.
pub fn round_trip() -> Record {
    let mut r = Record { expect_rcx: &raw const user_after_syscall as u64, ..Record::default() };
    // SAFETY: this kernel owns the SYSCALL MSRs; the entry and the GDT layout they name are
    // in this image (boot.rs). The ring-3 code runs on its own stack with interrupts off and
    // comes back through `user_enter`'s saved stack.
    unsafe {
        wrmsr(EFER, crate::cpu::rdmsr(EFER) | 1);
        wrmsr(STAR, (0x18u64 << 48) | (0x08u64 << 32));
        wrmsr(LSTAR, syscall_entry as *const () as u64);
        wrmsr(FMASK, 0x4_0700);
        user_enter(&raw mut r, &raw const USER_STACK as u64 + 8192);
    }
    r
}
