//! The VM entry and exit paths (SDM Vol. 3C §28.5: on a VM exit the CPU loads the host state
//! and continues at HOST_RIP with RSP = HOST_RSP; it saves no general registers).
//!
//! [`vmx_enter`] saves the host's callee-saved registers and the `Gprs` pointer on the stack,
//! points HOST_RSP there, loads the guest's registers and executes VMLAUNCH or VMRESUME.
//! [`vmx_exit`] (HOST_RIP) stores the guest's registers back through that pointer and offers
//! the exit to [`super::fast::vmx_fast_exit`]: when that handled it, the guest resumes at once
//! without leaving this frame; otherwise `vmx_enter` returns 0. A failed VMLAUNCH/VMRESUME
//! returns 1.

use crate::vmm::vcpu::Gprs;
use core::arch::naked_asm;

/// Loads every guest GPR from the `Gprs` at RDI (RDI last). RSP is not among them: it lives
/// in the VMCS.
macro_rules! load_guest_gprs {
    () => {
        concat!(
            "mov rax, [rdi + 0x00]\n",
            "mov rcx, [rdi + 0x08]\n",
            "mov rdx, [rdi + 0x10]\n",
            "mov rbx, [rdi + 0x18]\n",
            "mov rbp, [rdi + 0x28]\n",
            "mov rsi, [rdi + 0x30]\n",
            "mov r8,  [rdi + 0x40]\n",
            "mov r9,  [rdi + 0x48]\n",
            "mov r10, [rdi + 0x50]\n",
            "mov r11, [rdi + 0x58]\n",
            "mov r12, [rdi + 0x60]\n",
            "mov r13, [rdi + 0x68]\n",
            "mov r14, [rdi + 0x70]\n",
            "mov r15, [rdi + 0x78]\n",
            "mov rdi, [rdi + 0x38]\n",
        )
    };
}

/// Drops the `Gprs` pointer, restores the host's callee-saved registers and returns EAX = `$v`.
macro_rules! host_return {
    ($v:literal) => {
        concat!(
            "add rsp, 8\n",
            "pop r15\n",
            "pop r14\n",
            "pop r13\n",
            "pop r12\n",
            "pop rbp\n",
            "pop rbx\n",
            "mov eax, ",
            $v,
            "\n",
            "ret\n",
        )
    };
}

/// Enters the guest with `gprs` loaded; returns 0 after the next VM exit the fast path did not
/// handle (with `gprs` holding the guest's registers), or 1 when the entry instruction itself
/// failed (RFLAGS.CF/ZF set; the VM-instruction error field says why).
///
/// # Safety
/// A VMCS is current and fully set up, with HOST_RIP = [`vmx_exit`]; `launched` says whether
/// it was launched (VMRESUME) or not (VMLAUNCH).
#[unsafe(naked)]
pub unsafe extern "C" fn vmx_enter(gprs: *mut Gprs, launched: u64) -> u64 {
    naked_asm!(
        "push rbx",
        "push rbp",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "push rdi",
        "mov rax, 0x6c14", // HOST_RSP
        "vmwrite rax, rsp",
        "test rsi, rsi", // flags survive the MOVs below
        load_guest_gprs!(),
        "jnz 2f",
        "vmlaunch",
        "jmp 3f",
        "2:",
        "vmresume",
        "3:",
        // Entry failed: nothing of the guest ran.
        host_return!("1"),
    )
}

/// HOST_RIP: saves the guest's registers, tries the fast path, and either resumes the guest
/// or returns 0 from [`vmx_enter`].
///
/// # Safety
/// Never called: the CPU jumps here on a VM exit, with RSP = HOST_RSP as `vmx_enter` set it.
#[unsafe(naked)]
pub unsafe extern "C" fn vmx_exit() {
    naked_asm!(
        "push rdi",
        "mov rdi, [rsp + 8]",
        "mov [rdi + 0x00], rax",
        "mov [rdi + 0x08], rcx",
        "mov [rdi + 0x10], rdx",
        "mov [rdi + 0x18], rbx",
        "mov [rdi + 0x28], rbp",
        "mov [rdi + 0x30], rsi",
        "mov [rdi + 0x40], r8",
        "mov [rdi + 0x48], r9",
        "mov [rdi + 0x50], r10",
        "mov [rdi + 0x58], r11",
        "mov [rdi + 0x60], r12",
        "mov [rdi + 0x68], r13",
        "mov [rdi + 0x70], r14",
        "mov [rdi + 0x78], r15",
        "pop rax",
        "mov [rdi + 0x38], rax",
        // RSP = HOST_RSP again (16-byte aligned): offer the exit to the fast path.
        "call {fast}",
        "test rax, rax",
        "jz 4f",
        "mov rdi, [rsp]",
        load_guest_gprs!(),
        "vmresume",
        // VMRESUME failed: report it like a failed entry.
        host_return!("1"),
        "4:",
        host_return!("0"),
        fast = sym super::fast::vmx_fast_exit,
    )
}
