//! The IGVM file's SNP VMSA, applied to vCPU 0 the way QEMU does: KVM
//! rebuilds (and measures) the VMSA from vCPU state at LAUNCH_FINISH, so the
//! launcher sets the registers KVM syncs (segments including TR/LDTR,
//! GDTR/IDTR, CR0/3/4, EFER, GPRs, RIP, RFLAGS, XCR0, DR6/DR7, PAT, x87 FCW,
//! MXCSR) and refuses a VMSA with anything else set, because that would not
//! survive the rebuild and the launch digest would differ from the file's.

use igvm::snp_defs::{SevSelector, SevVmsa};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use zerocopy::{FromZeros, IntoBytes};

use crate::native::segment as descriptor_segment;

/// `SEV_FEATURES` bit 0: SNP active (KVM sets it itself).
pub const SEV_FEATURE_SNP: u64 = 1;
/// The guest PAT MSR.
pub const MSR_IA32_PAT: u32 = 0x277;

/// Names of the SEV_FEATURES bits, for messages.
pub fn sev_feature_names(bits: u64) -> String {
    const NAMES: [(u32, &str); 12] = [
        (0, "SNPActive"),
        (1, "vTOM"),
        (2, "ReflectVC"),
        (3, "RestrictedInjection"),
        (4, "AlternateInjection"),
        (5, "DebugSwap"),
        (6, "PreventHostIBS"),
        (7, "BTBIsolation"),
        (8, "VmplSSS"),
        (9, "SecureTSC"),
        (14, "VmsaRegProt"),
        (15, "SmtProtection"),
    ];
    let mut names: Vec<String> = Vec::new();
    for bit in 0..64 {
        if bits & (1 << bit) != 0 {
            match NAMES.iter().find(|(b, _)| *b == bit) {
                Some((_, name)) => names.push((*name).into()),
                None => names.push(format!("bit{bit}")),
            }
        }
    }
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

/// The vCPU state that reproduces a VMSA.
#[derive(Clone, Debug, PartialEq)]
pub struct VcpuState {
    /// General registers, RIP, RFLAGS.
    pub regs: kvm_regs,
    /// Segments, descriptor tables, control registers, EFER.
    pub sregs: kvm_sregs,
    /// x87 control word.
    pub fcw: u16,
    /// MXCSR.
    pub mxcsr: u32,
    /// XCR0.
    pub xcr0: u64,
    /// DR6.
    pub dr6: u64,
    /// DR7.
    pub dr7: u64,
    /// IA32_PAT.
    pub pat: u64,
}

/// A KVM segment from a VMSA selector, whose attribute is the packed 12-bit
/// form (descriptor bits 12-15 moved down to bits 8-11).
pub fn vmsa_segment(s: &SevSelector) -> kvm_segment {
    let attributes = (s.attrib & 0xff) | ((s.attrib & 0xf00) << 4);
    descriptor_segment(s.selector, s.base, s.limit, attributes)
}

/// Checks that the VMSA sets only fields KVM syncs from vCPU state, that it
/// runs at VMPL0/CPL0, and that SNPActive is set.
pub fn check_vmsa(vmsa: &SevVmsa) -> Result<(), String> {
    if vmsa.sev_features.into_bits() & SEV_FEATURE_SNP == 0 {
        return Err("the SNP VMSA does not set SEV_FEATURES.SNPActive (bit 0)".into());
    }
    if vmsa.vmpl != 0 {
        return Err(format!(
            "the SNP VMSA is for VMPL{}, but KVM creates the boot VMSA at VMPL0",
            vmsa.vmpl
        ));
    }
    let mut rest = SevVmsa::new_box_zeroed().expect("allocating 4 KiB");
    rest.as_mut_bytes().copy_from_slice(vmsa.as_bytes());
    let zero_selector = SevSelector { selector: 0, attrib: 0, limit: 0, base: 0 };
    for s in [
        &mut rest.es,
        &mut rest.cs,
        &mut rest.ss,
        &mut rest.ds,
        &mut rest.fs,
        &mut rest.gs,
        &mut rest.gdtr,
        &mut rest.ldtr,
        &mut rest.idtr,
        &mut rest.tr,
    ] {
        *s = zero_selector;
    }
    for r in [
        &mut rest.efer,
        &mut rest.cr4,
        &mut rest.cr3,
        &mut rest.cr0,
        &mut rest.dr7,
        &mut rest.dr6,
        &mut rest.rflags,
        &mut rest.rip,
        &mut rest.rsp,
        &mut rest.rax,
        &mut rest.pat,
        &mut rest.rcx,
        &mut rest.rdx,
        &mut rest.rbx,
        &mut rest.rbp,
        &mut rest.rsi,
        &mut rest.rdi,
        &mut rest.r8,
        &mut rest.r9,
        &mut rest.r10,
        &mut rest.r11,
        &mut rest.r12,
        &mut rest.r13,
        &mut rest.r14,
        &mut rest.r15,
        &mut rest.xcr0,
    ] {
        *r = 0;
    }
    rest.sev_features = Default::default();
    rest.mxcsr = 0;
    rest.x87_fcw = 0;
    match rest.as_bytes().iter().position(|b| *b != 0) {
        None => Ok(()),
        Some(offset) => Err(format!(
            "the SNP VMSA sets byte {offset:#x}, a field KVM does not build from vCPU state; \
             the measured VMSA would differ from the file's (QEMU rejects such files too)"
        )),
    }
}

/// The vCPU state for `vmsa`, starting from KVM's reset `sregs`.
pub fn vcpu_state(vmsa: &SevVmsa, mut sregs: kvm_sregs) -> VcpuState {
    sregs.cs = vmsa_segment(&vmsa.cs);
    sregs.ds = vmsa_segment(&vmsa.ds);
    sregs.es = vmsa_segment(&vmsa.es);
    sregs.fs = vmsa_segment(&vmsa.fs);
    sregs.gs = vmsa_segment(&vmsa.gs);
    sregs.ss = vmsa_segment(&vmsa.ss);
    sregs.tr = vmsa_segment(&vmsa.tr);
    sregs.ldt = vmsa_segment(&vmsa.ldtr);
    sregs.gdt.base = vmsa.gdtr.base;
    sregs.gdt.limit = vmsa.gdtr.limit as u16;
    sregs.idt.base = vmsa.idtr.base;
    sregs.idt.limit = vmsa.idtr.limit as u16;
    sregs.cr0 = vmsa.cr0;
    sregs.cr3 = vmsa.cr3;
    sregs.cr4 = vmsa.cr4;
    sregs.efer = vmsa.efer;
    let regs = kvm_regs {
        rax: vmsa.rax,
        rbx: vmsa.rbx,
        rcx: vmsa.rcx,
        rdx: vmsa.rdx,
        rsi: vmsa.rsi,
        rdi: vmsa.rdi,
        rsp: vmsa.rsp,
        rbp: vmsa.rbp,
        r8: vmsa.r8,
        r9: vmsa.r9,
        r10: vmsa.r10,
        r11: vmsa.r11,
        r12: vmsa.r12,
        r13: vmsa.r13,
        r14: vmsa.r14,
        r15: vmsa.r15,
        rip: vmsa.rip,
        rflags: vmsa.rflags,
    };
    VcpuState {
        regs,
        sregs,
        fcw: vmsa.x87_fcw,
        mxcsr: vmsa.mxcsr,
        xcr0: vmsa.xcr0,
        dr6: vmsa.dr6,
        dr7: vmsa.dr7,
        pat: vmsa.pat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;

    #[test]
    fn the_project_vmsa_becomes_32_bit_protected_mode_state() {
        let vmsa = sample::snp_vmsa(0x10_0000, 0x10_2000);
        check_vmsa(&vmsa).unwrap();
        let s = vcpu_state(&vmsa, kvm_sregs::default());
        assert_eq!(s.sregs.cs.selector, 8);
        assert_eq!((s.sregs.cs.type_, s.sregs.cs.s, s.sregs.cs.present), (0xb, 1, 1));
        assert_eq!((s.sregs.cs.db, s.sregs.cs.l, s.sregs.cs.g), (1, 0, 1));
        assert_eq!(s.sregs.ds.type_, 3);
        assert_eq!(s.sregs.tr.unusable, 1, "TR 0 stays as in the VMSA");
        assert_eq!((s.sregs.cr0, s.sregs.cr4, s.sregs.efer), (0x31, 0x40, 0x1000));
        assert_eq!((s.regs.rip, s.regs.rsp, s.regs.rflags), (0x10_0000, 0x10_2000, 2));
        assert_eq!((s.xcr0, s.pat), (1, 0x0007_0406_0007_0406));
    }

    #[test]
    fn the_64_bit_code_attribute_decodes_to_long_mode() {
        let seg =
            vmsa_segment(&SevSelector { selector: 8, attrib: 0xa9b, limit: 0xffff_ffff, base: 0 });
        assert_eq!((seg.l, seg.db, seg.g, seg.present, seg.type_), (1, 0, 1, 1, 0xb));
    }

    #[test]
    fn fields_kvm_does_not_sync_are_refused() {
        let mut vmsa = sample::snp_vmsa(0, 0);
        vmsa.cr2 = 0x1234;
        assert!(check_vmsa(&vmsa).unwrap_err().contains("does not build"));
        let mut vmsa = sample::snp_vmsa(0, 0);
        vmsa.sev_features = Default::default();
        assert!(check_vmsa(&vmsa).unwrap_err().contains("SNPActive"));
        let mut vmsa = sample::snp_vmsa(0, 0);
        vmsa.vmpl = 2;
        assert!(check_vmsa(&vmsa).unwrap_err().contains("VMPL2"));
    }

    #[test]
    fn feature_names() {
        assert_eq!(sev_feature_names(0x29), "SNPActive, RestrictedInjection, DebugSwap");
        assert_eq!(sev_feature_names(0), "none");
        assert_eq!(sev_feature_names(1 << 40), "bit40");
    }
}
