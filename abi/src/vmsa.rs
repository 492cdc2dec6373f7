//! The SEV-ES/SNP VM save area (VMSA): one 4 KiB page that holds a vCPU's
//! whole register state while it does not run.
//!
//! On SNP the hardware loads and stores it; on the dev platform the SVSM
//! converts it to and from a VMCB (see [`crate::vmcb`]) around each VMRUN,
//! so the rest of the SVSM reads and writes guest state the same way on
//! both. Its first part has the layout of the VMCB state-save area; the
//! general registers, x87/SSE state and the SEV fields follow.
//!
//! Sources: project reference `snp-svsm.md` §4.2 (offsets from COCONUT-SVSM
//! `cpuarch/src/vmsa.rs` and Linux `struct sev_es_save_area`), checked in
//! the tests below against the `igvm` crate's `SevVmsa`, an independent
//! definition.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A segment register as the VMSA and the VMCB store it.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Attributes in the compressed SVM form: descriptor bits 8..16 in
    /// bits 0..8 (type, S, DPL, P), descriptor bits 20..24 in bits 8..12
    /// (AVL, L, D/B, G).
    pub attrib: u16,
    /// Limit (bytes, already scaled by G).
    pub limit: u32,
    /// Base address.
    pub base: u64,
}

impl Segment {
    /// A segment with the given fields.
    pub const fn new(selector: u16, attrib: u16, limit: u32, base: u64) -> Segment {
        Segment { selector, attrib, limit, base }
    }
}

/// Segment attribute bits (compressed SVM form).
pub mod attrib {
    /// Present.
    pub const PRESENT: u16 = 1 << 7;
    /// Code or data (not system) segment.
    pub const CODE_OR_DATA: u16 = 1 << 4;
    /// 64-bit code segment (L).
    pub const LONG: u16 = 1 << 9;
    /// 32-bit default operand size (D/B).
    pub const DEFAULT_BIG: u16 = 1 << 10;
    /// Limit in 4 KiB units (G).
    pub const GRANULARITY: u16 = 1 << 11;
    /// Descriptor privilege level, bits 5..7.
    pub const DPL_SHIFT: u16 = 5;
    /// Real-mode style code segment: present, accessed, readable code.
    pub const REAL_MODE_CODE: u16 = 0x9B;
    /// Real-mode style data segment: present, accessed, writable data.
    pub const REAL_MODE_DATA: u16 = 0x93;
    /// LDT system segment, present.
    pub const LDT: u16 = 0x82;
    /// Busy 32/64-bit TSS, present.
    pub const BUSY_TSS: u16 = 0x8B;
}

/// A 128-bit vector register (XMM or the upper half of a YMM).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Xmm {
    /// Bits 0..64.
    pub low: u64,
    /// Bits 64..128.
    pub high: u64,
}

/// An x87 register in its 80-bit form (significand, then sign and
/// exponent), as FXSAVE stores it without padding.
pub type X87Register = [u8; 10];

/// `GUEST_EXIT_CODE` after a VMGEXIT (`rep vmmcall`), the exit an SVSM
/// expects before treating an entry as a call.
pub const EXIT_CODE_VMGEXIT: u64 = 0x403;

/// EFER.SVME: a VMSA whose EFER lacks it cannot be run (the SVSM uses this
/// as a lock while it services or deletes the vCPU).
pub const EFER_SVME: u64 = 1 << 12;

/// `VINTR_CTRL` bits.
pub mod vintr {
    /// Virtual TPR, bits 0..8.
    pub const TPR_MASK: u64 = 0xFF;
    /// A virtual interrupt is pending.
    pub const V_IRQ: u64 = 1 << 8;
    /// Virtual GIF.
    pub const V_GIF: u64 = 1 << 9;
    /// The vCPU is in an interrupt shadow (after STI or MOV SS).
    pub const INT_SHADOW: u64 = 1 << 10;
    /// Priority of the virtual interrupt, bits 16..20.
    pub const PRIORITY_MASK: u64 = 0xF << 16;
    /// Ignore the virtual TPR.
    pub const IGNORE_TPR: u64 = 1 << 20;
    /// Vector of the virtual interrupt, bits 32..40.
    pub const VECTOR_MASK: u64 = 0xFF << 32;
    /// The VMSA is running (set by the hardware while a vCPU uses it).
    pub const BUSY: u64 = 1 << 63;
}

