//! The hypervisor's side of the GHCB protocol on the dev platform: what an
//! SNP host answers when the guest does VMGEXIT, so that an SNP-aware guest
//! runs unchanged. The guest's GHCB MSR is virtual (its reads and writes
//! are intercepted) and lives here.
//!
//! Answered in place (the guest resumes after its VMGEXIT): SEV
//! information (GHCB protocol 2, C-bit position 0: nothing is encrypted),
//! CPUID, preferred and registered GHCB GPA, page state change (a no-op:
//! there is no shared/private split), hypervisor features (SNP, AP
//! creation, multi-VMPL), and through a registered GHCB page: hypervisor
//! features and AP creation (accepted; CREATE_VCPU already started the
//! vCPU). Run-VMPL 0, by MSR or GHCB page, is a call for the SVSM; AP reset
//! hold parks the vCPU; termination stops it. Anything else is refused
//! (MSR protocol: the vCPU stops; GHCB page: "invalid event" in
//! SW_EXITINFO).

use abi::ghcb::{
    ApCreation, Ghcb, GhcbField, GhcbInputError, HvFeatures, MsrRequest, MsrResponse,
    TerminationReason, exit_code,
};

use crate::guest_mem::{GuestMemory, read_obj, write_obj};

/// The GHCB protocol version the dev platform speaks (SNP needs 2).
pub const GHCB_VERSION: u16 = 2;

/// The features the dev platform advertises.
pub const FEATURES: HvFeatures =
    HvFeatures(HvFeatures::SNP | HvFeatures::AP_CREATION | HvFeatures::MULTI_VMPL);

/// What to do with the vCPU after a VMGEXIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmgexitAction {
    /// Answered: resume the guest after the VMGEXIT.
    Resume,
    /// The guest asks to run VMPL0: a call for the SVSM.
    RunVmpl0,
    /// AP reset hold: the vCPU parks.
    Park,
    /// The guest asks to end.
    Terminate(TerminationReason),
    /// A request the platform cannot answer: stop the vCPU.
    Refused(&'static str),
}

/// One vCPU's GHCB state: its GHCB MSR and the GHCB page it registered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GhcbState {
    /// The value of the guest's GHCB MSR.
    pub msr: u64,
    /// The frame number of the registered GHCB page.
    pub registered_gfn: Option<u64>,
}

impl GhcbState {
    /// Answers a VMGEXIT. `cpuid` gives CPUID leaves for the MSR-protocol
    /// CPUID request.
    pub fn vmgexit(
        &mut self,
        memory: &dyn GuestMemory,
        cpuid: &dyn Fn(u32) -> [u32; 4],
    ) -> VmgexitAction {
        if self.msr & abi::ghcb::MSR_INFO_MASK == 0 {
            return self.page_request(memory);
        }
        let request = match MsrRequest::decode(self.msr) {
            Ok(request) => request,
            Err(_) => return VmgexitAction::Refused("an unknown GHCB MSR protocol request"),
        };
        let response = match request {
            MsrRequest::SevInfo => MsrResponse::SevInfo {
                max_version: GHCB_VERSION,
                min_version: GHCB_VERSION,
                c_bit: 0,
            },
            MsrRequest::Cpuid { function, register } => {
                let value = cpuid(function)[register as usize];
                MsrResponse::Cpuid { register, value }
            }
            MsrRequest::ApResetHold => return VmgexitAction::Park,
            MsrRequest::PreferredGhcbGpa => MsrResponse::PreferredGhcbGpa { gfn: None },
            MsrRequest::RegisterGhcbGpa { gfn } => {
                self.registered_gfn = Some(gfn);
                MsrResponse::RegisterGhcbGpa { gfn }
            }
            MsrRequest::PageStateChange { .. } => MsrResponse::PageStateChange { error: 0 },
            MsrRequest::RunVmpl { vmpl: 0 } => {
                self.msr = MsrResponse::RunVmpl { error: 0 }.encode();
                return VmgexitAction::RunVmpl0;
            }
            MsrRequest::RunVmpl { .. } => MsrResponse::RunVmpl { error: 1 },
            MsrRequest::HvFeatures => MsrResponse::HvFeatures(FEATURES),
            MsrRequest::Terminate(reason) => return VmgexitAction::Terminate(reason),
        };
        self.msr = response.encode();
        VmgexitAction::Resume
    }

