//! SEV_STATUS (MSR 0xC001_0131) and SEV_FEATURES (VMSA offset 0x3B0).
//!
//! SEV_STATUS tells a guest what encryption it runs with: bit 0 SEV, bit 1
//! SEV-ES, bit 2 SNP, and from bit 3 up the SEV_FEATURES its VMSA was
//! created with, shifted left by two (SEV_STATUS bit n + 2 = SEV_FEATURES
//! bit n). The SVSM checks its own status at boot; a guest VMSA carries the
//! features in SEV_FEATURES.
//!
//! Sources: Linux `arch/x86/include/asm/msr-index.h` (`MSR_AMD64_SEV_*`,
//! `MSR_AMD64_SNP_*_BIT`, reserved bits 13, 15, 19-22 and 24 up), project
//! reference `snp-svsm.md` §4.4.

/// The SEV_STATUS MSR.
pub const MSR_SEV_STATUS: u32 = 0xC001_0131;

/// One SEV_STATUS bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SevStatusBit {
    /// Bit 0: SEV (memory encryption) is active.
    Sev = 0,
    /// Bit 1: SEV-ES (register state encryption) is active.
    SevEs = 1,
    /// Bit 2: SEV-SNP is active (SEV_FEATURES bit 0, "SNPActive").
    Snp = 2,
    /// Bit 3: virtual top of memory: GPAs at or above VMSA.VIRTUAL_TOM are
    /// shared and the C-bit is ignored.
    Vtom = 3,
    /// Bit 4: #VC conditions are reflected to a more privileged VMPL.
    ReflectVc = 4,
    /// Bit 5: the hypervisor may inject only #HV.
    RestrictedInjection = 5,
    /// Bit 6: interrupts are injected by a more privileged VMPL.
    AlternateInjection = 6,
    /// Bit 7: the hardware swaps the debug registers (DebugSwap).
    DebugSwap = 7,
    /// Bit 8: host IBS cannot sample the guest.
    PreventHostIbs = 8,
    /// Bit 9: branch target buffer isolation.
    BtbIsolation = 9,
    /// Bit 10: VMPL supervisor shadow stacks.
    VmplSss = 10,
    /// Bit 11: Secure TSC.
    SecureTsc = 11,
    /// Bit 12: VMGEXIT parameter.
    VmgexitParameter = 12,
    /// Bit 14: IBS virtualization.
    IbsVirtualization = 14,
    /// Bit 16: VMSA register protection.
    VmsaRegProt = 16,
    /// Bit 17: SMT protection.
    SmtProtection = 17,
    /// Bit 18: Secure AVIC.
    SecureAvic = 18,
    /// Bit 23: IBPB on entry.
    IbpbOnEntry = 23,
}

impl SevStatusBit {
    /// Every defined bit, lowest first.
    pub const ALL: [SevStatusBit; 18] = [
        SevStatusBit::Sev,
        SevStatusBit::SevEs,
        SevStatusBit::Snp,
        SevStatusBit::Vtom,
        SevStatusBit::ReflectVc,
        SevStatusBit::RestrictedInjection,
        SevStatusBit::AlternateInjection,
        SevStatusBit::DebugSwap,
        SevStatusBit::PreventHostIbs,
        SevStatusBit::BtbIsolation,
        SevStatusBit::VmplSss,
        SevStatusBit::SecureTsc,
        SevStatusBit::VmgexitParameter,
        SevStatusBit::IbsVirtualization,
        SevStatusBit::VmsaRegProt,
        SevStatusBit::SmtProtection,
        SevStatusBit::SecureAvic,
        SevStatusBit::IbpbOnEntry,
    ];

    /// The bit's mask in SEV_STATUS.
    pub const fn mask(self) -> u64 {
        1 << self as u32
    }

    /// The name Linux prints for it (`sev_status_feat_names`).
    pub const fn name(self) -> &'static str {
        match self {
            SevStatusBit::Sev => "SEV",
            SevStatusBit::SevEs => "SEV-ES",
            SevStatusBit::Snp => "SEV-SNP",
            SevStatusBit::Vtom => "vTom",
            SevStatusBit::ReflectVc => "ReflectVC",
            SevStatusBit::RestrictedInjection => "RI",
            SevStatusBit::AlternateInjection => "AI",
            SevStatusBit::DebugSwap => "DebugSwap",
            SevStatusBit::PreventHostIbs => "NoHostIBS",
            SevStatusBit::BtbIsolation => "BTBIsol",
            SevStatusBit::VmplSss => "VmplSSS",
            SevStatusBit::SecureTsc => "SecureTSC",
            SevStatusBit::VmgexitParameter => "VMGExitParam",
            SevStatusBit::IbsVirtualization => "IBSVirt",
            SevStatusBit::VmsaRegProt => "VMSARegProt",
            SevStatusBit::SmtProtection => "SMTProt",
            SevStatusBit::SecureAvic => "SecureAVIC",
            SevStatusBit::IbpbOnEntry => "IBPBOnEntry",
        }
    }
}

/// Every bit of SEV_STATUS this code knows; the rest are reserved.
pub const DEFINED_STATUS_BITS: u64 = {
    let mut mask = 0;
    let mut i = 0;
    while i < SevStatusBit::ALL.len() {
        mask |= SevStatusBit::ALL[i].mask();
        i += 1;
    }
    mask
};

/// A SEV_STATUS value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SevStatus(pub u64);

impl SevStatus {
    /// Whether the bit is set.
    pub const fn has(self, bit: SevStatusBit) -> bool {
        self.0 & bit.mask() != 0
    }

