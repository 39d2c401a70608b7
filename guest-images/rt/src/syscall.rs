//! SYSCALL from ring 0 and SWAPGS, for checks of the MSRs the CPU uses by itself.
//!
//! [`entry`] gives four SYSCALL entry points; each records its number, RCX, R11, RFLAGS, CS
//! and SS as the CPU left them (SDM Vol. 2B SYSCALL: RCX = the next instruction, R11 =
//! RFLAGS, RFLAGS &= ~FMASK, CS = STAR[47:32], SS = STAR[47:32] + 8), then restores RFLAGS from
//! R11 and jumps back to RCX: no SYSRET, the caller stays in ring 0 on its own stack. Using a
//! different entry per partition tells whose LSTAR the CPU used.

use core::arch::{asm, naked_asm};
use core::cell::UnsafeCell;

/// What the entry saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Seen {
    /// Which entry ran (0..=3).
    pub entry: u64,
    pub rcx: u64,
    pub r11: u64,
    pub rflags: u64,
    pub cs: u64,
    pub ss: u64,
}

struct Slot(UnsafeCell<Seen>);
// SAFETY: one vCPU; the slot is written only by the entry stub while `call` waits for it.
unsafe impl Sync for Slot {}

static SEEN: Slot =
    Slot(UnsafeCell::new(Seen { entry: u64::MAX, rcx: 0, r11: 0, rflags: 0, cs: 0, ss: 0 }));

/// The common tail of the four entries: records the registers, restores RFLAGS, returns.
#[unsafe(naked)]
unsafe extern "C" fn common() {
    naked_asm!(
        "mov [rip + {seen} + 8], rcx",
        "mov [rip + {seen} + 16], r11",
        "pushfq",
        "pop qword ptr [rip + {seen} + 24]",
        "mov word ptr [rip + {seen} + 32], cs",
        "mov word ptr [rip + {seen} + 40], ss",
        "push r11",
        "popfq",
        "jmp rcx",
        seen = sym SEEN,
    )
}

macro_rules! entry_stub {
    ($name:ident, $n:literal) => {
        #[unsafe(naked)]
        unsafe extern "C" fn $name() {
            naked_asm!(
                concat!("mov qword ptr [rip + {seen}], ", $n),
                "jmp {common}",
                seen = sym SEEN,
                common = sym common,
            )
        }
    };
}

entry_stub!(entry0, 0);
entry_stub!(entry1, 1);
entry_stub!(entry2, 2);
entry_stub!(entry3, 3);

/// The address of SYSCALL entry `n % 4`, a value for LSTAR.
pub fn entry(n: u64) -> u64 {
    let stubs: [unsafe extern "C" fn(); 4] = [entry0, entry1, entry2, entry3];
    stubs[(n % 4) as usize] as usize as u64
}

/// Executes SYSCALL with RFLAGS.AC and DF set (system flags: QEMU's TCG loses the arithmetic
/// ones across SYSCALL) and returns what the entry saw and where
/// SYSCALL should have returned (the instruction after it).
///
/// # Safety
/// EFER.SCE is set and LSTAR is one of [`entry`]'s addresses; STAR and FMASK are the
/// caller's to choose. Anything else jumps wherever LSTAR points.
pub unsafe fn call() -> (Seen, u64) {
    // SAFETY: nothing else touches the slot while no SYSCALL runs.
    unsafe { SEEN.0.get().write_volatile(Seen { entry: u64::MAX, ..Seen::default() }) };
    let ret: u64;
    // SAFETY: the caller set up LSTAR to one of our entries, which returns to RCX with RFLAGS
    // from R11; DF and AC (which at CPL 0 only lifts SMAP) are cleared again right after.
    unsafe {
        asm!(
            "lea {ret}, [rip + 2f]",
            "pushfq",
            "or qword ptr [rsp], 0x40000",
            "popfq",
            "std",
            "syscall",
            "2:",
            "cld",
            "pushfq",
            "and qword ptr [rsp], -0x40001",
            "popfq",
            ret = out(reg) ret,
            out("rcx") _,
            out("r11") _,
        );
    }
    // SAFETY: the entry has finished writing.
    (unsafe { SEEN.0.get().read_volatile() }, ret)
}

/// SWAPGS: exchanges GS.base and IA32_KERNEL_GS_BASE.
///
/// # Safety
/// The caller owns GS (this runtime does not use it) and swaps back before anything else does.
pub unsafe fn swapgs() {
    // SAFETY: per the caller; SWAPGS touches no memory.
    unsafe { asm!("swapgs", options(nomem, nostack, preserves_flags)) };
}
