// An SVM vCPU's creation: its VMCB's intercepts and controls, its initial guest state, and its
// I/O and MSR permission maps (AMD APM Vol. 2 §15.5, §15.10, §15.11). Cold code: it runs when a
// vCPU is made or reset, never on an exit.
//
// Included into `vcpu.rs` (`include!`), not a module of its own, so that it compiles to the
// same code as before the split (see `arch/vmx/vcpu_setup.rs`).

impl SvmVcpu {
    pub(super) fn new(
        config: &VcpuConfig,
        asid: u32,
        host_state: u64,
        nrip_save: bool,
        owners: &'static super::asid::Owners,
    ) -> Result<Self, &'static str> {
        let pages = HostPages::alloc_zeroed(PAGES).ok_or("out of memory for a VMCB")?;
        // SAFETY: the frames were just allocated for this vCPU; ones in both permission maps
        // intercept every port and every MSR.
        unsafe {
            core::ptr::write_bytes(
                (pages.0 + IOPM_PAGE * PAGE_SIZE) as *mut u8,
                0xff,
                ((PAGES - IOPM_PAGE) * PAGE_SIZE) as usize,
            )
        };
        let mut vcpu = Self {
            pages,
            host_state,
            gprs: config.initial.gprs,
            pending: None,
            next_rip: None,
            cpuid_site: None,
            fast_exits: 0,
            nrip_save,
            // The ASID may have been another vCPU's.
            flush: true,
            timeslice: 0,
            nmi_masked: false,
            step: None,
            owners,
        };
        vcpu.setup(config);
        vcpu.vmcb_mut().control.guest_asid = asid;
        Ok(vcpu)
    }

    /// Writes the controls and the initial guest state (checked by VMRUN, §15.5.1).
    fn setup(&mut self, config: &VcpuConfig) {
        let (iopm, msrpm) =
            (self.pages.0 + IOPM_PAGE * PAGE_SIZE, self.pages.0 + MSRPM_PAGE * PAGE_SIZE);
        let v = self.vmcb_mut();
        let c = &mut v.control;
        c.intercept1 = I1::INTR
            | I1::NMI
            | I1::INIT
            | I1::SHUTDOWN
            | I1::CPUID
            | I1::HLT
            | I1::INVD
            | I1::RDPMC
            | I1::INVLPGA
            | I1::IOIO_PROT
            | I1::MSR_PROT;
        // Bits 31:16 of the CR intercept word are writes to CR0..CR15 (§15.9): CR0 (MOV,
        // CLTS, LMSW) and CR4, so that the core's checks run (`vmm/cr.rs`). Not CR3: a Linux
        // guest writes it ~18,000 times from boot to power-off, +7% guest time to /init
        // (module comment).
        c.intercept_cr = (1 << 16) | (1 << (16 + 4));
        c.intercept2 = I2::VMRUN
            | I2::VMMCALL
            | I2::VMLOAD
            | I2::VMSAVE
            | I2::STGI
            | I2::CLGI
            | I2::SKINIT
            | I2::RDTSCP
            | I2::WBINVD
            | I2::MONITOR
            | I2::MWAIT
            | I2::MWAIT_CONDITIONAL
            | I2::XSETBV;
        c.iopm_base_pa = iopm;
        c.msrpm_base_pa = msrpm;
        c.int_ctl = IntCtl::V_INTR_MASKING;
        c.np_control = NP_ENABLE;
        c.n_cr3 = config.slat_root;

        v.save.g_pat = PAT_DEFAULT;
        self.write_guest_state(&config.initial);
    }

    /// Writes the guest state `s` gives into the save area (checked by VMRUN, §15.5.1).
    fn write_guest_state(&mut self, s: &InitialState) {
        let g = &mut self.vmcb_mut().save;
        let data = Seg::from_segment(&s.data);
        g.cs = Seg::from_segment(&s.cs);
        (g.ds, g.es, g.ss, g.fs, g.gs) = (data, data, data, data, data);
        g.tr = Seg::from_segment(&s.tr);
        g.gdtr = Seg { limit: u32::from(s.gdt_limit), base: s.gdt_base, ..Seg::default() };
        g.idtr = Seg { limit: u32::from(s.idt_limit), base: s.idt_base, ..Seg::default() };
        // No LDT.
        g.ldtr = Seg::default();
        g.cpl = ((s.cs.access >> 5) & 3) as u8;
        g.efer = s.efer | EFER_SVME;
        g.cr0 = s.cr0;
        g.cr2 = 0;
        g.cr3 = s.cr3;
        g.cr4 = s.cr4;
        g.dr6 = 0xffff_0ff0;
        g.dr7 = 0x400;
        g.rflags = s.rflags;
        g.rip = s.rip;
        g.rsp = s.gprs.0[reg::RSP];
        g.rax = s.gprs.0[reg::RAX];
    }
}
