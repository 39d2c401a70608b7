//! Exception entry: one naked stub per vector saves every register and calls [`fatal`], which
//! prints the exception, error code, RIP, CR2 and all registers, then powers off with a failure
//! status. The host PIC's IRQ lines have stubs of their own (`pic.rs` says what they do), so do the
//! APIC timer and spurious vectors, and every other vector from 0x30 up is counted and
//! acknowledged (`lapic.rs`). The hypervisor never resumes after an exception of its own: such a fault is a broken
//! invariant of the hypervisor, not of a guest (guest faults arrive as VM exits).

use core::arch::naked_asm;
use spin::Once;
use x86_64::VirtAddr;
use x86_64::structures::idt::InterruptDescriptorTable;

/// Registers as the entry stubs leave them on the stack (lowest address first).
#[derive(Debug)]
#[repr(C)]
pub struct Frame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Saves the general registers and calls [`fatal`] with a pointer to the [`Frame`].
#[unsafe(naked)]
extern "C" fn common_entry() -> ! {
    naked_asm!(
        "push rax", "push rbx", "push rcx", "push rdx", "push rsi", "push rdi", "push rbp",
        "push r8", "push r9", "push r10", "push r11", "push r12", "push r13", "push r14", "push r15",
        "mov rdi, rsp",
        "and rsp, -16",
        "call {fatal}",
        "ud2",
        fatal = sym fatal,
    )
}

macro_rules! stub {
    ($name:ident, $vector:literal, no_error_code) => {
        #[unsafe(naked)]
        extern "C" fn $name() -> ! {
            naked_asm!("push 0", concat!("push ", $vector), "jmp {c}", c = sym common_entry)
        }
    };
    ($name:ident, $vector:literal, error_code) => {
        #[unsafe(naked)]
        extern "C" fn $name() -> ! {
            naked_asm!(concat!("push ", $vector), "jmp {c}", c = sym common_entry)
        }
    };
}

stub!(de, 0, no_error_code);
stub!(db, 1, no_error_code);
stub!(nmi, 2, no_error_code);
stub!(bp, 3, no_error_code);
stub!(of, 4, no_error_code);
stub!(br, 5, no_error_code);
stub!(ud, 6, no_error_code);
stub!(nm, 7, no_error_code);
stub!(df, 8, error_code);
stub!(ts, 10, error_code);
stub!(np, 11, error_code);
stub!(ss, 12, error_code);
stub!(gp, 13, error_code);
stub!(pf, 14, error_code);
stub!(mf, 16, no_error_code);
stub!(ac, 17, error_code);
stub!(mc, 18, no_error_code);
stub!(xm, 19, no_error_code);
stub!(ve, 20, no_error_code);
stub!(cp, 21, error_code);

/// One entry stub per host IRQ line: saves the registers a C call may clobber, calls
/// [`super::pic::irq_entry`] with the line and returns with IRETQ. The CPU aligns RSP to 16 and
/// pushes 40 bytes; the nine pushes make it 16-byte aligned again for the call (SysV ABI).
macro_rules! irq_stub {
    ($name:ident, $irq:literal) => {
        irq_stub!($name, $irq, super::pic::irq_entry);
    };
    ($name:ident, $irq:literal, $handler:path) => {
        #[unsafe(naked)]
        extern "C" fn $name() {
            naked_asm!(
                "push rax", "push rcx", "push rdx", "push rsi", "push rdi",
                "push r8", "push r9", "push r10", "push r11",
                concat!("mov edi, ", $irq),
                "call {h}",
                "pop r11", "pop r10", "pop r9", "pop r8",
                "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rax",
                "iretq",
                h = sym $handler,
            )
        }
    };
}

/// The APIC's spurious vector: no EOI (SDM vol. 3A §11.9).
#[unsafe(naked)]
extern "C" fn apic_spurious() {
    naked_asm!("iretq")
}

/// The first vector the generic stubs below cover (IRQs 0-15 of the host PIC come before).
const OTHER_FIRST: u8 = 0x30;
/// Bytes between two generic stubs.
const OTHER_STUB_BYTES: u64 = 16;

