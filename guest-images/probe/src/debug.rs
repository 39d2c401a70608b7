//! RFLAGS.RF and RFLAGS.TF across what the hypervisor does for the guest (issue 13, item 8):
//! an injected fault saves RFLAGS with RF set (SDM Vol. 3A §6.13), and an instruction the
//! hypervisor emulates under single-step ends with the #DB trap, DR6.BS set (SDM Vol. 3B
//! §17.3.1.4), as on hardware.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use guest_rt::exception::{GP, InterruptFrame, register_handler, unregister_handler};
use guest_rt::{Checks, checks::Why, ensure};

const DB: u8 = 1;
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_RF: u64 = 1 << 16;
const DR6_BS: u64 = 1 << 14;
const DR6_INIT: u64 = 0xffff_0ff0;
/// Outside the allow-list: RDMSR raises #GP (injected by the hypervisor).
const IA32_VMX_BASIC: u32 = 0x480;

static DB_COUNT: AtomicU64 = AtomicU64::new(0);
static DB_RIP: AtomicU64 = AtomicU64::new(0);
static DB_DR6: AtomicU64 = AtomicU64::new(0);
static GP_RFLAGS: AtomicU64 = AtomicU64::new(0);

/// Counts the #DB, keeps its RIP and DR6, and ends single-stepping.
fn on_db(frame: &mut InterruptFrame) {
    let dr6: u64;
    // SAFETY: reading DR6 has no side effects (debug registers are the guest's own).
    unsafe { asm!("mov {}, dr6", out(reg) dr6, options(nomem, nostack, preserves_flags)) };
    DB_COUNT.fetch_add(1, Ordering::SeqCst);
    DB_RIP.store(frame.rip, Ordering::SeqCst);
    DB_DR6.store(dr6, Ordering::SeqCst);
    frame.rflags &= !RFLAGS_TF;
}

/// Keeps the saved RFLAGS and steps over the 2-byte RDMSR that raised the #GP.
fn on_gp(frame: &mut InterruptFrame) {
    GP_RFLAGS.store(frame.rflags, Ordering::SeqCst);
    frame.rip += 2;
}

pub fn run(c: &mut Checks) {
    register_handler(GP, on_gp);
    c.check("injected-fault-sets-rf", injected_fault_rf());
    unregister_handler(GP);
    register_handler(DB, on_db);
    c.check("single-step-cpuid", single_step(Insn::Cpuid));
    c.check("single-step-out", single_step(Insn::Out));
    c.check("single-step-native", single_step(Insn::Nop));
    unregister_handler(DB);
}

fn injected_fault_rf() -> Result<(), Why> {
    GP_RFLAGS.store(0, Ordering::SeqCst);
    // SAFETY: RDMSR of a forbidden MSR raises #GP; `on_gp` steps over it. EAX and EDX are
    // declared as written in case it does not fault.
    unsafe {
        asm!("rdmsr", in("ecx") IA32_VMX_BASIC, out("eax") _, out("edx") _, options(nostack))
    };
    let rflags = GP_RFLAGS.load(Ordering::SeqCst);
    ensure!(rflags != 0, "no #GP")?;
    ensure!(rflags & RFLAGS_RF != 0, "saved RFLAGS {rflags:#x} lacks RF")
}

#[derive(Clone, Copy)]
enum Insn {
    Cpuid,
    Out,
    Nop,
}

/// Sets TF with POPF (it takes effect after the next instruction), runs `insn`, and expects
/// one #DB at the instruction after it, with DR6.BS.
fn single_step(insn: Insn) -> Result<(), Why> {
    DB_COUNT.store(0, Ordering::SeqCst);
    DB_DR6.store(0, Ordering::SeqCst);
    let after: u64;
    // SAFETY: DR6 is the guest's own; TF makes the next instruction trap to `on_db`, which
    // clears TF; CPUID's RBX is saved around it, the other registers are declared; port 0x80
    // (POST) has no device in a partition: the write changes nothing.
    unsafe {
        asm!("mov dr6, {}", in(reg) DR6_INIT, options(nomem, nostack));
        match insn {
            Insn::Cpuid => asm!(
                "push rbx",
                "lea {after}, [rip + 2f]",
                "pushfq",
                "or qword ptr [rsp], 0x100",
                "popfq",
                "cpuid",
                "2:",
                "pop rbx",
                after = out(reg) after,
                inout("eax") 0 => _,
                out("ecx") _,
                out("edx") _,
            ),
            Insn::Out => asm!(
                "lea {after}, [rip + 2f]",
                "pushfq",
                "or qword ptr [rsp], 0x100",
                "popfq",
                "out 0x80, al",
                "2:",
                after = out(reg) after,
                in("al") 0u8,
            ),
            Insn::Nop => asm!(
                "lea {after}, [rip + 2f]",
                "pushfq",
                "or qword ptr [rsp], 0x100",
                "popfq",
                "nop",
                "2:",
                after = out(reg) after,
            ),
        }
    }
    let (n, rip, dr6) = (
        DB_COUNT.load(Ordering::SeqCst),
        DB_RIP.load(Ordering::SeqCst),
        DB_DR6.load(Ordering::SeqCst),
    );
    ensure!(n == 1, "{n} #DB, want 1")?;
    ensure!(rip == after, "#DB at {rip:#x}, want {after:#x} (the next instruction)")?;
    ensure!(dr6 & DR6_BS != 0, "DR6 {dr6:#x} lacks BS")
}
