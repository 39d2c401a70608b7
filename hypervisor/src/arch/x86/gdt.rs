//! The hypervisor's GDT and TSS (one CPU for now). The TSS gives the double-fault handler a
//! stack of its own (IST1), so a stack overflow is still reported.

use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

/// IST index (0-based, as the `x86_64` crate counts) of the double-fault stack.
pub const DOUBLE_FAULT_IST: u16 = 0;
const IST_STACK_SIZE: usize = 16 * 1024;

#[repr(align(16))]
struct Stack(#[allow(dead_code)] [u8; IST_STACK_SIZE]);
static mut DOUBLE_FAULT_STACK: Stack = Stack([0; IST_STACK_SIZE]);

/// Selectors the host state of a VMCS/VMCB needs.
#[derive(Clone, Copy, Debug)]
pub struct Selectors {
    pub code: SegmentSelector,
    pub data: SegmentSelector,
    pub tss: SegmentSelector,
}

struct Tables {
    gdt: GlobalDescriptorTable,
    selectors: Selectors,
}

static TSS: Once<TaskStateSegment> = Once::new();
static TABLES: Once<Tables> = Once::new();

/// Builds and loads the GDT and TSS, and reloads every segment register.
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        // Only the address is taken; the stack is used by the CPU alone, on a double fault.
        let base = core::ptr::addr_of!(DOUBLE_FAULT_STACK) as u64;
        tss.interrupt_stack_table[DOUBLE_FAULT_IST as usize] =
            VirtAddr::new(base + IST_STACK_SIZE as u64);
        tss
    });
    let t = TABLES.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        Tables { gdt, selectors: Selectors { code, data, tss } }
    });
    t.gdt.load();
    // SAFETY: the selectors index the GDT just loaded, with the descriptor kinds they name.
    unsafe {
        CS::set_reg(t.selectors.code);
        DS::set_reg(t.selectors.data);
        ES::set_reg(t.selectors.data);
        SS::set_reg(t.selectors.data);
        load_tss(t.selectors.tss);
    }
}

/// The selectors, once [`init`] ran.
pub fn selectors() -> Selectors {
    TABLES.get().expect("gdt::init runs first at boot").selectors
}

/// Linear base of the TSS (VMCS host TR base).
pub fn tss_base() -> u64 {
    core::ptr::from_ref(TSS.get().expect("gdt::init runs first at boot")) as u64
}

/// Linear base of the GDT (VMCS host GDTR base).
pub fn gdt_base() -> u64 {
    core::ptr::from_ref(&TABLES.get().expect("gdt::init runs first at boot").gdt) as u64
}