/// The VMSA: exactly one page.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Vmsa {
    /// ES (0x000).
    pub es: Segment,
    /// CS (0x010).
    pub cs: Segment,
    /// SS (0x020).
    pub ss: Segment,
    /// DS (0x030).
    pub ds: Segment,
    /// FS (0x040).
    pub fs: Segment,
    /// GS (0x050).
    pub gs: Segment,
    /// GDTR: only limit and base are used (0x060).
    pub gdtr: Segment,
    /// LDTR (0x070).
    pub ldtr: Segment,
    /// IDTR: only limit and base are used (0x080).
    pub idtr: Segment,
    /// TR (0x090).
    pub tr: Segment,
    /// Shadow-stack pointers of CPL 0..3 (0x0A0).
    pub pl_ssp: [u64; 4],
    /// U_CET (0x0C0).
    pub u_cet: u64,
    /// Reserved (0x0C8).
    pub reserved_0c8: [u8; 2],
    /// The VMPL this VMSA runs at (0x0CA).
    pub vmpl: u8,
    /// CPL (0x0CB).
    pub cpl: u8,
    /// Reserved (0x0CC).
    pub reserved_0cc: u32,
    /// EFER (0x0D0); bit 12 (SVME) must be set to run.
    pub efer: u64,
    /// Reserved (0x0D8).
    pub reserved_0d8: [u8; 0x68],
    /// XSS (0x140).
    pub xss: u64,
    /// CR4 (0x148).
    pub cr4: u64,
    /// CR3 (0x150).
    pub cr3: u64,
    /// CR0 (0x158).
    pub cr0: u64,
    /// DR7 (0x160).
    pub dr7: u64,
    /// DR6 (0x168).
    pub dr6: u64,
    /// RFLAGS (0x170); bit 1 must be set.
    pub rflags: u64,
    /// RIP (0x178).
    pub rip: u64,
    /// DR0..DR3 (0x180).
    pub dr: [u64; 4],
    /// DR0..DR3 address masks (0x1A0).
    pub dr_addr_mask: [u64; 4],
    /// Reserved (0x1C0).
    pub reserved_1c0: [u64; 3],
    /// RSP (0x1D8).
    pub rsp: u64,
    /// S_CET (0x1E0).
    pub s_cet: u64,
    /// SSP (0x1E8).
    pub ssp: u64,
    /// Interrupt shadow-stack table address (0x1F0).
    pub isst_addr: u64,
    /// RAX (0x1F8).
    pub rax: u64,
    /// STAR (0x200).
    pub star: u64,
    /// LSTAR (0x208).
    pub lstar: u64,
    /// CSTAR (0x210).
    pub cstar: u64,
    /// SFMASK (0x218).
    pub sfmask: u64,
    /// KernelGsBase (0x220).
    pub kernel_gs_base: u64,
    /// SYSENTER_CS (0x228).
    pub sysenter_cs: u64,
    /// SYSENTER_ESP (0x230).
    pub sysenter_esp: u64,
    /// SYSENTER_EIP (0x238).
    pub sysenter_eip: u64,
    /// CR2 (0x240).
    pub cr2: u64,
    /// Reserved (0x248).
    pub reserved_248: [u64; 4],
    /// Guest PAT (0x268).
    pub g_pat: u64,
    /// DBGCTL (0x270).
    pub dbgctl: u64,
    /// Last branch from (0x278).
    pub br_from: u64,
    /// Last branch to (0x280).
    pub br_to: u64,
    /// Last exception from (0x288).
    pub last_excp_from: u64,
    /// Last exception to (0x290).
    pub last_excp_to: u64,
    /// Reserved (0x298).
    pub reserved_298: [u64; 9],
    /// SPEC_CTRL (0x2E0).
    pub spec_ctrl: u64,
    /// PKRU (0x2E8).
    pub pkru: u32,
    /// TSC_AUX (0x2EC).
    pub tsc_aux: u32,
    /// Secure-TSC scale (0x2F0).
    pub guest_tsc_scale: u64,
    /// Secure-TSC offset (0x2F8).
    pub guest_tsc_offset: u64,
    /// Register-protection nonce (0x300).
    pub reg_prot_nonce: u64,
    /// RCX (0x308).
    pub rcx: u64,
    /// RDX (0x310).
    pub rdx: u64,
    /// RBX (0x318).
    pub rbx: u64,
    /// Reserved (0x320).
    pub reserved_320: u64,
    /// RBP (0x328).
    pub rbp: u64,
    /// RSI (0x330).
    pub rsi: u64,
    /// RDI (0x338).
    pub rdi: u64,
    /// R8 (0x340).
    pub r8: u64,
    /// R9 (0x348).
    pub r9: u64,
    /// R10 (0x350).
    pub r10: u64,
    /// R11 (0x358).
    pub r11: u64,
    /// R12 (0x360).
    pub r12: u64,
    /// R13 (0x368).
    pub r13: u64,
    /// R14 (0x370).
    pub r14: u64,
    /// R15 (0x378).
    pub r15: u64,
    /// Reserved (0x380).
    pub reserved_380: [u64; 2],
    /// EXITINFO1 of the last automatic exit (0x390).
    pub guest_exit_info1: u64,
    /// EXITINFO2 of the last automatic exit (0x398).
    pub guest_exit_info2: u64,
    /// EXITINTINFO of the last automatic exit (0x3A0).
    pub guest_exit_int_info: u64,
    /// Next RIP of the last automatic exit (0x3A8).
    pub guest_nrip: u64,
    /// SEV features (0x3B0); see `sev_status`.
    pub sev_features: u64,
    /// Virtual interrupt control (0x3B8), see [`vintr`].
    pub vintr_ctrl: u64,
    /// Exit code of the last automatic exit (0x3C0).
    pub guest_exit_code: u64,
    /// Virtual top of memory (0x3C8).
    pub virtual_tom: u64,
    /// TLB ID (0x3D0).
    pub tlb_id: u64,
    /// Physical CPU ID (0x3D8).
    pub pcpu_id: u64,
    /// Event to inject at the next entry (0x3E0): vector [7:0], type
    /// [10:8], error code valid [11], valid [31], error code [63:32].
    pub event_inj: u64,
    /// XCR0 (0x3E8).
    pub xcr0: u64,
    /// Which x87/SSE state below is valid (0x3F0).
    pub x87_state_valid: [u8; 16],
    /// x87 last data pointer (0x400).
    pub x87_dp: u64,
    /// MXCSR (0x408).
    pub mxcsr: u32,
    /// x87 tag word, full form: two bits per register, 3 = empty (0x40C).
    pub x87_ftw: u16,
    /// x87 status word (0x40E).
    pub x87_fsw: u16,
    /// x87 control word (0x410).
    pub x87_fcw: u16,
    /// x87 last opcode (0x412).
    pub x87_fop: u16,
    /// x87 last data selector (0x414).
    pub x87_ds: u16,
    /// x87 last code selector (0x416).
    pub x87_cs: u16,
    /// x87 last instruction pointer (0x418).
    pub x87_rip: u64,
    /// ST0..ST7 (0x420).
    pub x87_registers: [X87Register; 8],
    /// XMM0..XMM15 (0x470).
    pub xmm: [Xmm; 16],
    /// Upper halves of YMM0..YMM15 (0x570).
    pub ymm_high: [Xmm; 16],
    /// Reserved to the end of the page (0x670).
    pub reserved_670: [u8; 0x990],
}