    fn page_request(&mut self, memory: &dyn GuestMemory) -> VmgexitAction {
        let gpa = self.msr;
        let Ok(mut ghcb) = read_obj::<Ghcb>(memory, gpa) else {
            return VmgexitAction::Refused("a GHCB page outside guest memory");
        };
        let mut action = VmgexitAction::Resume;
        let outcome = if self.registered_gfn != Some(gpa >> 12) {
            Err(GhcbInputError::NotRegistered)
        } else if ghcb.usage() != abi::ghcb::GHCB_USAGE_STANDARD {
            Err(GhcbInputError::InvalidUsage)
        } else {
            let info1 = ghcb.get(GhcbField::SwExitInfo1);
            match ghcb.get(GhcbField::SwExitCode) {
                exit_code::RUN_VMPL if info1 == 0 => {
                    action = VmgexitAction::RunVmpl0;
                    Ok(0)
                }
                exit_code::RUN_VMPL => Err(GhcbInputError::InvalidInput),
                exit_code::HV_FEATURES => Ok(FEATURES.0),
                exit_code::AP_CREATION => match ApCreation::decode(info1) {
                    Some(_) => Ok(0),
                    None => Err(GhcbInputError::InvalidInput),
                },
                exit_code::TERMINATE => {
                    return VmgexitAction::Terminate(TerminationReason::from_exit_info1(info1));
                }
                _ => Err(GhcbInputError::InvalidEvent),
            }
        };
        let (info1, info2) = match outcome {
            Ok(info2) => (u64::from(abi::ghcb::GHCB_RESULT_OK), info2),
            Err(error) => (u64::from(abi::ghcb::GHCB_RESULT_MALFORMED_INPUT), error.code()),
        };
        ghcb.set(GhcbField::SwExitInfo1, info1);
        ghcb.set(GhcbField::SwExitInfo2, info2);
        if write_obj(memory, gpa, &ghcb).is_err() {
            return VmgexitAction::Refused("a GHCB page the SVSM cannot write");
        }
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::boot::MemoryRange;
    use abi::ghcb::{CpuidRegister, GhcbResult};
    use zerocopy::FromZeros;

    use crate::guest_mem::{CheckedGuestMemory, GuestLayout, OwnedPages};
    use crate::host_doubles::FakeGuestRam;

    fn cpuid(leaf: u32) -> [u32; 4] {
        [leaf, 1, 2, 3]
    }

    fn msr_round_trip(state: &mut GhcbState, request: MsrRequest) -> (VmgexitAction, u64) {
        let ram = FakeGuestRam::new(0, 0x1000);
        let layout = GuestLayout::new(&[MemoryRange { base: 0, size: 0x1000 }], &[]);
        let owned = OwnedPages::new();
        let memory = CheckedGuestMemory::new(&layout, &owned, &ram);
        state.msr = request.encode();
        let action = state.vmgexit(&memory, &cpuid);
        (action, state.msr)
    }

    #[test]
    fn answers_the_msr_protocol_like_an_snp_host() {
        let mut s = GhcbState::default();
        let (action, msr) = msr_round_trip(&mut s, MsrRequest::SevInfo);
        assert_eq!(action, VmgexitAction::Resume);
        assert_eq!(
            MsrResponse::decode(msr),
            Ok(MsrResponse::SevInfo { max_version: 2, min_version: 2, c_bit: 0 })
        );
        let (_, msr) = msr_round_trip(&mut s, MsrRequest::HvFeatures);
        let Ok(MsrResponse::HvFeatures(features)) = MsrResponse::decode(msr) else { panic!() };
        assert!(features.has(HvFeatures::MULTI_VMPL) && features.has(HvFeatures::SNP));
        let request = MsrRequest::Cpuid { function: 0x8000_0001, register: CpuidRegister::Ecx };
        let (_, msr) = msr_round_trip(&mut s, request);
        assert_eq!(
            MsrResponse::decode(msr),
            Ok(MsrResponse::Cpuid { register: CpuidRegister::Ecx, value: 2 })
        );
        let (_, msr) = msr_round_trip(&mut s, MsrRequest::RegisterGhcbGpa { gfn: 0x123 });
        assert_eq!(MsrResponse::decode(msr), Ok(MsrResponse::RegisterGhcbGpa { gfn: 0x123 }));
        assert_eq!(s.registered_gfn, Some(0x123));
        let (action, msr) = msr_round_trip(&mut s, MsrRequest::RunVmpl { vmpl: 0 });
        assert_eq!(action, VmgexitAction::RunVmpl0);
        assert_eq!(MsrResponse::decode(msr), Ok(MsrResponse::RunVmpl { error: 0 }));
        let (action, msr) = msr_round_trip(&mut s, MsrRequest::RunVmpl { vmpl: 2 });
        assert_eq!(action, VmgexitAction::Resume);
        assert_eq!(MsrResponse::decode(msr), Ok(MsrResponse::RunVmpl { error: 1 }));
        assert_eq!(msr_round_trip(&mut s, MsrRequest::ApResetHold).0, VmgexitAction::Park);
        let reason = TerminationReason { set: 1, code: 3 };
        assert_eq!(
            msr_round_trip(&mut s, MsrRequest::Terminate(reason)).0,
            VmgexitAction::Terminate(reason)
        );
    }

    #[test]
    fn unknown_msr_requests_stop_the_vcpu() {
        let ram = FakeGuestRam::new(0, 0x1000);
        let layout = GuestLayout::new(&[MemoryRange { base: 0, size: 0x1000 }], &[]);
        let owned = OwnedPages::new();
        let memory = CheckedGuestMemory::new(&layout, &owned, &ram);
        for value in [0x003u64, 0xFFF, 0x016 | 0xFF00_0000_0000_0000] {
            let mut s = GhcbState { msr: value, registered_gfn: None };
            assert!(matches!(s.vmgexit(&memory, &cpuid), VmgexitAction::Refused(_)), "{value:#x}");
        }
    }

    fn page_call(
        state: &mut GhcbState,
        ram: &FakeGuestRam,
        code: u64,
        info1: u64,
    ) -> (VmgexitAction, Ghcb) {
        let layout = GuestLayout::new(&[MemoryRange { base: 0, size: 0x4000 }], &[]);
        let owned = OwnedPages::new();
        let memory = CheckedGuestMemory::new(&layout, &owned, ram);
        let mut ghcb = Ghcb::new_zeroed();
        ghcb.set_exit(code, info1, 0);
        write_obj(&memory, 0x2000, &ghcb).unwrap();
        state.msr = 0x2000;
        let action = state.vmgexit(&memory, &cpuid);
        (action, read_obj(&memory, 0x2000).unwrap())
    }

    #[test]
    fn answers_the_ghcb_page_protocol() {
        let ram = FakeGuestRam::new(0, 0x4000);
        let mut s = GhcbState::default();
        let (action, ghcb) = page_call(&mut s, &ram, exit_code::HV_FEATURES, 0);
        assert_eq!(action, VmgexitAction::Resume);
        assert_eq!(ghcb.result(), GhcbResult::MalformedInput(GhcbInputError::NotRegistered));
        s.registered_gfn = Some(2);
        let (_, ghcb) = page_call(&mut s, &ram, exit_code::HV_FEATURES, 0);
        assert_eq!(ghcb.result(), GhcbResult::Ok);
        assert_eq!(ghcb.get(GhcbField::SwExitInfo2), FEATURES.0);
        let (action, ghcb) = page_call(&mut s, &ram, exit_code::RUN_VMPL, 0);
        assert_eq!((action, ghcb.result()), (VmgexitAction::RunVmpl0, GhcbResult::Ok));
        let (action, ghcb) = page_call(&mut s, &ram, exit_code::RUN_VMPL, 1);
        assert_eq!(action, VmgexitAction::Resume);
        assert_eq!(ghcb.result(), GhcbResult::MalformedInput(GhcbInputError::InvalidInput));
        let create =
            ApCreation { request: abi::ghcb::ApCreateRequest::Create, vmpl: 2, apic_id: 1 };
        let (_, ghcb) = page_call(&mut s, &ram, exit_code::AP_CREATION, create.encode());
        assert_eq!(ghcb.result(), GhcbResult::Ok);
        let (_, ghcb) = page_call(&mut s, &ram, exit_code::IOIO, 0);
        assert_eq!(ghcb.result(), GhcbResult::MalformedInput(GhcbInputError::InvalidEvent));
        let reason = TerminationReason { set: 0, code: 2 };
        let (action, _) = page_call(&mut s, &ram, exit_code::TERMINATE, reason.exit_info1());
        assert_eq!(action, VmgexitAction::Terminate(reason));
        // A GHCB outside guest memory.
        let layout = GuestLayout::new(&[MemoryRange { base: 0, size: 0x1000 }], &[]);
        let owned = OwnedPages::new();
        let memory = CheckedGuestMemory::new(&layout, &owned, &ram);
        s.msr = 0x8000_0000;
        assert!(matches!(s.vmgexit(&memory, &cpuid), VmgexitAction::Refused(_)));
    }
}
