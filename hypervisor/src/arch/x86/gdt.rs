//! The hypervisor's GDTs and TSSs, one pair per CPU (the boot CPU's static, each application
//! processor's from the heap, same layout so the selectors are the same everywhere). The TSS
//! gives the double-fault handler a stack of its own (IST1), so a stack overflow is still
//! reported.

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

fn tss_with_stack(double_fault_stack_top: u64) -> TaskStateSegment {
    let mut tss = TaskStateSegment::new();
    tss.interrupt_stack_table[DOUBLE_FAULT_IST as usize] = VirtAddr::new(double_fault_stack_top);
    tss
}

fn tables(tss: &'static TaskStateSegment) -> Tables {
    let mut gdt = GlobalDescriptorTable::new();
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss = gdt.append(Descriptor::tss_segment(tss));
    Tables { gdt, selectors: Selectors { code, data, tss } }
}

/// Builds and loads the boot CPU's GDT and TSS, and reloads every segment register.
pub fn init() {
    let tss = TSS.call_once(|| {
        // Only the address is taken; the stack is used by the CPU alone, on a double fault.
        let base = core::ptr::addr_of!(DOUBLE_FAULT_STACK) as u64;
        tss_with_stack(base + IST_STACK_SIZE as u64)
    });
    load(TABLES.call_once(|| tables(tss)));
}

/// Builds and loads a GDT and TSS of its own for an application processor (on the heap, kept
/// for the hypervisor's life), with its own double-fault stack.
pub fn init_ap() {
    let stack: &'static mut [u8] = alloc::vec![0u8; IST_STACK_SIZE].leak();
    let top = (stack.as_ptr() as u64 + IST_STACK_SIZE as u64) & !15;
    let tss: &'static TaskStateSegment =
        alloc::boxed::Box::leak(alloc::boxed::Box::new(tss_with_stack(top)));
    load(alloc::boxed::Box::leak(alloc::boxed::Box::new(tables(tss))));
}

fn load(t: &'static Tables) {
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

/// The selectors, once [`init`] ran (the same on every CPU).
pub fn selectors() -> Selectors {
    TABLES.get().expect("gdt::init runs first at boot").selectors
}

/// Linear base of this CPU's TSS (VMCS host TR base): read from its descriptor in this CPU's
/// GDT (a 16-byte system descriptor, SDM vol. 3A §8.2.3, Figure 8-4).
pub fn tss_base() -> u64 {
    let at = gdt_base() + u64::from(selectors().tss.index()) * 8;
    // SAFETY: `at` is the TSS descriptor of the GDT this CPU loaded (`init`/`init_ap`), which
    // lives for the hypervisor's whole life; reading it has no side effect.
    let (low, high) = unsafe {
        (
            core::ptr::read_volatile(at as *const u64),
            core::ptr::read_volatile((at + 8) as *const u64),
        )
    };
    tss_descriptor_base(low, high)
}

/// The base address in a 64-bit TSS descriptor's two quadwords.
fn tss_descriptor_base(low: u64, high: u64) -> u64 {
    ((low >> 16) & 0xff_ffff) | (((low >> 56) & 0xff) << 24) | ((high & 0xffff_ffff) << 32)
}

/// Linear base of this CPU's GDT (VMCS host GDTR base).
pub fn gdt_base() -> u64 {
    x86_64::instructions::tables::sgdt().base.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tss_base_from_its_descriptor() {
        let tss: &'static TaskStateSegment = alloc::boxed::Box::leak(Default::default());
        let t = tables(tss);
        let raw = t.gdt.entries();
        let i = usize::from(t.selectors.tss.index());
        let base = tss_descriptor_base(raw[i].raw(), raw[i + 1].raw());
        assert_eq!(base, core::ptr::from_ref(tss) as u64);
        assert_eq!(tss_descriptor_base(0xff00_00ab_cdef_0000, 0x1234_5678), 0x1234_5678_ffab_cdef);
    }
}
