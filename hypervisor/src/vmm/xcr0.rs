//! The checks XSETBV makes before it writes XCR0 (Intel SDM Vol. 2B, XSETBV, "Protected Mode
//! Exceptions"; Vol. 1, 13.3 "Enabling the XSAVE Feature Set and XSAVE-Enabled Features"; AMD
//! APM Vol. 4, XSETBV). The hypervisor executes XSETBV itself with the guest's value, so a value
//! these checks let through faults in the host: every rule the CPU enforces must be here.

/// Why XSETBV raises #GP for a value, or `Ok` when the CPU takes it. `supported` is the
/// XCR0 bits the CPU supports (CPUID.(EAX=0DH,ECX=0):EDX:EAX).
pub fn check(index: u32, value: u64, supported: u64) -> Result<(), &'static str> {
    const X87: u64 = 1 << 0;
    const SSE: u64 = 1 << 1;
    const AVX: u64 = 1 << 2;
    const MPX: u64 = 0b11 << 3;
    const AVX512: u64 = 0b111 << 5;
    const AMX: u64 = 0b11 << 17;
    let all_or_none = |mask: u64| value & mask == 0 || value & mask == mask;
    if index != 0 {
        Err("only XCR0 can be written")
    } else if value & !supported != 0 {
        Err("a bit the CPU does not support")
    } else if value & X87 == 0 {
        Err("x87 state (bit 0) must stay enabled")
    } else if value & AVX != 0 && value & SSE == 0 {
        Err("AVX (bit 2) without SSE (bit 1)")
    } else if !all_or_none(MPX) {
        Err("BNDREGS and BNDCSR (bits 3, 4) differ")
    } else if !all_or_none(AVX512) {
        Err("opmask, ZMM_Hi256 and Hi16_ZMM (bits 5-7) differ")
    } else if value & AVX512 != 0 && value & AVX == 0 {
        Err("AVX-512 state (bits 5-7) without AVX (bit 2)")
    } else if !all_or_none(AMX) {
        Err("TILECFG and TILEDATA (bits 17, 18) differ")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x87, SSE, AVX, MPX, AVX-512, PKRU, AMX: a CPU like Bochs' `tigerlake` and more.
    const ALL: u64 = 0x6_02ff;

    #[test]
    fn values_the_cpu_takes() {
        for v in [0x1, 0x3, 0x7, 0x1f, 0xe7, 0xff, 0x2e7, 0x6_0007, ALL] {
            assert_eq!(check(0, v, ALL), Ok(()), "{v:#x}");
        }
    }

    #[test]
    fn values_the_cpu_refuses() {
        // 0xa7 is what a chaos guest wrote (seed 1 under Bochs): AVX-512 bits 5 and 7 without
        // 6; the host's XSETBV raised #GP and the hypervisor died.
        for v in [0x0, 0x2, 0x5, 0xb, 0x13, 0xa7, 0x27, 0x67, 0xe3, 0xe1, 0x2_0007, 0x4_0007] {
            assert!(check(0, v, ALL).is_err(), "{v:#x}");
        }
        assert!(check(0, 0x7, 0x3).is_err(), "AVX where the CPU lacks it");
        assert!(check(0, 0x203, ALL).is_ok(), "PKRU (bit 9) needs no other bit");
        assert!(check(1, 0x1, ALL).is_err(), "XCR1");
        assert!(check(u32::MAX, 0x1, ALL).is_err(), "XCR 0xffffffff");
    }
}
