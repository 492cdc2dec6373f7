//! The SVSM's checks of its own SEV_STATUS, and the SEV_FEATURES it gives
//! the guest's VMSA.
//!
//! SEV_STATUS says what the SVSM's own VMSA was launched with. The SVSM
//! needs SEV, SEV-ES and SNP; it runs with features that only add
//! protection; it refuses features that change how it must work (the C-bit
//! meaning, where #VC and interrupts go, VMGEXIT's convention, register
//! protection, shadow stacks, the secure AVIC), and bits it does not know.
//! Restricted injection is wanted (without it the host can inject events
//! into VMPL0) but upstream KVM does not offer it, so its absence is a
//! warning, not a refusal.

use abi::sev_status::{SevFeatures, SevStatus, SevStatusBit};

/// Bits the SVSM cannot run without.
pub const REQUIRED: [SevStatusBit; 3] = [SevStatusBit::Sev, SevStatusBit::SevEs, SevStatusBit::Snp];

/// Bits the SVSM runs with: they only restrict the host.
pub const ACCEPTED: [SevStatusBit; 8] = [
    SevStatusBit::RestrictedInjection,
    SevStatusBit::DebugSwap,
    SevStatusBit::PreventHostIbs,
    SevStatusBit::BtbIsolation,
    SevStatusBit::SecureTsc,
    SevStatusBit::IbsVirtualization,
    SevStatusBit::SmtProtection,
    SevStatusBit::IbpbOnEntry,
];

/// Protective features the guest's VMSA inherits from the SVSM's.
const INHERITED_BY_GUEST: [SevStatusBit; 4] = [
    SevStatusBit::PreventHostIbs,
    SevStatusBit::BtbIsolation,
    SevStatusBit::SmtProtection,
    SevStatusBit::IbpbOnEntry,
];

/// Why the SVSM refuses to run with this status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusError {
    /// A required bit is clear.
    Missing(SevStatusBit),
    /// A feature the SVSM does not support is on.
    Unsupported(SevStatusBit),
    /// Bits this code does not know are set.
    UnknownBits(u64),
}

impl StatusError {
    /// Why, and what to change on the host.
    pub fn explanation(self) -> &'static str {
        match self {
            StatusError::Missing(_) => "the VM is not an SEV-SNP guest; launch it with SEV-SNP",
            StatusError::Unsupported(SevStatusBit::Vtom) => {
                "vTOM makes the C-bit meaningless; the SVSM marks shared pages with the C-bit"
            }
            StatusError::Unsupported(SevStatusBit::ReflectVc) => {
                "ReflectVC would send the SVSM's #VC elsewhere; remove it from vmsa_features"
            }
            StatusError::Unsupported(SevStatusBit::AlternateInjection) => {
                "alternate injection needs a more privileged VMPL than VMPL0"
            }
            StatusError::Unsupported(_) => {
                "a VMSA feature the SVSM does not handle; remove it from the launch's vmsa_features"
            }
            StatusError::UnknownBits(_) => "SEV_STATUS bits this SVSM does not know",
        }
    }
}

/// A status the SVSM accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptedStatus {
    /// The status.
    pub status: SevStatus,
    /// Whether the host can inject events into VMPL0 (no restricted
    /// injection): logged as a warning.
    pub host_may_inject: bool,
}

/// Checks the SVSM's SEV_STATUS.
pub fn check(status: SevStatus) -> Result<AcceptedStatus, StatusError> {
    if let Some(missing) = REQUIRED.iter().find(|bit| !status.has(**bit)) {
        return Err(StatusError::Missing(*missing));
    }
    if status.unknown_bits() != 0 {
        return Err(StatusError::UnknownBits(status.unknown_bits()));
    }
    if let Some(refused) =
        status.bits().find(|bit| !REQUIRED.contains(bit) && !ACCEPTED.contains(bit))
    {
        return Err(StatusError::Unsupported(refused));
    }
    Ok(AcceptedStatus { status, host_may_inject: !status.has(SevStatusBit::RestrictedInjection) })
}

/// SEV_FEATURES for the guest's VMSA: SNP active, plus the protective
/// features the SVSM itself runs with. Not inherited: restricted injection
/// (the guest takes interrupts from the host), DebugSwap (the guest may
/// rely on DR7 emulation), Secure TSC (it needs TSC values in the VMSA that
/// the guest's firmware has not asked for).
pub fn guest_features(svsm: SevStatus) -> SevFeatures {
    INHERITED_BY_GUEST
        .iter()
        .filter(|bit| svsm.has(**bit))
        .fold(SevFeatures(SevFeatures::SNP_ACTIVE), |features, bit| features.with(*bit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_kvm_and_coconut_launch() {
        // Upstream KVM with debug_swap: SEV | SEV-ES | SNP | DebugSwap.
        let kvm = check(SevStatus(0x87)).unwrap();
        assert!(kvm.host_may_inject);
        // COCONUT's required set adds restricted injection.
        let coconut = check(SevStatus(0xA7)).unwrap();
        assert!(!coconut.host_may_inject);
        // Every accepted feature at once.
        let all = ACCEPTED.iter().fold(0x7, |mask, bit| mask | bit.mask());
        assert!(check(SevStatus(all)).is_ok());
    }

    #[test]
    fn refuses_what_it_cannot_run_with() {
        assert_eq!(check(SevStatus(0x3)), Err(StatusError::Missing(SevStatusBit::Snp)));
        assert_eq!(check(SevStatus(0x6)), Err(StatusError::Missing(SevStatusBit::Sev)));
        for bit in [
            SevStatusBit::Vtom,
            SevStatusBit::ReflectVc,
            SevStatusBit::AlternateInjection,
            SevStatusBit::VmplSss,
            SevStatusBit::VmgexitParameter,
            SevStatusBit::VmsaRegProt,
            SevStatusBit::SecureAvic,
        ] {
            assert_eq!(
                check(SevStatus(0x7 | bit.mask())),
                Err(StatusError::Unsupported(bit)),
                "{bit:?}"
            );
            assert!(!StatusError::Unsupported(bit).explanation().is_empty());
        }
        assert_eq!(check(SevStatus(0x7 | 1 << 13)), Err(StatusError::UnknownBits(1 << 13)));
        assert_eq!(check(SevStatus(0x7 | 1 << 40)), Err(StatusError::UnknownBits(1 << 40)));
    }

    #[test]
    fn guest_inherits_only_protective_features() {
        let svsm = SevStatus(
            0x7 | SevStatusBit::RestrictedInjection.mask()
                | SevStatusBit::DebugSwap.mask()
                | SevStatusBit::BtbIsolation.mask()
                | SevStatusBit::SecureTsc.mask(),
        );
        let guest = guest_features(svsm);
        // SNPActive (0) | BTBIsolation (9 - 2 = 7).
        assert_eq!(guest, SevFeatures(0x81));
        assert_eq!(guest_features(SevStatus(0x7)), SevFeatures(1));
    }
}