    /// Set bits this code does not know (reserved today).
    pub const fn unknown_bits(self) -> u64 {
        self.0 & !DEFINED_STATUS_BITS
    }

    /// The SEV_FEATURES value of the VMSA this status belongs to (SNP
    /// only: bits 0 and 1 of SEV_STATUS have no SEV_FEATURES counterpart).
    pub const fn features(self) -> SevFeatures {
        SevFeatures(self.0 >> 2)
    }

    /// The defined bits that are set, lowest first.
    pub fn bits(self) -> impl Iterator<Item = SevStatusBit> {
        SevStatusBit::ALL.into_iter().filter(move |bit| self.has(*bit))
    }
}

/// A VMSA's SEV_FEATURES field (offset 0x3B0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SevFeatures(pub u64);

impl SevFeatures {
    /// SEV_FEATURES bit 0: SNP active (required in every SNP VMSA).
    pub const SNP_ACTIVE: u64 = 1 << 0;

    /// The features as SEV_STATUS would report them inside a guest running
    /// on this VMSA (SEV, SEV-ES and the shifted features).
    pub const fn status(self) -> SevStatus {
        SevStatus((self.0 << 2) | SevStatusBit::Sev.mask() | SevStatusBit::SevEs.mask())
    }

    /// Whether a status bit is set (SEV and SEV-ES are implied).
    pub const fn has(self, bit: SevStatusBit) -> bool {
        self.status().has(bit)
    }

    /// These features with `bit` set (`bit` must be Snp or above).
    pub const fn with(self, bit: SevStatusBit) -> SevFeatures {
        SevFeatures(self.0 | (bit.mask() >> 2))
    }

    /// These features without `bit`.
    pub const fn without(self, bit: SevStatusBit) -> SevFeatures {
        SevFeatures(self.0 & !(bit.mask() >> 2))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    #[test]
    fn bit_positions_match_linux_msr_index() {
        // MSR_AMD64_SEV_ENABLED_BIT 0, _ES_ 1, _SNP_ 2; MSR_AMD64_SNP_VTOM_BIT 3,
        // REFLECT_VC 4, RESTRICTED_INJ 5, ALT_INJ 6, DEBUG_SWAP 7,
        // PREVENT_HOST_IBS 8, BTB_ISOLATION 9, VMPL_SSS 10, SECURE_TSC 11,
        // VMGEXIT_PARAM 12, IBS_VIRT 14, VMSA_REG_PROT 16, SMT_PROT 17,
        // SECURE_AVIC 18, IBPB_ON_ENTRY 23; reserved 13, 15, 19-22, 24-63.
        let expected: [(SevStatusBit, u32); 18] = [
            (SevStatusBit::Sev, 0),
            (SevStatusBit::SevEs, 1),
            (SevStatusBit::Snp, 2),
            (SevStatusBit::Vtom, 3),
            (SevStatusBit::ReflectVc, 4),
            (SevStatusBit::RestrictedInjection, 5),
            (SevStatusBit::AlternateInjection, 6),
            (SevStatusBit::DebugSwap, 7),
            (SevStatusBit::PreventHostIbs, 8),
            (SevStatusBit::BtbIsolation, 9),
            (SevStatusBit::VmplSss, 10),
            (SevStatusBit::SecureTsc, 11),
            (SevStatusBit::VmgexitParameter, 12),
            (SevStatusBit::IbsVirtualization, 14),
            (SevStatusBit::VmsaRegProt, 16),
            (SevStatusBit::SmtProtection, 17),
            (SevStatusBit::SecureAvic, 18),
            (SevStatusBit::IbpbOnEntry, 23),
        ];
        for (bit, position) in expected {
            assert_eq!(bit.mask(), 1 << position, "{bit:?}");
        }
        let reserved = (1u64 << 13) | (1 << 15) | (0xF << 19) | !((1u64 << 24) - 1);
        assert_eq!(DEFINED_STATUS_BITS, !reserved);
    }

    #[test]
    fn decodes_a_coconut_style_vmpl0_status() {
        // SEV | SEV-ES | SNP | RestrictedInjection | DebugSwap = 0xA7: the
        // status COCONUT-SVSM requires for its own VMPL0 VMSA.
        let status = SevStatus(0xA7);
        let names: Vec<&str> = status.bits().map(SevStatusBit::name).collect();
        assert_eq!(names, ["SEV", "SEV-ES", "SEV-SNP", "RI", "DebugSwap"]);
        assert_eq!(status.unknown_bits(), 0);
        // SEV_FEATURES = SEV_STATUS >> 2 (Linux derives AP VMSAs this way):
        // SNPActive (0) | RestrictedInjection (3) | DebugSwap (5) = 0x29.
        assert_eq!(status.features(), SevFeatures(0x29));
        assert_eq!(status.features().status(), status);
    }

    #[test]
    fn features_and_status_convert_both_ways() {
        let features = SevFeatures(SevFeatures::SNP_ACTIVE)
            .with(SevStatusBit::DebugSwap)
            .with(SevStatusBit::Vtom);
        assert_eq!(features, SevFeatures(0b10_0011));
        assert!(features.has(SevStatusBit::Snp));
        assert!(features.has(SevStatusBit::Sev), "SEV is implied by an SNP VMSA");
        assert!(!features.without(SevStatusBit::Vtom).has(SevStatusBit::Vtom));
        assert_eq!(SevStatus(1 << 13).unknown_bits(), 1 << 13);
    }
}
