//! The checks the SVSM makes with the hypervisor and the hardware before it
//! relies on them, in the order the platform runs them: the GHCB protocol
//! version and C-bit position the hypervisor reports (against the measured
//! CPUID page), its features, and whether the SVSM really runs at VMPL0.
//!
//! Each failure maps to the termination reason the SVSM reports, since at
//! this point it has no console yet.

use abi::ghcb::{GHCB_PROTOCOL_VERSION, HvFeatures, TerminationReason};
use abi::snp_instr::{
    RmpAdjustAttributes, RmpAdjustError, RmpAdjustInput, RmpPageSize, VmplPermissions,
};

use super::msr_protocol::{self, MsrProtocol, MsrProtocolError, SevInfo};

/// Why the hypervisor is not one the SVSM can work with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NegotiationError {
    /// An MSR-protocol request failed.
    Msr(MsrProtocolError),
    /// The hypervisor does not speak GHCB protocol version 2.
    ProtocolVersion(SevInfo),
    /// The hypervisor's C-bit position differs from the CPUID page's.
    CBitMismatch {
        /// What the hypervisor says.
        hypervisor: u8,
        /// What the measured CPUID page says.
        cpuid_page: u8,
    },
    /// The hypervisor does not report SEV-SNP support.
    NoSnp(HvFeatures),
}

impl NegotiationError {
    /// The termination reason to report.
    pub fn termination_reason(self) -> TerminationReason {
        match self {
            NegotiationError::ProtocolVersion(_) => TerminationReason::PROTOCOL_UNSUPPORTED,
            NegotiationError::NoSnp(_) => TerminationReason::SNP_UNSUPPORTED,
            NegotiationError::Msr(_) | NegotiationError::CBitMismatch { .. } => {
                TerminationReason::SVSM_HYPERVISOR_ERROR
            }
        }
    }
}

/// What the hypervisor offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Its SEV information.
    pub info: SevInfo,
    /// Its features.
    pub features: HvFeatures,
    /// The GHCB frame it would like, if any (the SVSM registers its own).
    pub preferred_ghcb_gfn: Option<u64>,
}

/// Asks the hypervisor for its protocol range, C-bit and features, and
/// checks them against what the SVSM needs and the measured `c_bit`.
pub fn negotiate(msr: &mut impl MsrProtocol, c_bit: u8) -> Result<Negotiated, NegotiationError> {
    let info = msr_protocol::sev_info(msr).map_err(NegotiationError::Msr)?;
    if !(info.min_version..=info.max_version).contains(&GHCB_PROTOCOL_VERSION) {
        return Err(NegotiationError::ProtocolVersion(info));
    }
    if info.c_bit != c_bit {
        return Err(NegotiationError::CBitMismatch { hypervisor: info.c_bit, cpuid_page: c_bit });
    }
    let features = msr_protocol::hv_features(msr).map_err(NegotiationError::Msr)?;
    if !features.has(HvFeatures::SNP) {
        return Err(NegotiationError::NoSnp(features));
    }
    let preferred_ghcb_gfn =
        msr_protocol::preferred_ghcb_gfn(msr).map_err(NegotiationError::Msr)?;
    Ok(Negotiated { info, features, preferred_ghcb_gfn })
}

/// Whether the code runs at VMPL0, probed as Linux does: RMPADJUST may only
/// target a less privileged VMPL, so setting VMPL1's permissions (to none,
/// which changes nothing) on one of the SVSM's own pages succeeds only at
/// VMPL0. `page_va` is a 4 KiB page, `large_va` the 2 MiB page containing
/// it, tried if the RMP holds a 2 MiB entry there.
pub fn runs_at_vmpl0(
    mut rmpadjust: impl FnMut(RmpAdjustInput) -> Result<(), RmpAdjustError>,
    page_va: u64,
    large_va: u64,
) -> bool {
    let attributes =
        RmpAdjustAttributes { target_vmpl: 1, permissions: VmplPermissions::NONE, vmsa: false };
    let probe = |va, size| RmpAdjustInput { va, size, attributes };
    match rmpadjust(probe(page_va, RmpPageSize::Size4K)) {
        Ok(()) => true,
        Err(RmpAdjustError::SizeMismatch) => {
            rmpadjust(probe(large_va, RmpPageSize::Size2M)).is_ok()
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;
    use crate::sev::fake::FakeHypervisor;

    #[test]
    fn negotiates_with_a_kvm_like_hypervisor() {
        let mut hv = FakeHypervisor::new();
        let negotiated = negotiate(&mut hv, 51).unwrap();
        assert_eq!(negotiated.info, SevInfo { max_version: 2, min_version: 1, c_bit: 51 });
        assert_eq!(negotiated.features, HvFeatures(0x3));
        assert_eq!(negotiated.preferred_ghcb_gfn, None);
        assert_eq!(hv.msr_log, [0x002, 0x080, 0x010]);
    }

    #[test]
    fn refuses_hypervisors_it_cannot_trust_or_use() {
        let mut hv = FakeHypervisor::new();
        assert_eq!(
            negotiate(&mut hv, 47),
            Err(NegotiationError::CBitMismatch { hypervisor: 51, cpuid_page: 47 })
        );
        // GHCB versions 3..=4 only.
        hv.msr_override = Some((4 << 48) | (3 << 32) | (51 << 24) | 1);
        let error = negotiate(&mut hv, 51).unwrap_err();
        assert!(matches!(error, NegotiationError::ProtocolVersion(_)));
        assert_eq!(error.termination_reason(), TerminationReason::PROTOCOL_UNSUPPORTED);
        hv.features = 0x2;
        let error = negotiate(&mut hv, 51).unwrap_err();
        assert_eq!(error, NegotiationError::NoSnp(HvFeatures(0x2)));
        assert_eq!(error.termination_reason(), TerminationReason::SNP_UNSUPPORTED);
        hv.msr_override = Some(0x005);
        let error = negotiate(&mut hv, 51).unwrap_err();
        assert!(matches!(error, NegotiationError::Msr(_)));
        assert_eq!(error.termination_reason(), TerminationReason::SVSM_HYPERVISOR_ERROR);
    }

    #[test]
    fn vmpl0_probe_uses_rmpadjust_on_vmpl1() {
        let mut calls = Vec::new();
        let at_vmpl0 = runs_at_vmpl0(
            |input| {
                calls.push(input.registers());
                Ok(())
            },
            0x5000,
            0,
        );
        assert!(at_vmpl0);
        // Linux's probe: RMPADJUST(va, 4K, attrs = 1): VMPL1, no permissions.
        assert_eq!(calls, [[0x5000, 0, 1]]);

        assert!(!runs_at_vmpl0(|_| Err(RmpAdjustError::Permission), 0x5000, 0));
        assert!(!runs_at_vmpl0(|_| Err(RmpAdjustError::Input), 0x5000, 0));

        let mut calls = Vec::new();
        let at_vmpl0 = runs_at_vmpl0(
            |input| {
                calls.push(input.registers());
                if input.size == RmpPageSize::Size4K {
                    Err(RmpAdjustError::SizeMismatch)
                } else {
                    Ok(())
                }
            },
            0x20_5000,
            0x20_0000,
        );
        assert!(at_vmpl0);
        assert_eq!(calls, [[0x20_5000, 0, 1], [0x20_0000, 1, 1]]);
    }
}
