//! The shared runtime of our test guests (`elf64` partitions, `docs/guest-contract.md`).
//!
//! A guest binary is `#![no_std] #![no_main]`, depends on this crate, links with `link.ld`
//! (its `build.rs` passes `-T`) and names its main function with [`entry!`]:
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! guest_rt::entry!(main);
//! fn main(info: &'static guest_rt::StartInfo) -> u64 {
//!     guest_rt::println!("hello from {}", info.name());
//!     0 // the shutdown status: 0 = success
//! }
//! ```
//!
//! What the runtime does before `main`: records the registers the hypervisor started us with
//! ([`entry_state`]), moves to its own 64 KiB stack, zeroes `.bss`, picks VMCALL or VMMCALL,
//! and loads an IDT that reports every unexpected exception (`FAIL unexpected ...`). After
//! `main` it makes the Shutdown hypercall with `main`'s value; a panic prints `FAIL panic: ...`
//! and shuts down with status 255. Guest-physical addresses equal virtual ones (the start-up
//! identity map), so a pointer into RAM is its own GPA.
#![no_std]

pub mod channel;
pub mod checks;
pub mod console;
pub mod exception;
pub mod hypercall;
pub mod instr;
pub mod paging;
mod start;
pub mod syscall;

pub use checks::Checks;
pub use exception::{Exception, InterruptFrame, expect_exception, register_handler};
pub use hvabi;
pub use hvabi::start::StartInfo;
pub use start::{EntryState, entry_state, image_range, shutdown};

/// Names the guest's main function, `fn(&'static StartInfo) -> u64`; its value is the shutdown
/// status (0 = success).
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// The runtime's call into the guest (see `guest_rt::entry!`).
        #[unsafe(no_mangle)]
        pub extern "Rust" fn __guest_rt_main(info: &'static $crate::StartInfo) -> u64 {
            let main: fn(&'static $crate::StartInfo) -> u64 = $main;
            main(info)
        }
    };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    instr::cli();
    match info.location() {
        Some(at) => println!("FAIL panic: {} (at {}:{})", info.message(), at.file(), at.line()),
        None => println!("FAIL panic: {}", info.message()),
    }
    shutdown(255)
}
