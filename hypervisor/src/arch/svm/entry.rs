//! The world switch (APM Vol. 2 §15.5, §15.17).
//!
//! VMRUN saves part of the host state to the host save area (VM_HSAVE_PA) and loads the
//! guest's from the VMCB; #VMEXIT reverses that. The two lists are the same: segments CS, SS,
//! DS, ES, GDTR, IDTR, CR0, CR3, CR4, EFER, RFLAGS, RIP, RSP, RAX (§15.5.1). FS, GS, TR, LDTR
//! with their hidden state, KernelGsBase, STAR, LSTAR, CSTAR, SFMASK and SYSENTER_CS/ESP/EIP
//! are left alone: VMLOAD loads them from a VMCB and VMSAVE stores them (§15.5.2). The guest
//! needs its own (its TR above all), the host needs its TR back before its next interrupt.
//! So [`svm_run`] runs `VMLOAD guest; VMRUN; VMSAVE guest; VMLOAD host`, the host's copy taken
//! once by [`vmsave`] when SVM is turned on (the hypervisor never changes them afterwards).
//!
//! The general registers other than RAX and RSP are neither saved nor loaded by the CPU: the
//! stub loads them from [`Gprs`] before VMRUN and stores them back after.
//!
//! CLGI/STGI bracket the switch (§15.17): with GIF clear, no interrupt or NMI reaches the host
//! while it runs on the guest's FS/GS/TR. RFLAGS.IF is set for VMRUN because with
//! V_INTR_MASKING the host's IF at VMRUN decides whether physical interrupts end the guest's
//! run (INTR intercept, §15.21.1), as VMX's external-interrupt exiting does; the caller's IF
//! is restored before STGI, so a pending interrupt is taken only when the caller allows it.

use super::fast::FastCtx;
use super::vmcb::Vmcb;
use crate::vmm::vcpu::Gprs;
use core::arch::{asm, naked_asm};

/// Runs the guest of `vmcb` until the next #VMEXIT the fast path does not handle, with its
/// general registers from `gprs` (RAX and RSP come from the VMCB), and stores them back. The
/// exit is described in the VMCB.
///
/// After each #VMEXIT the stub saves the guest's VMLOAD state, loads the host's, stores the
/// guest's registers and offers the exit to [`super::fast::svm_fast_exit`]; when that handled
/// it, the stub loads the guest's registers and VMLOAD state again and re-enters at once.
///
/// # Safety
/// EFER.SVME is set and VM_HSAVE_PA names a page of the hypervisor's; `vmcb` is a set-up
/// VMCB owned by the caller (identity-mapped: its address is also its physical address);
/// `host_state` is the physical address of a page that [`vmsave`] filled on this CPU; `fast`
/// describes this VMCB's vCPU.
#[unsafe(naked)]
pub unsafe extern "C" fn svm_run(
    gprs: *mut Gprs,
    vmcb: *mut Vmcb,
    host_state: u64,
    fast: *mut FastCtx,
) {
    naked_asm!(
        "push rbx",
        "push rbp",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "pushfq",
        // [rsp]: padding (16-byte alignment for the call below), +8 fast, +16 host_state,
        // +24 gprs.
        "push rdi",
        "push rdx",
        "push rcx",
        "sub rsp, 8",
        "mov rax, rsi",
        "clgi",
        "sti",
        "2:",
        "mov rcx, [rdi + 0x08]",
        "mov rdx, [rdi + 0x10]",
        "mov rbx, [rdi + 0x18]",
        "mov rbp, [rdi + 0x28]",
        "mov rsi, [rdi + 0x30]",
        "mov r8,  [rdi + 0x40]",
        "mov r9,  [rdi + 0x48]",
        "mov r10, [rdi + 0x50]",
        "mov r11, [rdi + 0x58]",
        "mov r12, [rdi + 0x60]",
        "mov r13, [rdi + 0x68]",
        "mov r14, [rdi + 0x70]",
        "mov r15, [rdi + 0x78]",
        "mov rdi, [rdi + 0x38]",
        "vmload rax",
        "vmrun rax",
        // #VMEXIT: RAX, RSP, RFLAGS (IF set, GIF clear) are the host's again.
        "vmsave rax",
        "push rdi",
        "mov rdi, [rsp + 32]",
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
        "pop qword ptr [rdi + 0x38]",
        "mov rbx, rax",
        "mov rax, [rsp + 16]",
        "vmload rax",
        // The fast path, with the host's state loaded: svm_fast_exit(gprs, fast).
        "mov rsi, [rsp + 8]",
        "call {fast}",
        "mov rcx, rax",
        "mov rax, rbx",
        "mov rdi, [rsp + 24]",
        "test rcx, rcx",
        "jnz 2b",
        "add rsp, 32",
        "popfq",
        "stgi",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbp",
        "pop rbx",
        "ret",
        fast = sym super::fast::svm_fast_exit,
    )
}

/// VMSAVE to the page at physical `pa`: the current FS, GS, TR, LDTR, KernelGsBase, STAR,
/// LSTAR, CSTAR, SFMASK and SYSENTER MSRs.
///
/// # Safety
/// EFER.SVME is set; `pa` is a 4 KiB-aligned page owned by the caller.
pub unsafe fn vmsave(pa: u64) {
    // SAFETY: the caller guarantees SVM is on and the page is ours; VMSAVE writes only that
    // page (§15.5.2).
    unsafe { asm!("vmsave rax", in("rax") pa, options(nostack, preserves_flags)) };
}
