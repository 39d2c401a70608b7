//! How a run of the hypervisor ends, as the emulators see it.
//!
//! QEMU's `isa-debug-exit` device at port [`QEMU_EXIT_PORT`] turns a written value `v` into the
//! process exit status `(v << 1) | 1`. A status of 0 is therefore impossible under QEMU, so the
//! host tools map [`QEMU_STATUS_SUCCESS`] back to 0.

/// I/O port of QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
pub const QEMU_EXIT_PORT: u16 = 0xf4;
/// Value written to [`QEMU_EXIT_PORT`] on success.
pub const QEMU_EXIT_SUCCESS: u32 = 0x10;
/// Value written to [`QEMU_EXIT_PORT`] on failure.
pub const QEMU_EXIT_FAILURE: u32 = 0x11;
/// The QEMU process status for [`QEMU_EXIT_SUCCESS`].
pub const QEMU_STATUS_SUCCESS: i32 = ((QEMU_EXIT_SUCCESS as i32) << 1) | 1;
/// The QEMU process status for [`QEMU_EXIT_FAILURE`].
pub const QEMU_STATUS_FAILURE: i32 = ((QEMU_EXIT_FAILURE as i32) << 1) | 1;

/// Bochs' shutdown port: writing the bytes `Shutdown` here ends Bochs (with `panic: action=fatal`
/// the process exits with status 1).
pub const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;

/// The line the hypervisor prints last before it powers off, followed by `ok` or `failed`.
pub const FINAL_LINE_PREFIX: &str = "hypervisor: power off:";
