//! What both boot binaries share: the global allocator and the panic handler.
#![no_std]

use linked_list_allocator::LockedHeap;

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

/// Sets up the heap over `[start, start+len)`; [`hypervisor::start`] calls it once.
///
/// # Safety
/// The range must be unused, writable memory that stays mapped for the rest of the run.
pub unsafe fn init_heap(start: *mut u8, len: usize) {
    // SAFETY: the caller hands over an unused, mapped range, once.
    unsafe { ALLOCATOR.lock().init(start, len) };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: a panic never returns to the code that may have held the console lock.
    unsafe { hypervisor::console::force_unlock() };
    hypervisor::println!();
    match info.location() {
        Some(l) => hypervisor::println!(
            "hypervisor: PANIC at {}:{}:{}: {}",
            l.file(),
            l.line(),
            l.column(),
            info.message()
        ),
        None => hypervisor::println!("hypervisor: PANIC: {}", info.message()),
    }
    hypervisor::start::finish(false)
}