// One 16-byte stub for every vector from 0x30 up: it pushes its vector and jumps to a common
// part that saves the registers a C call may clobber, calls `lapic::unexpected_entry` with the
// vector and returns with IRETQ. So every vector has a handler: an interrupt nobody expects
// is counted and acknowledged, never a #NP or #GP of the hypervisor's own.
core::arch::global_asm!(
    ".pushsection .text.microhv_other_vectors, \"ax\"",
    ".balign 16",
    ".global microhv_other_vectors",
    "microhv_other_vectors:",
    ".set microhv_vec, {first}",
    ".rept 256 - {first}",
    ".balign 16",
    "pushq $microhv_vec",
    "jmp microhv_other_common",
    ".set microhv_vec, microhv_vec + 1",
    ".endr",
    "microhv_other_common:",
    "pushq %rax", "pushq %rcx", "pushq %rdx", "pushq %rsi", "pushq %rdi",
    "pushq %r8", "pushq %r9", "pushq %r10", "pushq %r11",
    // The frame (40 bytes) and the vector leave RSP 16-byte aligned; nine pushes undo that.
    "movq 72(%rsp), %rdi",
    "subq $8, %rsp",
    "call {h}",
    "addq $8, %rsp",
    "popq %r11", "popq %r10", "popq %r9", "popq %r8",
    "popq %rdi", "popq %rsi", "popq %rdx", "popq %rcx", "popq %rax",
    "addq $8, %rsp",
    "iretq",
    ".popsection",
    first = const OTHER_FIRST,
    h = sym super::lapic::unexpected_entry,
    options(att_syntax),
);

unsafe extern "C" {
    /// The first generic stub (`global_asm!` above).
    static microhv_other_vectors: u8;
}

irq_stub!(irq0, 0);
irq_stub!(irq1, 1);
irq_stub!(irq2, 2);
irq_stub!(irq3, 3);
irq_stub!(irq4, 4);
irq_stub!(irq5, 5);
irq_stub!(irq6, 6);
irq_stub!(irq7, 7);
irq_stub!(irq8, 8);
irq_stub!(irq9, 9);
irq_stub!(irq10, 10);
irq_stub!(irq11, 11);
irq_stub!(irq12, 12);
irq_stub!(irq13, 13);
irq_stub!(irq14, 14);
irq_stub!(irq15, 15);
// The host APIC timer's stub, calling `lapic::timer_entry` with its vector.
irq_stub!(apic_timer, 0xef, super::lapic::timer_entry);
// The wake-up IPI's stub (an idle AP's `hlt` ends; `smp::wake_entry` ends the interrupt).
irq_stub!(apic_wake, 0xee, super::smp::wake_entry);

/// SDM Vol. 3A, Table 6-1: exception mnemonics by vector.
pub fn exception_name(vector: u64) -> &'static str {
    const NAMES: [&str; 22] = [
        "#DE divide error",
        "#DB debug",
        "NMI",
        "#BP breakpoint",
        "#OF overflow",
        "#BR bound range",
        "#UD invalid opcode",
        "#NM device not available",
        "#DF double fault",
        "coprocessor segment overrun",
        "#TS invalid TSS",
        "#NP segment not present",
        "#SS stack fault",
        "#GP general protection",
        "#PF page fault",
        "reserved",
        "#MF x87 FP error",
        "#AC alignment check",
        "#MC machine check",
        "#XM SIMD FP",
        "#VE virtualization",
        "#CP control protection",
    ];
    NAMES.get(vector as usize).copied().unwrap_or("unknown vector")
}

static IDT: Once<InterruptDescriptorTable> = Once::new();