/// Size of a VMSA.
pub const VMSA_SIZE: usize = 4096;

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<Segment>() == 16);
    assert!(size_of::<Vmsa>() == VMSA_SIZE);
    assert!(offset_of!(Vmsa, es) == 0x000);
    assert!(offset_of!(Vmsa, cs) == 0x010);
    assert!(offset_of!(Vmsa, gdtr) == 0x060);
    assert!(offset_of!(Vmsa, tr) == 0x090);
    assert!(offset_of!(Vmsa, pl_ssp) == 0x0A0);
    assert!(offset_of!(Vmsa, u_cet) == 0x0C0);
    assert!(offset_of!(Vmsa, vmpl) == 0x0CA);
    assert!(offset_of!(Vmsa, cpl) == 0x0CB);
    assert!(offset_of!(Vmsa, efer) == 0x0D0);
    assert!(offset_of!(Vmsa, xss) == 0x140);
    assert!(offset_of!(Vmsa, cr4) == 0x148);
    assert!(offset_of!(Vmsa, cr3) == 0x150);
    assert!(offset_of!(Vmsa, cr0) == 0x158);
    assert!(offset_of!(Vmsa, dr7) == 0x160);
    assert!(offset_of!(Vmsa, rflags) == 0x170);
    assert!(offset_of!(Vmsa, rip) == 0x178);
    assert!(offset_of!(Vmsa, dr) == 0x180);
    assert!(offset_of!(Vmsa, rsp) == 0x1D8);
    assert!(offset_of!(Vmsa, s_cet) == 0x1E0);
    assert!(offset_of!(Vmsa, rax) == 0x1F8);
    assert!(offset_of!(Vmsa, star) == 0x200);
    assert!(offset_of!(Vmsa, sysenter_eip) == 0x238);
    assert!(offset_of!(Vmsa, cr2) == 0x240);
    assert!(offset_of!(Vmsa, g_pat) == 0x268);
    assert!(offset_of!(Vmsa, last_excp_to) == 0x290);
    assert!(offset_of!(Vmsa, spec_ctrl) == 0x2E0);
    assert!(offset_of!(Vmsa, pkru) == 0x2E8);
    assert!(offset_of!(Vmsa, tsc_aux) == 0x2EC);
    assert!(offset_of!(Vmsa, guest_tsc_scale) == 0x2F0);
    assert!(offset_of!(Vmsa, guest_tsc_offset) == 0x2F8);
    assert!(offset_of!(Vmsa, reg_prot_nonce) == 0x300);
    assert!(offset_of!(Vmsa, rcx) == 0x308);
    assert!(offset_of!(Vmsa, rbx) == 0x318);
    assert!(offset_of!(Vmsa, rbp) == 0x328);
    assert!(offset_of!(Vmsa, r8) == 0x340);
    assert!(offset_of!(Vmsa, r15) == 0x378);
    assert!(offset_of!(Vmsa, guest_exit_info1) == 0x390);
    assert!(offset_of!(Vmsa, guest_nrip) == 0x3A8);
    assert!(offset_of!(Vmsa, sev_features) == 0x3B0);
    assert!(offset_of!(Vmsa, vintr_ctrl) == 0x3B8);
    assert!(offset_of!(Vmsa, guest_exit_code) == 0x3C0);
    assert!(offset_of!(Vmsa, virtual_tom) == 0x3C8);
    assert!(offset_of!(Vmsa, event_inj) == 0x3E0);
    assert!(offset_of!(Vmsa, xcr0) == 0x3E8);
    assert!(offset_of!(Vmsa, x87_state_valid) == 0x3F0);
    assert!(offset_of!(Vmsa, x87_dp) == 0x400);
    assert!(offset_of!(Vmsa, mxcsr) == 0x408);
    assert!(offset_of!(Vmsa, x87_ftw) == 0x40C);
    assert!(offset_of!(Vmsa, x87_fsw) == 0x40E);
    assert!(offset_of!(Vmsa, x87_fcw) == 0x410);
    assert!(offset_of!(Vmsa, x87_rip) == 0x418);
    assert!(offset_of!(Vmsa, x87_registers) == 0x420);
    assert!(offset_of!(Vmsa, xmm) == 0x470);
    assert!(offset_of!(Vmsa, ymm_high) == 0x570);
};

