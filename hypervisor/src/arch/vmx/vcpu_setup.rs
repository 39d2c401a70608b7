// A VMX vCPU's creation: its VMCS's controls, host state and initial guest state, and its I/O
// and MSR bitmaps (SDM Vol. 3C §25.4-25.8). Cold code: it runs when a vCPU is made or reset,
// never on an exit.
//
// Included into `vcpu.rs` (`include!`), not a module of its own: part of the same module, it
// compiles to the same code as before the split. As a child module it changed how rustc cut the
// crate into codegen units, and with that which small functions were inlined where (the exit
// dispatcher among them): the SVM IPI round trips measured 0.2-0.5% more instructions.

fn write_segment(v: &Current, sel: F, base: F, limit: F, access: F, s: &Segment) {
    v.write(sel, u64::from(s.selector));
    v.write(base, s.base);
    v.write(limit, u64::from(s.limit));
    v.write(access, u64::from(s.access));
}

impl VmxVcpu {
    /// A vCPU for CPU `cpu` (an index: the one creating it, the only one to run it).
    pub(super) fn new(c: &Controls, config: &VcpuConfig, cpu: usize) -> Result<Self, &'static str> {
        let vmcs = Vmcs::new(c.revision, cpu)?;
        let bitmaps =
            HostPages::alloc_zeroed(BITMAP_PAGES).ok_or("out of memory for VMX bitmaps")?;
        // SAFETY: the frames were just allocated for this vCPU's bitmaps: intercept every port
        // and every MSR (SDM §25.6.4, §25.6.9).
        unsafe {
            core::ptr::write_bytes(bitmaps.0 as *mut u8, 0xff, (BITMAP_PAGES * 4096) as usize)
        };
        let mut vcpu = Self {
            vmcs,
            launched: false,
            gprs: config.initial.gprs,
            rip: config.initial.rip,
            rflags: config.initial.rflags,
            exit_insn_len: 0,
            cr2: None,
            pending: None,
            proc: c.proc,
            bitmaps,
            cr0_fixed: c.cr0_fixed,
            cr4_fixed: c.cr4_fixed,
            cr8: 0,
            eptp: ept::eptp(config.slat_root),
            vpid: config.tag,
            timer_shift: c.timer_shift,
            timer_enabled: c.timer_enabled,
            nmi_window: c.nmi_window,
            ple: c.ple,
            timeslice: 0,
            timeslice_fresh: true,
            msrs: Box::new(GuestMsrs::new(cpu)),
            fast_exits: 0,
        };
        vcpu.setup(c, config).map_err(|_| "VMPTRLD of a new VMCS failed")?;
        Ok(vcpu)
    }

    fn setup(&mut self, c: &Controls, config: &VcpuConfig) -> Result<(), super::instr::VmFail> {
        let v = self.vmcs.load()?;
        let s = &config.initial;
        // Controls (SDM §25.6-25.8), computed once by the backend from the capability MSRs.
        v.write(F::PinBasedControls, u64::from(c.pin));
        v.write(F::ProcBasedControls, u64::from(self.proc));
        v.write(F::ProcBasedControls2, u64::from(c.proc2));
        v.write(F::ExitControls, u64::from(c.exit));
        let ia32e = if s.efer & (1 << 10) != 0 { Entry::IA32E_MODE_GUEST.bits() } else { 0 };
        v.write(F::EntryControls, u64::from(c.entry | ia32e));
        v.write(F::ExceptionBitmap, 0);
        v.write(F::PageFaultErrorCodeMask, 0);
        v.write(F::PageFaultErrorCodeMatch, 0);
        v.write(F::Cr3TargetCount, 0);
        v.write(F::ExitMsrStoreCount, 0);
        v.write(F::ExitMsrLoadCount, 0);
        v.write(F::EntryMsrLoadCount, 0);
        v.write(F::EntryInterruptionInfo, 0);
        v.write(F::IoBitmapA, self.bitmaps.0);
        v.write(F::IoBitmapB, self.bitmaps.0 + 4096);
        v.write(F::MsrBitmap, self.bitmaps.0 + 2 * 4096);
        v.write(F::EptPointer, self.eptp);
        if c.vpid {
            v.write(F::Vpid, u64::from(self.vpid));
        }
        v.write(F::TscOffset, 0);
        // CR0/CR4: the host owns the bits VMX fixes; the guest sees its own values.
        v.write(F::Cr0GuestHostMask, self.cr0_mask());
        v.write(F::Cr4GuestHostMask, self.cr4_fixed.owned_by_host());

        // Host state (SDM §25.5, checked by §27.2.2-27.2.4).
        let sel = gdt::selectors();
        v.write(F::HostCr0, x86_64::registers::control::Cr0::read_raw());
        v.write(F::HostCr3, x86_64::registers::control::Cr3::read_raw().0.start_address().as_u64());
        v.write(F::HostCr4, x86_64::registers::control::Cr4::read_raw());
        v.write(F::HostCsSelector, u64::from(sel.code.0));
        for f in [
            F::HostSsSelector,
            F::HostDsSelector,
            F::HostEsSelector,
            F::HostFsSelector,
            F::HostGsSelector,
        ] {
            v.write(f, u64::from(sel.data.0));
        }
        v.write(F::HostTrSelector, u64::from(sel.tss.0));
        v.write(F::HostFsBase, 0);
        v.write(F::HostGsBase, 0);
        v.write(F::HostTrBase, gdt::tss_base());
        v.write(F::HostGdtrBase, gdt::gdt_base());
        v.write(F::HostIdtrBase, x86_64::instructions::tables::sidt().base.as_u64());
        v.write(F::HostSysenterCs, 0);
        v.write(F::HostSysenterEsp, 0);
        v.write(F::HostSysenterEip, 0);
        v.write(F::HostEfer, x86_64::registers::model_specific::Efer::read_raw());
        v.write(F::HostRip, vmx_exit as *const () as u64);

        self.write_guest_state(&v, s);
        v.write(F::GuestInterruptibility, 0);
        v.write(F::GuestActivityState, 0);
        v.write(F::GuestPendingDebugExceptions, 0);
        v.write(F::VmcsLinkPointer, u64::MAX);
        v.write(F::GuestDebugCtl, 0);
        v.write(F::GuestSysenterCs, 0);
        v.write(F::GuestSysenterEsp, 0);
        v.write(F::GuestSysenterEip, 0);
        v.write(F::GuestPat, PAT_RESET);
        // SAFETY: IA32_PAT exists on every CPU with VMX's PAT controls (required by the
        // backend); reading it changes nothing.
        v.write(F::HostPat, unsafe { rdmsr(IA32_PAT) });
        Ok(())
    }

    /// Writes the guest-state fields `s` gives (SDM §25.4, checked by §27.3.1) and the CR0/CR4
    /// read shadows.
    fn write_guest_state(&self, v: &Current, s: &InitialState) {
        v.write(F::Cr0ReadShadow, s.cr0);
        v.write(F::Cr4ReadShadow, s.cr4);
        v.write(F::GuestCr0, self.cr0_fixed.apply(s.cr0) & !CR0_CD_NW);
        v.write(F::GuestCr3, s.cr3);
        v.write(F::GuestCr4, self.cr4_fixed.apply(s.cr4));
        v.write(F::GuestEfer, s.efer);
        v.write(F::GuestDr7, 0x400);
        v.write(F::GuestRsp, s.gprs.0[reg::RSP]);
        v.write(F::GuestRip, s.rip);
        v.write(F::GuestRflags, s.rflags);
        write_segment(
            v,
            F::GuestCsSelector,
            F::GuestCsBase,
            F::GuestCsLimit,
            F::GuestCsAccess,
            &s.cs,
        );
        write_segment(
            v,
            F::GuestDsSelector,
            F::GuestDsBase,
            F::GuestDsLimit,
            F::GuestDsAccess,
            &s.data,
        );
        write_segment(
            v,
            F::GuestEsSelector,
            F::GuestEsBase,
            F::GuestEsLimit,
            F::GuestEsAccess,
            &s.data,
        );
        write_segment(
            v,
            F::GuestSsSelector,
            F::GuestSsBase,
            F::GuestSsLimit,
            F::GuestSsAccess,
            &s.data,
        );
        write_segment(
            v,
            F::GuestFsSelector,
            F::GuestFsBase,
            F::GuestFsLimit,
            F::GuestFsAccess,
            &s.data,
        );
        write_segment(
            v,
            F::GuestGsSelector,
            F::GuestGsBase,
            F::GuestGsLimit,
            F::GuestGsAccess,
            &s.data,
        );
        write_segment(
            v,
            F::GuestTrSelector,
            F::GuestTrBase,
            F::GuestTrLimit,
            F::GuestTrAccess,
            &s.tr,
        );
        write_segment(
            v,
            F::GuestLdtrSelector,
            F::GuestLdtrBase,
            F::GuestLdtrLimit,
            F::GuestLdtrAccess,
            &Segment::default(),
        );
        v.write(F::GuestLdtrAccess, 1 << 16); // unusable (SDM Table 25-2, bit 16)
        v.write(F::GuestGdtrBase, s.gdt_base);
        v.write(F::GuestGdtrLimit, u64::from(s.gdt_limit));
        v.write(F::GuestIdtrBase, s.idt_base);
        v.write(F::GuestIdtrLimit, u64::from(s.idt_limit));
    }
}
