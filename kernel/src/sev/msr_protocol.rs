//! The GHCB MSR protocol from the guest's side: one request in the GHCB
//! MSR, VMGEXIT, one answer in the MSR. It needs no shared memory, so it is
//! what the SVSM uses before its GHCB page exists (SEV information,
//! hypervisor features, making the GHCB page shared, registering it), to
//! terminate, and to switch VMPL (Run-VMPL).
//!
//! Every answer comes from the untrusted hypervisor and is checked: the
//! response code must answer the request, and the data must say success.

use abi::ghcb::{HvFeatures, MsrRequest, MsrResponse, PageOperation, TerminationReason};

/// The hardware operation behind the MSR protocol.
pub trait MsrProtocol {
    /// Writes `request` to the GHCB MSR, executes VMGEXIT and returns the
    /// value the hypervisor left in the MSR.
    fn exchange(&mut self, request: u64) -> u64;
}

/// Why an MSR-protocol request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrProtocolError {
    /// The MSR does not hold an answer to the request sent.
    WrongResponse {
        /// The request sent.
        request: u64,
        /// What came back.
        response: u64,
    },
    /// The hypervisor answered with a non-zero error code.
    Refused {
        /// The request sent.
        request: u64,
        /// The error code (GHCBData[63:32]).
        error: u32,
    },
    /// The hypervisor registered another GHCB GFN than the one asked for.
    RegistrationMismatch {
        /// The GFN asked for.
        requested: u64,
        /// The GFN in the answer.
        answered: u64,
    },
}

/// SEV information (MSR request 0x002).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SevInfo {
    /// Highest GHCB protocol version the hypervisor supports.
    pub max_version: u16,
    /// Lowest GHCB protocol version the hypervisor supports.
    pub min_version: u16,
    /// C-bit position the hypervisor reports.
    pub c_bit: u8,
}

/// Sends `request` and returns the answer if its code answers the request.
fn request(
    msr: &mut impl MsrProtocol,
    request: MsrRequest,
) -> Result<MsrResponse, MsrProtocolError> {
    let value = request.encode();
    let answer = msr.exchange(value);
    match MsrResponse::decode(answer) {
        Ok(response) if Some(response.code()) == request.response_code() => Ok(response),
        _ => Err(MsrProtocolError::WrongResponse { request: value, response: answer }),
    }
}

/// Asks for the hypervisor's GHCB protocol range and C-bit position.
pub fn sev_info(msr: &mut impl MsrProtocol) -> Result<SevInfo, MsrProtocolError> {
    match request(msr, MsrRequest::SevInfo)? {
        MsrResponse::SevInfo { max_version, min_version, c_bit } => {
            Ok(SevInfo { max_version, min_version, c_bit })
        }
        _ => unreachable!("request() checked the response code"),
    }
}

/// Asks for the hypervisor's feature bitmap.
pub fn hv_features(msr: &mut impl MsrProtocol) -> Result<HvFeatures, MsrProtocolError> {
    match request(msr, MsrRequest::HvFeatures)? {
        MsrResponse::HvFeatures(features) => Ok(features),
        _ => unreachable!("request() checked the response code"),
    }
}

/// Asks which GHCB GFN the hypervisor prefers (`None`: no preference).
pub fn preferred_ghcb_gfn(msr: &mut impl MsrProtocol) -> Result<Option<u64>, MsrProtocolError> {
    match request(msr, MsrRequest::PreferredGhcbGpa)? {
        MsrResponse::PreferredGhcbGpa { gfn } => Ok(gfn),
        _ => unreachable!("request() checked the response code"),
    }
}

/// Registers the GHCB page at `gpa` (4 KiB aligned).
pub fn register_ghcb(msr: &mut impl MsrProtocol, gpa: u64) -> Result<(), MsrProtocolError> {
    let requested = gpa >> 12;
    match request(msr, MsrRequest::RegisterGhcbGpa { gfn: requested })? {
        MsrResponse::RegisterGhcbGpa { gfn } if gfn == requested => Ok(()),
        MsrResponse::RegisterGhcbGpa { gfn } => {
            Err(MsrProtocolError::RegistrationMismatch { requested, answered: gfn })
        }
        _ => unreachable!("request() checked the response code"),
    }
}