/// Values of the x86 reset state (APM vol. 2 §14.1.3) that a VMSA for a
/// vCPU starting at the reset vector carries.
pub mod reset {
    /// CR0 after reset: CD | NW | ET.
    pub const CR0: u64 = 0x6000_0010;
    /// RFLAGS after reset (bit 1 is always set).
    pub const RFLAGS: u64 = 0x2;
    /// DR6 after reset.
    pub const DR6: u64 = 0xFFFF_0FF0;
    /// DR7 after reset.
    pub const DR7: u64 = 0x400;
    /// PAT after reset.
    pub const G_PAT: u64 = 0x0007_0406_0007_0406;
    /// XCR0 after reset (x87 only).
    pub const XCR0: u64 = 1;
    /// MXCSR after reset.
    pub const MXCSR: u32 = 0x1F80;
    /// x87 control word after reset.
    pub const X87_FCW: u16 = 0x40;
    /// x87 tag word after reset (full form, as Linux and COCONUT-SVSM
    /// write it for APs).
    pub const X87_FTW: u16 = 0x5555;
    /// The reset vector: CS selector.
    pub const CS_SELECTOR: u16 = 0xF000;
    /// The reset vector: CS base.
    pub const CS_BASE: u64 = 0xFFFF_0000;
    /// The reset vector: IP.
    pub const RIP: u64 = 0xFFF0;
}

