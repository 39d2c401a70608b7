//! Code remapped under the same RIP (issue 13, item 3): a CPU that gives the hypervisor no next
//! RIP (SVM without NRIP save) makes it find the length of an exiting instruction itself, and
//! a cache of that length must notice when the page under RIP now holds other code.
//!
//! A virtual 2 MiB page is mapped to frame A, holding a 3-byte form of the instruction
//! (REX.W CPUID, or REX.W RDMSR), and run twice (the second run may take the hypervisor's fast
//! path); then to frame B, holding the 2-byte form (INVLPG, same CR3) and run again. After the
//! instruction each frame increments R8 twice with 3-byte `inc r8`; resuming one byte too far
//! in B runs `inc eax` and one `inc r8` instead, so R8 says where the guest resumed.

use core::arch::asm;

use guest_rt::exception::{GP, PF};
use guest_rt::paging::{self, Caching, PAGE_2M};
use guest_rt::{Checks, StartInfo, checks::Why, ensure, expect_exception, image_range};

/// PML4 slot 160: empty in the start-up map and used by no other check.
const VA: u64 = 0x0000_5000_0000_0000;
const FS_BASE: u32 = 0xc000_0100;
const INC_R8: [u8; 3] = [0x49, 0xff, 0xc0];
const RET: u8 = 0xc3;

pub fn run(c: &mut Checks, info: &StartInfo) {
    let (_, image_end) = image_range();
    // Two frames below the top 2 MiB of RAM (the stack gap) and above this image.
    let (a, b) = (info.ram_size - 3 * PAGE_2M, info.ram_size - 2 * PAGE_2M);
    if a < image_end.next_multiple_of(PAGE_2M) {
        c.check("remap-cpuid", Err::<(), _>(guest_rt::why!("RAM too small for two frames")));
        return;
    }
    c.check("remap-cpuid", remapped(a, b, 0xa2));
    c.check("remap-rdmsr", remapped(a, b, 0x32));
}

/// Writes `prefix`, `0f op`, `inc r8` twice and `ret` at frame `pa`; returns the saved bytes.
fn write_code(pa: u64, rex_w: bool, op: u8) -> [u8; 16] {
    let mut code = [0u8; 16];
    let mut n = 0;
    if rex_w {
        code[n] = 0x48;
        n += 1;
    }
    code[n..n + 2].copy_from_slice(&[0x0f, op]);
    n += 2;
    for _ in 0..2 {
        code[n..n + 3].copy_from_slice(&INC_R8);
        n += 3;
    }
    code[n] = RET;
    let at = pa as *mut [u8; 16];
    // SAFETY: `pa` is a RAM frame above this image and below the stack gap that nothing else
    // uses during this check (identity-mapped); the old bytes are put back by the caller.
    unsafe {
        let old = at.read_volatile();
        at.write_volatile(code);
        old
    }
}

/// Calls the code at `VA` with ECX = FS_BASE (for RDMSR; CPUID ignores it) and returns R8,
/// which starts at 0.
fn call_code() -> Result<u64, Why> {
    let mut r8 = 0u64;
    let e = expect_exception(|| {
        // SAFETY: `VA` maps a frame holding CPUID or RDMSR of FS_BASE (allowed, readable),
        // two `inc r8` and `ret`; RBX, which CPUID clobbers, is saved around the call and the
        // other registers it writes are declared.
        unsafe {
            asm!(
                "push rbx",
                "call {f}",
                "pop rbx",
                f = in(reg) VA,
                inout("r8") r8,
                inout("rax") 0u64 => _,
                inout("rcx") u64::from(FS_BASE) => _,
                out("rdx") _,
            )
        }
    });
    match e {
        None => Ok(r8),
        Some(e) => Err(guest_rt::why!("raised {e}")),
    }
}