/// Builds the IDT (once) and loads it on this CPU: every CPU shares the one table.
pub fn init() {
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        let a = |f: extern "C" fn() -> !| VirtAddr::new(f as usize as u64);
        // SAFETY: each address is a stub above, which expects exactly the frame the CPU pushes
        // for its vector (with or without an error code, as the stub's kind says).
        unsafe {
            idt.divide_error.set_handler_addr(a(de));
            idt.debug.set_handler_addr(a(db));
            idt.non_maskable_interrupt.set_handler_addr(a(nmi));
            idt.breakpoint.set_handler_addr(a(bp));
            idt.overflow.set_handler_addr(a(of));
            idt.bound_range_exceeded.set_handler_addr(a(br));
            idt.invalid_opcode.set_handler_addr(a(ud));
            idt.device_not_available.set_handler_addr(a(nm));
            idt.double_fault.set_handler_addr(a(df)).set_stack_index(super::gdt::DOUBLE_FAULT_IST);
            idt.invalid_tss.set_handler_addr(a(ts));
            idt.segment_not_present.set_handler_addr(a(np));
            idt.stack_segment_fault.set_handler_addr(a(ss));
            idt.general_protection_fault.set_handler_addr(a(gp));
            idt.page_fault.set_handler_addr(a(pf));
            idt.x87_floating_point.set_handler_addr(a(mf));
            idt.alignment_check.set_handler_addr(a(ac));
            idt.machine_check.set_handler_addr(a(mc));
            idt.simd_floating_point.set_handler_addr(a(xm));
            idt.virtualization.set_handler_addr(a(ve));
            idt.cp_protection_exception.set_handler_addr(a(cp));
        }
        let irqs: [extern "C" fn(); 16] = [
            irq0, irq1, irq2, irq3, irq4, irq5, irq6, irq7, irq8, irq9, irq10, irq11, irq12, irq13,
            irq14, irq15,
        ];
        for (i, stub) in irqs.iter().enumerate() {
            // SAFETY: each stub saves what it clobbers and returns with IRETQ, as an interrupt
            // gate's handler must.
            unsafe {
                idt[super::pic::VECTOR_BASE + i as u8]
                    .set_handler_addr(VirtAddr::new(*stub as usize as u64));
            }
        }
        let others = &raw const microhv_other_vectors as u64;
        for v in OTHER_FIRST..=u8::MAX {
            let stub = match v {
                super::lapic::TIMER_VECTOR => apic_timer as *const () as u64,
                super::smp::WAKE_VECTOR => apic_wake as *const () as u64,
                super::lapic::SPURIOUS_VECTOR => apic_spurious as *const () as u64,
                _ => others + u64::from(v - OTHER_FIRST) * OTHER_STUB_BYTES,
            };
            // SAFETY: each address is a stub that saves what it clobbers and returns with
            // IRETQ, as an interrupt gate's handler must (the generic stubs are 16 bytes apart,
            // `.balign 16` above, each shorter than that).
            unsafe { idt[v].set_handler_addr(VirtAddr::new(stub)) };
        }
        idt
    });
    idt.load();
}

/// Reports a hypervisor exception and powers off with a failure status.
extern "C" fn fatal(f: &Frame) -> ! {
    // SAFETY: this CPU never returns to the code it interrupted, which may have held the lock.
    unsafe { crate::console::force_unlock() };
    let cr2 = super::instr::read_cr2();
    crate::println!();
    crate::println!(
        "hypervisor: FATAL EXCEPTION {} (vector {}) error code {:#x}",
        exception_name(f.vector),
        f.vector,
        f.error_code
    );
    crate::println!("  RIP {:#018x}  CS {:#06x}  RFLAGS {:#010x}", f.rip, f.cs, f.rflags);
    crate::println!("  RSP {:#018x}  SS {:#06x}  CR2 {:#018x}", f.rsp, f.ss, cr2);
    if f.vector == 14 {
        crate::println!(
            "  page fault at address {:#x}: {} {} in {} mode",
            cr2,
            if f.error_code & 1 != 0 { "protection violation" } else { "not present" },
            if f.error_code & 2 != 0 {
                "write"
            } else if f.error_code & 16 != 0 {
                "fetch"
            } else {
                "read"
            },
            if f.error_code & 4 != 0 { "user" } else { "supervisor" },
        );
    }
    crate::println!("  RAX {:#018x}  RBX {:#018x}  RCX {:#018x}", f.rax, f.rbx, f.rcx);
    crate::println!("  RDX {:#018x}  RSI {:#018x}  RDI {:#018x}", f.rdx, f.rsi, f.rdi);
    crate::println!("  RBP {:#018x}  R8  {:#018x}  R9  {:#018x}", f.rbp, f.r8, f.r9);
    crate::println!("  R10 {:#018x}  R11 {:#018x}  R12 {:#018x}", f.r10, f.r11, f.r12);
    crate::println!("  R13 {:#018x}  R14 {:#018x}  R15 {:#018x}", f.r13, f.r14, f.r15);
    crate::println!("{} failed", hvabi::exit::FINAL_LINE_PREFIX);
    super::power::power_off(false)
}