impl Vmsa {
    /// A vCPU in the x86 reset state at the reset vector (CS:IP =
    /// F000:FFF0, base FFFF0000), real mode, at `vmpl`, with EFER.SVME set
    /// so it can run and `sev_features` as its SEV features.
    pub fn reset_state(vmpl: u8, sev_features: u64) -> Vmsa {
        let data = Segment::new(0, attrib::REAL_MODE_DATA, 0xFFFF, 0);
        let mut vmsa = Vmsa::new_zeroed_value();
        vmsa.es = data;
        vmsa.ss = data;
        vmsa.ds = data;
        vmsa.fs = data;
        vmsa.gs = data;
        vmsa.cs = Segment::new(reset::CS_SELECTOR, attrib::REAL_MODE_CODE, 0xFFFF, reset::CS_BASE);
        vmsa.gdtr = Segment::new(0, 0, 0xFFFF, 0);
        vmsa.idtr = Segment::new(0, 0, 0xFFFF, 0);
        vmsa.ldtr = Segment::new(0, attrib::LDT, 0xFFFF, 0);
        vmsa.tr = Segment::new(0, attrib::BUSY_TSS, 0xFFFF, 0);
        vmsa.vmpl = vmpl;
        vmsa.efer = EFER_SVME;
        vmsa.cr0 = reset::CR0;
        vmsa.rflags = reset::RFLAGS;
        vmsa.rip = reset::RIP;
        vmsa.dr6 = reset::DR6;
        vmsa.dr7 = reset::DR7;
        vmsa.g_pat = reset::G_PAT;
        vmsa.xcr0 = reset::XCR0;
        vmsa.mxcsr = reset::MXCSR;
        vmsa.x87_fcw = reset::X87_FCW;
        vmsa.x87_ftw = reset::X87_FTW;
        vmsa.sev_features = sev_features;
        vmsa
    }