fn remapped(a: u64, b: u64, op: u8) -> Result<(), Why> {
    let old_a = write_code(a, true, op);
    let old_b = write_code(b, false, op);
    let result = (|| {
        // SAFETY: nothing lives at VA (slot 160 is otherwise unused); the frames are RAM.
        unsafe { paging::map_2m(VA, a, Caching::WriteBack) }
            .map_err(|e| guest_rt::why!("mapping frame A: {e}"))?;
        for run in 0..2 {
            let r8 = call_code()?;
            ensure!(r8 == 2, "frame A, run {run}: R8 {r8}, want 2")?;
        }
        // SAFETY: as above; map_2m ends with INVLPG of VA.
        unsafe { paging::map_2m(VA, b, Caching::WriteBack) }
            .map_err(|e| guest_rt::why!("mapping frame B: {e}"))?;
        let r8 = call_code()?;
        ensure!(r8 == 2, "frame B: R8 {r8}, want 2 (resumed inside the next instruction)")
    })();
    // SAFETY: the frames held these bytes before `write_code`; VA is no longer called.
    unsafe {
        (a as *mut [u8; 16]).write_volatile(old_a);
        (b as *mut [u8; 16]).write_volatile(old_b);
    }
    result
}

/// The last canonical 2 MiB page of the lower half (PML4 slot 255).
const TOP_VA: u64 = 0x0000_7fff_ffe0_0000;

/// Instructions at the end of what is mapped (issue 13, item 9): a CPUID in the last two bytes
/// before an unmapped page, and before the end of the canonical lower half. The hypervisor
/// reads up to 15 bytes to find its length; it must not end the partition because the bytes
/// after the instruction cannot be read. The CPU then faults fetching the next instruction:
/// #PF at the unmapped page (CR2 its address), #GP or #PF at the non-canonical address.
pub fn run_edges(c: &mut Checks, info: &StartInfo) {
    let a = info.ram_size - 3 * PAGE_2M;
    let (_, image_end) = image_range();
    if a < image_end.next_multiple_of(PAGE_2M) {
        c.check("fetch-edge-unmapped", Err::<(), _>(guest_rt::why!("RAM too small")));
        return;
    }
    c.check(
        "fetch-edge-unmapped",
        at_edge(VA, a, |e| {
            faulted_at(e, PF)?;
            let cr2 = e.map_or(0, |e| e.cr2);
            ensure!(cr2 == VA + PAGE_2M, "CR2 {cr2:#x}, want {:#x}", VA + PAGE_2M)
        }),
    );
    c.check(
        "fetch-edge-canonical",
        at_edge(TOP_VA, a, |e| faulted_at(e, GP).or_else(|_| faulted_at(e, PF))),
    );
}

fn faulted_at(e: Option<guest_rt::Exception>, vector: u8) -> Result<(), Why> {
    match e {
        Some(e) if e.vector == vector => Ok(()),
        Some(e) => Err(guest_rt::why!("raised {e}")),
        None => Err(guest_rt::why!("no exception")),
    }
}

/// Maps `va` to frame `pa` (the next 2 MiB stay unmapped or are not canonical), puts CPUID in
/// its last two bytes and calls it; `judge` sees what the fetch after it raised.
fn at_edge(
    va: u64,
    pa: u64,
    judge: impl FnOnce(Option<guest_rt::Exception>) -> Result<(), Why>,
) -> Result<(), Why> {
    let at = (pa + PAGE_2M - 2) as *mut [u8; 2];
    // SAFETY: the frame's last two bytes are RAM nothing else uses now; they are put back.
    let old = unsafe { at.read_volatile() };
    // SAFETY: as above.
    unsafe { at.write_volatile([0x0f, 0xa2]) };
    // SAFETY: nothing else lives at `va`; the frame is RAM.
    let mapped = unsafe { paging::map_2m(va, pa, Caching::WriteBack) };
    let result = mapped.map_err(|e| guest_rt::why!("mapping {va:#x}: {e}")).and_then(|()| {
        let target = va + PAGE_2M - 2;
        let e = expect_exception(|| {
            // SAFETY: CPUID then a fault fetching the next instruction, which
            // expect_exception catches; RBX is saved, the other registers CPUID writes are
            // declared.
            unsafe {
                asm!(
                    "push rbx",
                    "call {f}",
                    "pop rbx",
                    f = in(reg) target,
                    inout("rax") 0u64 => _,
                    out("rcx") _,
                    out("rdx") _,
                )
            }
        });
        judge(e)
    });
    // SAFETY: as above.
    unsafe { at.write_volatile(old) };
    result
}