/// Changes the state of the 4 KiB page at `gpa`.
pub fn page_state_change(
    msr: &mut impl MsrProtocol,
    gpa: u64,
    operation: PageOperation,
) -> Result<(), MsrProtocolError> {
    let sent = MsrRequest::PageStateChange { gfn: gpa >> 12, operation };
    match request(msr, sent)? {
        MsrResponse::PageStateChange { error: 0 } => Ok(()),
        MsrResponse::PageStateChange { error } => {
            Err(MsrProtocolError::Refused { request: sent.encode(), error })
        }
        _ => unreachable!("request() checked the response code"),
    }
}

/// Asks the hypervisor to run this vCPU at `vmpl`. Returns when the
/// hypervisor runs this VMPL again (on SNP: when the lower VMPL asks for
/// VMPL0, or an event for VMPL0 arrives).
pub fn run_vmpl(msr: &mut impl MsrProtocol, vmpl: u8) -> Result<(), MsrProtocolError> {
    let sent = MsrRequest::RunVmpl { vmpl };
    match request(msr, sent)? {
        MsrResponse::RunVmpl { error: 0 } => Ok(()),
        MsrResponse::RunVmpl { error } => {
            Err(MsrProtocolError::Refused { request: sent.encode(), error })
        }
        _ => unreachable!("request() checked the response code"),
    }
}

/// Sends a termination request. A hypervisor that honours it never returns
/// control; this function returns if it does, and the caller decides what
/// to do then (the platform halts).
pub fn request_termination(msr: &mut impl MsrProtocol, reason: TerminationReason) {
    msr.exchange(MsrRequest::Terminate(reason).encode());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sev::fake::FakeHypervisor;

    #[test]
    fn setup_requests_against_a_kvm_like_hypervisor() {
        let mut hv = FakeHypervisor::new();
        assert_eq!(sev_info(&mut hv), Ok(SevInfo { max_version: 2, min_version: 1, c_bit: 51 }));
        assert_eq!(hv_features(&mut hv).map(|f| f.0), Ok(0x3));
        assert_eq!(preferred_ghcb_gfn(&mut hv), Ok(None));
        assert_eq!(register_ghcb(&mut hv, 0x0812_3000), Ok(()));
        assert_eq!(hv.registered_ghcb, Some(0x0812_3000));
        assert_eq!(page_state_change(&mut hv, 0x0812_3000, PageOperation::Shared), Ok(()));
        assert!(hv.shared_pages.contains(&0x8123));
        // The raw values on the wire, as Linux's macros build them.
        assert_eq!(hv.msr_log[..4], [0x002, 0x080, 0x010, 0x0812_3012]);
        assert_eq!(hv.msr_log[4], 0x0020_0000_0812_3014);
    }

    #[test]
    fn hostile_answers_are_refused() {
        let mut hv = FakeHypervisor::new();
        hv.msr_override = Some(0x0812_4013);
        assert_eq!(
            register_ghcb(&mut hv, 0x0812_3000),
            Err(MsrProtocolError::RegistrationMismatch { requested: 0x8123, answered: 0x8124 })
        );
        hv.msr_override = Some(0x081);
        assert!(matches!(sev_info(&mut hv), Err(MsrProtocolError::WrongResponse { .. })));
        hv.msr_override = Some(0x0812_3000);
        assert!(matches!(hv_features(&mut hv), Err(MsrProtocolError::WrongResponse { .. })));
        hv.msr_override = Some(0x7_0000_0015);
        assert_eq!(
            page_state_change(&mut hv, 0x1000, PageOperation::Shared),
            Err(MsrProtocolError::Refused { request: 0x0020_0000_0000_1014, error: 7 })
        );
        hv.msr_override = Some(0x1_0000_0017);
        assert!(matches!(run_vmpl(&mut hv, 2), Err(MsrProtocolError::Refused { error: 1, .. })));
    }

    #[test]
    fn run_vmpl_and_termination_encodings() {
        let mut hv = FakeHypervisor::new();
        assert_eq!(run_vmpl(&mut hv, 2), Ok(()));
        assert_eq!(hv.vmpl_runs, [2]);
        assert_eq!(*hv.msr_log.last().unwrap(), 0x2_0000_0016);
        request_termination(&mut hv, TerminationReason::SVSM_NOT_VMPL0);
        assert_eq!(hv.terminated, Some(TerminationReason::SVSM_NOT_VMPL0));
        assert_eq!(*hv.msr_log.last().unwrap(), 0x21_3100);
    }
}