    fn new_zeroed_value() -> Vmsa {
        zerocopy::FromZeros::new_zeroed()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use igvm::snp_defs::{SevSelector, SevVmsa};
    use zerocopy::FromZeros;

    /// Fills every field of both structures with the same distinct value
    /// per field, then compares the bytes: any offset or size difference
    /// between our layout and the `igvm` crate's shows up.
    #[test]
    fn layout_matches_the_igvm_crate() {
        let mut ours = Vmsa::new_zeroed();
        let mut theirs = SevVmsa::new_zeroed();
        let seg = |n: u64| Segment::new(n as u16, (n >> 16) as u16, (n >> 32) as u32, n);
        let their_seg = |n: u64| SevSelector {
            selector: n as u16,
            attrib: (n >> 16) as u16,
            limit: (n >> 32) as u32,
            base: n,
        };
        ours.es = seg(0x0101_0202_0303_0404);
        theirs.es = their_seg(0x0101_0202_0303_0404);
        ours.cs = seg(0x1111_2222_3333_4444);
        theirs.cs = their_seg(0x1111_2222_3333_4444);
        ours.gdtr = seg(0x5555_6666_7777_8888);
        theirs.gdtr = their_seg(0x5555_6666_7777_8888);
        ours.tr = seg(0x9999_AAAA_BBBB_CCCC);
        theirs.tr = their_seg(0x9999_AAAA_BBBB_CCCC);
        ours.vmpl = 2;
        theirs.vmpl = 2;
        ours.cpl = 3;
        theirs.cpl = 3;
        ours.efer = 0x1D00;
        theirs.efer = 0x1D00;
        ours.xss = 0x11;
        theirs.xss = 0x11;
        ours.cr4 = 0x22;
        theirs.cr4 = 0x22;
        ours.cr3 = 0x33;
        theirs.cr3 = 0x33;
        ours.cr0 = 0x44;
        theirs.cr0 = 0x44;
        ours.rflags = 0x202;
        theirs.rflags = 0x202;
        ours.rip = 0xFFF0;
        theirs.rip = 0xFFF0;
        ours.dr[3] = 0xD3;
        theirs.dr3 = 0xD3;
        ours.rsp = 0x55;
        theirs.rsp = 0x55;
        ours.rax = 0x66;
        theirs.rax = 0x66;
        ours.lstar = 0x77;
        theirs.lstar = 0x77;
        ours.cr2 = 0x88;
        theirs.cr2 = 0x88;
        ours.g_pat = reset::G_PAT;
        theirs.pat = reset::G_PAT;
        ours.spec_ctrl = 0x99;
        theirs.spec_ctrl = 0x99;
        ours.rcx = 0xC;
        theirs.rcx = 0xC;
        ours.rbp = 0xB;
        theirs.rbp = 0xB;
        ours.r15 = 0xF;
        theirs.r15 = 0xF;
        ours.guest_exit_info1 = 0xE1;
        theirs.exit_info1 = 0xE1;
        ours.guest_nrip = 0xAB;
        theirs.next_rip = 0xAB;
        ours.sev_features = 1;
        theirs.sev_features = igvm::snp_defs::SevFeatures::from_bits(1);
        ours.vintr_ctrl = vintr::BUSY;
        theirs.v_intr_cntrl = igvm::snp_defs::SevVirtualInterruptControl(vintr::BUSY);
        ours.guest_exit_code = EXIT_CODE_VMGEXIT;
        theirs.guest_error_code = EXIT_CODE_VMGEXIT;
        ours.virtual_tom = 0x1_0000_0000;
        theirs.virtual_tom = 0x1_0000_0000;
        ours.event_inj = 0x8000_0306;
        theirs.event_inject = igvm::snp_defs::SevEventInjectInfo(0x8000_0306);
        ours.xcr0 = 7;
        theirs.xcr0 = 7;
        ours.mxcsr = reset::MXCSR;
        theirs.mxcsr = reset::MXCSR;
        ours.x87_ftw = reset::X87_FTW;
        theirs.x87_ftw = reset::X87_FTW;
        ours.x87_fcw = reset::X87_FCW;
        theirs.x87_fcw = reset::X87_FCW;
        ours.x87_rip = 0x1234;
        theirs.x87_rip = 0x1234;
        ours.xmm[15] = Xmm { low: 1, high: 2 };
        theirs.xmm_registers[15] = igvm::snp_defs::SevXmmRegister { low: 1, high: 2 };
        ours.ymm_high[0] = Xmm { low: 3, high: 4 };
        theirs.ymm_registers[0] = igvm::snp_defs::SevXmmRegister { low: 3, high: 4 };
        assert_eq!(ours.as_bytes(), theirs.as_bytes());
    }

    #[test]
    fn x87_registers_start_and_end_where_the_spec_says() {
        let mut vmsa = Vmsa::new_zeroed();
        vmsa.x87_registers[0][0] = 0x11;
        vmsa.x87_registers[7][9] = 0xEE;
        vmsa.xmm[0].low = 0x22;
        let bytes = vmsa.as_bytes();
        assert_eq!(bytes[0x420], 0x11);
        assert_eq!(bytes[0x420 + 79], 0xEE, "ST7 ends at 0x470");
        assert_eq!(bytes[0x470], 0x22, "XMM0 follows");
    }

    #[test]
    fn reset_state_matches_the_values_seen_in_practice() {
        // snp-svsm.md §4.3: the real-mode start values.
        let vmsa = Vmsa::reset_state(2, 1);
        let bytes = vmsa.as_bytes();
        let u64_at = |off: usize| u64::from_le_bytes(bytes[off..off + 8].try_into().unwrap());
        assert_eq!(&bytes[0x10..0x14], &[0x00, 0xF0, 0x9B, 0x00], "CS selector and attributes");
        assert_eq!(u64_at(0x18), 0xFFFF_0000, "CS base");
        assert_eq!(bytes[0xCA], 2, "VMPL");
        assert_eq!(u64_at(0xD0), EFER_SVME);
        assert_eq!(u64_at(0x158), 0x6000_0010);
        assert_eq!(u64_at(0x170), 2);
        assert_eq!(u64_at(0x178), 0xFFF0);
        assert_eq!(u64_at(0x168), 0xFFFF_0FF0);
        assert_eq!(u64_at(0x160), 0x400);
        assert_eq!(u64_at(0x268), 0x0007_0406_0007_0406);
        assert_eq!(u64_at(0x3B0), 1);
        assert_eq!(u64_at(0x3E8), 1);
        assert_eq!(&bytes[0x408..0x40C], &0x1F80u32.to_le_bytes());
        assert_eq!(&bytes[0x40C..0x40E], &0x5555u16.to_le_bytes());
        assert_eq!(&bytes[0x410..0x412], &0x0040u16.to_le_bytes());
        assert_eq!(&bytes[0x70..0x74], &[0, 0, 0x82, 0], "LDTR attributes");
        assert_eq!(&bytes[0x90..0x94], &[0, 0, 0x8B, 0], "TR attributes");
    }
}
