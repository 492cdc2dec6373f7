//! The Guest-Hypervisor Communication Block (GHCB): how an SEV-ES/SNP
//! guest, whose registers the hypervisor cannot see, asks the hypervisor
//! for anything. Two forms, both started by VMGEXIT (`rep vmmcall`):
//!
//! - the **MSR protocol**: a request code in bits 11:0 of the GHCB MSR
//!   (0xC001_0130) and data in bits 63:12; the answer comes back in the
//!   same MSR ([`MsrRequest`], [`MsrResponse`]);
//! - the **GHCB page protocol**: the MSR holds the GPA of a shared
//!   (unencrypted) 4 KiB page ([`Ghcb`]) that carries the guest's chosen
//!   registers, each marked in a valid bitmap, a software exit code
//!   ([`exit_code`]) and two exit-information words; the hypervisor answers
//!   in the same page and reports the outcome in SW_EXITINFO1
//!   ([`GhcbResult`]).
//!
//! The SVSM speaks both as a guest, the dev platform answers them as a
//! hypervisor, the test guest uses them to call the SVSM. Every decoder here
//! accepts any bit pattern: values come from the other side of a trust
//! boundary.
//!
//! Sources: Linux `arch/x86/include/asm/sev-common.h` (MSR protocol macros,
//! `psc_hdr`/`psc_entry`, `GHCB_HV_FT_*`, `GHCB_ERR_*`, termination codes),
//! `arch/x86/include/asm/svm.h` (`struct ghcb_save_area`, `struct ghcb`),
//! `arch/x86/include/uapi/asm/svm.h` (`SVM_EXIT_*`, `SVM_VMGEXIT_*`),
//! `arch/x86/coco/sev/*` (`vc_ioio_exitinfo`), AMD APM vol. 2 §15.10.2
//! (IOIO EXITINFO1) as quoted there; project reference `snp-svsm.md` §1-§2.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The GHCB MSR.
pub const MSR_GHCB: u32 = 0xC001_0130;
/// GHCB protocol version the SVSM speaks (SNP requires 2).
pub const GHCB_PROTOCOL_VERSION: u16 = 2;
/// `GHCB_USAGE`: the standard page format.
pub const GHCB_USAGE_STANDARD: u32 = 0;
/// VMCB exit code of VMGEXIT, as the hypervisor sees it.
pub const SVM_EXIT_VMGEXIT: u64 = 0x403;

/// Bits 11:0 of a GHCB MSR value: the MSR-protocol code (0 = a GHCB GPA).
pub const MSR_INFO_MASK: u64 = 0xFFF;
/// Largest guest frame number the MSR protocol carries (52 bits).
pub const MSR_GFN_MASK: u64 = (1 << 52) - 1;

/// MSR-protocol request and response codes (bits 11:0).
pub mod msr_code {
    /// SEV information response.
    pub const SEV_INFO_RESPONSE: u16 = 0x001;
    /// SEV information request.
    pub const SEV_INFO_REQUEST: u16 = 0x002;
    /// CPUID request.
    pub const CPUID_REQUEST: u16 = 0x004;
    /// CPUID response.
    pub const CPUID_RESPONSE: u16 = 0x005;
    /// AP reset hold request.
    pub const AP_RESET_HOLD_REQUEST: u16 = 0x006;
    /// AP reset hold response.
    pub const AP_RESET_HOLD_RESPONSE: u16 = 0x007;
    /// Preferred GHCB GPA request.
    pub const PREFERRED_GPA_REQUEST: u16 = 0x010;
    /// Preferred GHCB GPA response.
    pub const PREFERRED_GPA_RESPONSE: u16 = 0x011;
    /// Register GHCB GPA request.
    pub const REGISTER_GPA_REQUEST: u16 = 0x012;
    /// Register GHCB GPA response.
    pub const REGISTER_GPA_RESPONSE: u16 = 0x013;
    /// SNP page state change request.
    pub const PSC_REQUEST: u16 = 0x014;
    /// SNP page state change response.
    pub const PSC_RESPONSE: u16 = 0x015;
    /// SNP Run-VMPL request.
    pub const RUN_VMPL_REQUEST: u16 = 0x016;
    /// SNP Run-VMPL response.
    pub const RUN_VMPL_RESPONSE: u16 = 0x017;
    /// Hypervisor feature request.
    pub const HV_FEATURES_REQUEST: u16 = 0x080;
    /// Hypervisor feature response.
    pub const HV_FEATURES_RESPONSE: u16 = 0x081;
    /// Termination request (no response).
    pub const TERMINATE_REQUEST: u16 = 0x100;
}

/// "No preference" in a preferred-GHCB-GPA response (all 52 GFN bits set).
pub const PREFERRED_GPA_NONE: u64 = MSR_GFN_MASK;

/// The register a CPUID MSR request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuidRegister {
    /// EAX.
    Eax = 0,
    /// EBX.
    Ebx = 1,
    /// ECX.
    Ecx = 2,
    /// EDX.
    Edx = 3,
}

impl CpuidRegister {
    /// The four registers in selector order.
    pub const ALL: [CpuidRegister; 4] =
        [CpuidRegister::Eax, CpuidRegister::Ebx, CpuidRegister::Ecx, CpuidRegister::Edx];

    const fn from_bits(bits: u64) -> CpuidRegister {
        CpuidRegister::ALL[(bits & 3) as usize]
    }
}

/// A page-state-change operation (MSR bits 55:52, PSC entry bits 55:52).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageOperation {
    /// Make the page private (guest-owned).
    Private = 1,
    /// Make the page shared (hypervisor-owned).
    Shared = 2,
    /// Split a 2 MiB RMP entry into 4 KiB entries (page protocol only).
    Psmash = 3,
    /// Merge 4 KiB RMP entries into a 2 MiB one (page protocol only).
    Unsmash = 4,
}

impl PageOperation {
    /// Decodes a 4-bit operation.
    pub const fn from_bits(bits: u64) -> Option<PageOperation> {
        match bits {
            1 => Some(PageOperation::Private),
            2 => Some(PageOperation::Shared),
            3 => Some(PageOperation::Psmash),
            4 => Some(PageOperation::Unsmash),
            _ => None,
        }
    }
}

/// Why a VM asked to be terminated: a reason set (4 bits) and a code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TerminationReason {
    /// Reason set: 0 = general (GHCB specification), 1 = Linux, 3 = this
    /// SVSM ([`TerminationReason::SVSM_SET`]).
    pub set: u8,
    /// Code within the set.
    pub code: u8,
}

impl TerminationReason {
    /// Set 0, code 0: general termination.
    pub const GENERAL: TerminationReason = TerminationReason { set: 0, code: 0 };
    /// Set 0, code 1: the GHCB protocol version is not supported.
    pub const PROTOCOL_UNSUPPORTED: TerminationReason = TerminationReason { set: 0, code: 1 };
    /// Set 0, code 2: SEV-SNP not supported, or a feature mismatch.
    pub const SNP_UNSUPPORTED: TerminationReason = TerminationReason { set: 0, code: 2 };

    /// The reason set of this SVSM's own codes.
    pub const SVSM_SET: u8 = 3;
    /// The SVSM ended its run successfully but the exit device did not stop
    /// the VM (code = the exit-device value for success, 0x10).
    pub const SVSM_EXIT_SUCCESS: TerminationReason =
        TerminationReason { set: Self::SVSM_SET, code: 0x10 };
    /// The SVSM failed (code = the exit-device value for failure, 0x11).
    pub const SVSM_EXIT_FAILURE: TerminationReason =
        TerminationReason { set: Self::SVSM_SET, code: 0x11 };
    /// SEV_STATUS shows a feature the SVSM cannot run with, or lacks one it
    /// needs.
    pub const SVSM_UNSUPPORTED_FEATURES: TerminationReason =
        TerminationReason { set: Self::SVSM_SET, code: 0x20 };
    /// The SVSM does not run at VMPL0.
    pub const SVSM_NOT_VMPL0: TerminationReason =
        TerminationReason { set: Self::SVSM_SET, code: 0x21 };
    /// Setting up the GHCB failed (page state change or registration).
    pub const SVSM_GHCB_SETUP: TerminationReason =
        TerminationReason { set: Self::SVSM_SET, code: 0x22 };
    /// The hypervisor answered a GHCB request with something invalid.
    pub const SVSM_HYPERVISOR_ERROR: TerminationReason =
        TerminationReason { set: Self::SVSM_SET, code: 0x23 };
    /// Stage2 could not validate or load the kernel.
    pub const SVSM_STAGE2_FAILED: TerminationReason =
        TerminationReason { set: Self::SVSM_SET, code: 0x24 };

    /// GHCBData for the MSR protocol: set in bits 15:12, code in 23:16.
    pub const fn msr_request(self) -> u64 {
        ((self.set as u64 & 0xF) << 12)
            | ((self.code as u64) << 16)
            | msr_code::TERMINATE_REQUEST as u64
    }

    /// SW_EXITINFO1 of the termination NAE event: set in bits 3:0, code in
    /// 11:4.
    pub const fn exit_info1(self) -> u64 {
        (self.set as u64 & 0xF) | ((self.code as u64) << 4)
    }

    /// Decodes a termination NAE event's SW_EXITINFO1.
    pub const fn from_exit_info1(info: u64) -> TerminationReason {
        TerminationReason { set: (info & 0xF) as u8, code: ((info >> 4) & 0xFF) as u8 }
    }

    /// What the reason means, for the people reading a host's log.
    pub const fn meaning(self) -> &'static str {
        match (self.set, self.code) {
            (0, 0) => "general termination",
            (0, 1) => "GHCB protocol version not supported",
            (0, 2) => "SEV-SNP not supported or feature mismatch",
            (1, 0) => "Linux: GHCB registration failed",
            (1, 1) => "Linux: page state change failed",
            (1, 2) => "Linux: PVALIDATE failed",
            (1, 3) => "Linux: not running at VMPL0",
            (1, 4) => "Linux: CPUID validation failed",
            (1, 5) => "Linux: CPUID hypervisor fallback failed",
            (1, 6) => "Linux: secrets page failure",
            (1, 7) => "Linux: no SVSM advertised in the secrets page",
            (1, 8) => "Linux: SVSM present but guest VMPL is 0",
            (1, 9) => "Linux: SVSM calling area not page aligned",
            (1, 10) => "Linux: Secure TSC initialisation failed",
            (1, 11) => "Linux: SVSM calling area could not be remapped",
            (Self::SVSM_SET, 0x10) => "SVSM: finished successfully",
            (Self::SVSM_SET, 0x11) => "SVSM: failed (see its console)",
            (Self::SVSM_SET, 0x20) => "SVSM: unsupported SEV features (SEV_STATUS)",
            (Self::SVSM_SET, 0x21) => "SVSM: not running at VMPL0",
            (Self::SVSM_SET, 0x22) => "SVSM: GHCB setup failed",
            (Self::SVSM_SET, 0x23) => "SVSM: invalid answer from the hypervisor",
            (Self::SVSM_SET, 0x24) => "SVSM: stage2 could not validate or load the kernel",
            _ => "no meaning known",
        }
    }
}

/// Hypervisor feature bits (MSR response 0x081 bits 63:12, NAE
/// 0x8000_FFFD in SW_EXITINFO2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HvFeatures(pub u64);

impl HvFeatures {
    /// Bit 0: SEV-SNP.
    pub const SNP: u64 = 1 << 0;
    /// Bit 1: SNP AP creation NAE event.
    pub const AP_CREATION: u64 = 1 << 1;
    /// Bit 2: restricted injection (Linux's `GHCB_HV_FT_SNP_RINJ` tests
    /// this bit together with bit 1).
    pub const RESTRICTED_INJECTION: u64 = 1 << 2;
    /// Bit 3: restricted injection timer.
    pub const RESTRICTED_INJECTION_TIMER: u64 = 1 << 3;
    /// Bit 4: APIC ID list NAE event.
    pub const APIC_ID_LIST: u64 = 1 << 4;
    /// Bit 5: multiple VMPLs (Run-VMPL MSR request and NAE event).
    pub const MULTI_VMPL: u64 = 1 << 5;

    /// Whether every bit of `mask` is set.
    pub const fn has(self, mask: u64) -> bool {
        self.0 & mask == mask
    }
}

/// An MSR-protocol request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrRequest {
    /// SEV information (protocol versions, C-bit position).
    SevInfo,
    /// One register of a CPUID leaf without subleaf.
    Cpuid {
        /// The leaf (EAX input).
        function: u32,
        /// The register wanted.
        register: CpuidRegister,
    },
    /// AP reset hold (SEV-ES AP parking).
    ApResetHold,
    /// The GHCB GPA the hypervisor would like.
    PreferredGhcbGpa,
    /// Register the GHCB page at `gfn` (SNP requires it before use).
    RegisterGhcbGpa {
        /// Guest frame number of the GHCB page.
        gfn: u64,
    },
    /// Change the state of one 4 KiB page.
    PageStateChange {
        /// Guest frame number (40 bits).
        gfn: u64,
        /// [`PageOperation::Private`] or [`PageOperation::Shared`].
        operation: PageOperation,
    },
    /// Run the vCPU at another VMPL (switch VMSAs).
    RunVmpl {
        /// The VMPL to run.
        vmpl: u8,
    },
    /// The hypervisor's feature bitmap.
    HvFeatures,
    /// Terminate the VM.
    Terminate(TerminationReason),
}

/// Why an MSR value is not a request or response this code knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrDecodeError {
    /// Bits 11:0 are zero: the value is a GHCB GPA.
    GhcbGpa(u64),
    /// A code this protocol does not define (or a request where a response
    /// was expected, and the other way round).
    UnknownCode(u16),
    /// A reserved bit is set.
    ReservedBits(u64),
    /// A page-state-change operation other than private/shared.
    BadOperation(u64),
}

const fn bits(value: u64, high: u32, low: u32) -> u64 {
    (value >> low) & ((1u64 << (high - low + 1)) - 1)
}

impl MsrRequest {
    /// The request's code (bits 11:0).
    pub const fn code(&self) -> u16 {
        match self {
            MsrRequest::SevInfo => msr_code::SEV_INFO_REQUEST,
            MsrRequest::Cpuid { .. } => msr_code::CPUID_REQUEST,
            MsrRequest::ApResetHold => msr_code::AP_RESET_HOLD_REQUEST,
            MsrRequest::PreferredGhcbGpa => msr_code::PREFERRED_GPA_REQUEST,
            MsrRequest::RegisterGhcbGpa { .. } => msr_code::REGISTER_GPA_REQUEST,
            MsrRequest::PageStateChange { .. } => msr_code::PSC_REQUEST,
            MsrRequest::RunVmpl { .. } => msr_code::RUN_VMPL_REQUEST,
            MsrRequest::HvFeatures => msr_code::HV_FEATURES_REQUEST,
            MsrRequest::Terminate(_) => msr_code::TERMINATE_REQUEST,
        }
    }

    /// The response code that answers this request (`None` for
    /// termination, which does not return).
    pub const fn response_code(&self) -> Option<u16> {
        match self {
            MsrRequest::SevInfo => Some(msr_code::SEV_INFO_RESPONSE),
            MsrRequest::Cpuid { .. } => Some(msr_code::CPUID_RESPONSE),
            MsrRequest::ApResetHold => Some(msr_code::AP_RESET_HOLD_RESPONSE),
            MsrRequest::PreferredGhcbGpa => Some(msr_code::PREFERRED_GPA_RESPONSE),
            MsrRequest::RegisterGhcbGpa { .. } => Some(msr_code::REGISTER_GPA_RESPONSE),
            MsrRequest::PageStateChange { .. } => Some(msr_code::PSC_RESPONSE),
            MsrRequest::RunVmpl { .. } => Some(msr_code::RUN_VMPL_RESPONSE),
            MsrRequest::HvFeatures => Some(msr_code::HV_FEATURES_RESPONSE),
            MsrRequest::Terminate(_) => None,
        }
    }

    /// The value to write to the GHCB MSR. Fields wider than the protocol
    /// carries are truncated, as Linux's macros do.
    pub const fn encode(&self) -> u64 {
        let code = self.code() as u64;
        match *self {
            MsrRequest::SevInfo
            | MsrRequest::ApResetHold
            | MsrRequest::PreferredGhcbGpa
            | MsrRequest::HvFeatures => code,
            MsrRequest::Cpuid { function, register } => {
                code | ((register as u64) << 30) | ((function as u64) << 32)
            }
            MsrRequest::RegisterGhcbGpa { gfn } => code | ((gfn & MSR_GFN_MASK) << 12),
            MsrRequest::PageStateChange { gfn, operation } => {
                code | ((gfn & ((1 << 40) - 1)) << 12) | ((operation as u64 & 0xF) << 52)
            }
            MsrRequest::RunVmpl { vmpl } => code | ((vmpl as u64) << 32),
            MsrRequest::Terminate(reason) => reason.msr_request(),
        }
    }

    /// Decodes a value a guest wrote to the GHCB MSR (the hypervisor's
    /// view).
    pub fn decode(value: u64) -> Result<MsrRequest, MsrDecodeError> {
        let code = (value & MSR_INFO_MASK) as u16;
        let data = value & !MSR_INFO_MASK;
        let no_data = |request: MsrRequest| {
            if data == 0 { Ok(request) } else { Err(MsrDecodeError::ReservedBits(data)) }
        };
        match code {
            0 => Err(MsrDecodeError::GhcbGpa(value)),
            msr_code::SEV_INFO_REQUEST => no_data(MsrRequest::SevInfo),
            msr_code::AP_RESET_HOLD_REQUEST => no_data(MsrRequest::ApResetHold),
            msr_code::PREFERRED_GPA_REQUEST => no_data(MsrRequest::PreferredGhcbGpa),
            msr_code::HV_FEATURES_REQUEST => no_data(MsrRequest::HvFeatures),
            msr_code::CPUID_REQUEST => {
                if bits(value, 29, 12) != 0 {
                    return Err(MsrDecodeError::ReservedBits(value & 0x3FFF_F000));
                }
                Ok(MsrRequest::Cpuid {
                    function: (value >> 32) as u32,
                    register: CpuidRegister::from_bits(bits(value, 31, 30)),
                })
            }
            msr_code::REGISTER_GPA_REQUEST => Ok(MsrRequest::RegisterGhcbGpa { gfn: value >> 12 }),
            msr_code::PSC_REQUEST => {
                if bits(value, 63, 56) != 0 {
                    return Err(MsrDecodeError::ReservedBits(value & (0xFF << 56)));
                }
                match PageOperation::from_bits(bits(value, 55, 52)) {
                    Some(operation @ (PageOperation::Private | PageOperation::Shared)) => {
                        Ok(MsrRequest::PageStateChange { gfn: bits(value, 51, 12), operation })
                    }
                    _ => Err(MsrDecodeError::BadOperation(bits(value, 55, 52))),
                }
            }
            msr_code::RUN_VMPL_REQUEST => {
                let reserved = bits(value, 31, 12) | bits(value, 63, 40);
                if reserved != 0 {
                    return Err(MsrDecodeError::ReservedBits(
                        value & !(MSR_INFO_MASK | (0xFF << 32)),
                    ));
                }
                Ok(MsrRequest::RunVmpl { vmpl: bits(value, 39, 32) as u8 })
            }
            msr_code::TERMINATE_REQUEST => Ok(MsrRequest::Terminate(TerminationReason {
                set: bits(value, 15, 12) as u8,
                code: bits(value, 23, 16) as u8,
            })),
            other => Err(MsrDecodeError::UnknownCode(other)),
        }
    }
}

/// An MSR-protocol response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrResponse {
    /// SEV information.
    SevInfo {
        /// Highest GHCB protocol version the hypervisor supports.
        max_version: u16,
        /// Lowest GHCB protocol version the hypervisor supports.
        min_version: u16,
        /// Position of the C-bit in a page-table entry.
        c_bit: u8,
    },
    /// One CPUID register.
    Cpuid {
        /// The register echoed.
        register: CpuidRegister,
        /// Its value.
        value: u32,
    },
    /// AP reset hold: non-zero when the vCPU was woken.
    ApResetHold {
        /// GHCBData[63:12].
        result: u64,
    },
    /// Preferred GHCB GFN, `None` for no preference.
    PreferredGhcbGpa {
        /// The preferred frame number.
        gfn: Option<u64>,
    },
    /// Registration answer: the GFN registered (the request's GFN on
    /// success).
    RegisterGhcbGpa {
        /// GHCBData[63:12].
        gfn: u64,
    },
    /// Page state change: 0 on success.
    PageStateChange {
        /// GHCBData[63:32].
        error: u32,
    },
    /// Run-VMPL: 0 on success.
    RunVmpl {
        /// GHCBData[63:32].
        error: u32,
    },
    /// Hypervisor feature bitmap.
    HvFeatures(HvFeatures),
}

impl MsrResponse {
    /// The response's code (bits 11:0).
    pub const fn code(&self) -> u16 {
        match self {
            MsrResponse::SevInfo { .. } => msr_code::SEV_INFO_RESPONSE,
            MsrResponse::Cpuid { .. } => msr_code::CPUID_RESPONSE,
            MsrResponse::ApResetHold { .. } => msr_code::AP_RESET_HOLD_RESPONSE,
            MsrResponse::PreferredGhcbGpa { .. } => msr_code::PREFERRED_GPA_RESPONSE,
            MsrResponse::RegisterGhcbGpa { .. } => msr_code::REGISTER_GPA_RESPONSE,
            MsrResponse::PageStateChange { .. } => msr_code::PSC_RESPONSE,
            MsrResponse::RunVmpl { .. } => msr_code::RUN_VMPL_RESPONSE,
            MsrResponse::HvFeatures(_) => msr_code::HV_FEATURES_RESPONSE,
        }
    }

    /// The value the hypervisor writes to the GHCB MSR.
    pub const fn encode(&self) -> u64 {
        let code = self.code() as u64;
        match *self {
            MsrResponse::SevInfo { max_version, min_version, c_bit } => {
                code | ((max_version as u64) << 48)
                    | ((min_version as u64) << 32)
                    | ((c_bit as u64) << 24)
            }
            MsrResponse::Cpuid { register, value } => {
                code | ((register as u64) << 30) | ((value as u64) << 32)
            }
            MsrResponse::ApResetHold { result } => code | ((result & MSR_GFN_MASK) << 12),
            MsrResponse::PreferredGhcbGpa { gfn } => {
                let gfn = match gfn {
                    Some(gfn) => gfn & MSR_GFN_MASK,
                    None => PREFERRED_GPA_NONE,
                };
                code | (gfn << 12)
            }
            MsrResponse::RegisterGhcbGpa { gfn } => code | ((gfn & MSR_GFN_MASK) << 12),
            MsrResponse::PageStateChange { error } | MsrResponse::RunVmpl { error } => {
                code | ((error as u64) << 32)
            }
            MsrResponse::HvFeatures(features) => code | ((features.0 & MSR_GFN_MASK) << 12),
        }
    }

    /// Decodes the GHCB MSR after VMGEXIT (the guest's view). Reserved bits
    /// that Linux ignores are ignored here too; the caller checks that the
    /// code answers its request.
    pub const fn decode(value: u64) -> Result<MsrResponse, MsrDecodeError> {
        let code = (value & MSR_INFO_MASK) as u16;
        match code {
            msr_code::SEV_INFO_RESPONSE => Ok(MsrResponse::SevInfo {
                max_version: bits(value, 63, 48) as u16,
                min_version: bits(value, 47, 32) as u16,
                c_bit: bits(value, 31, 24) as u8,
            }),
            msr_code::CPUID_RESPONSE => Ok(MsrResponse::Cpuid {
                register: CpuidRegister::from_bits(bits(value, 31, 30)),
                value: (value >> 32) as u32,
            }),
            msr_code::AP_RESET_HOLD_RESPONSE => {
                Ok(MsrResponse::ApResetHold { result: value >> 12 })
            }
            msr_code::PREFERRED_GPA_RESPONSE => {
                let gfn = value >> 12;
                Ok(MsrResponse::PreferredGhcbGpa {
                    gfn: if gfn == PREFERRED_GPA_NONE { None } else { Some(gfn) },
                })
            }
            msr_code::REGISTER_GPA_RESPONSE => {
                Ok(MsrResponse::RegisterGhcbGpa { gfn: value >> 12 })
            }
            msr_code::PSC_RESPONSE => {
                Ok(MsrResponse::PageStateChange { error: (value >> 32) as u32 })
            }
            msr_code::RUN_VMPL_RESPONSE => Ok(MsrResponse::RunVmpl { error: (value >> 32) as u32 }),
            msr_code::HV_FEATURES_RESPONSE => Ok(MsrResponse::HvFeatures(HvFeatures(value >> 12))),
            0 => Err(MsrDecodeError::GhcbGpa(value)),
            other => Err(MsrDecodeError::UnknownCode(other)),
        }
    }
}

/// Software exit codes (SW_EXITCODE) of the GHCB page protocol.
pub mod exit_code {
    /// DR7 read.
    pub const DR7_READ: u64 = 0x027;
    /// DR7 write.
    pub const DR7_WRITE: u64 = 0x037;
    /// RDTSC.
    pub const RDTSC: u64 = 0x06E;
    /// RDPMC.
    pub const RDPMC: u64 = 0x06F;
    /// CPUID: RAX = leaf, RCX = subleaf, XCR0 → RAX, RBX, RCX, RDX.
    pub const CPUID: u64 = 0x072;
    /// INVD.
    pub const INVD: u64 = 0x076;
    /// Port I/O: SW_EXITINFO1 = [`super::IoioInfo`], RAX = data.
    pub const IOIO: u64 = 0x07B;
    /// RDMSR (SW_EXITINFO1 = 0) / WRMSR (1): RCX = MSR, RAX/RDX = value.
    pub const MSR: u64 = 0x07C;
    /// VMMCALL.
    pub const VMMCALL: u64 = 0x081;
    /// RDTSCP.
    pub const RDTSCP: u64 = 0x087;
    /// WBINVD.
    pub const WBINVD: u64 = 0x089;
    /// MONITOR.
    pub const MONITOR: u64 = 0x08A;
    /// MWAIT.
    pub const MWAIT: u64 = 0x08B;
    /// MMIO read: SW_EXITINFO1 = GPA, SW_EXITINFO2 = length, SW_SCRATCH =
    /// buffer.
    pub const MMIO_READ: u64 = 0x8000_0001;
    /// MMIO write (as MMIO read).
    pub const MMIO_WRITE: u64 = 0x8000_0002;
    /// NMI complete.
    pub const NMI_COMPLETE: u64 = 0x8000_0003;
    /// AP HLT loop.
    pub const AP_HLT_LOOP: u64 = 0x8000_0004;
    /// AP jump table (EXITINFO1 0 = set, 1 = get).
    pub const AP_JUMP_TABLE: u64 = 0x8000_0005;
    /// SNP page state change: SW_SCRATCH = descriptor GPA.
    pub const PAGE_STATE_CHANGE: u64 = 0x8000_0010;
    /// SNP guest request: EXITINFO1 = request page, EXITINFO2 = response
    /// page; EXITINFO2 returns firmware status [31:0] and VMM error [63:32].
    pub const GUEST_REQUEST: u64 = 0x8000_0011;
    /// SNP extended guest request (adds RAX = certificate buffer, RBX =
    /// pages).
    pub const EXT_GUEST_REQUEST: u64 = 0x8000_0012;
    /// SNP AP creation: EXITINFO1 = [`super::ApCreation`], EXITINFO2 =
    /// VMSA GPA, RAX = SEV_FEATURES.
    pub const AP_CREATION: u64 = 0x8000_0013;
    /// #HV doorbell page.
    pub const HV_DOORBELL_PAGE: u64 = 0x8000_0014;
    /// #HV IPI.
    pub const HV_IPI: u64 = 0x8000_0015;
    /// Get APIC IDs.
    pub const GET_APIC_IDS: u64 = 0x8000_0017;
    /// SNP Run-VMPL: EXITINFO1 = target VMPL.
    pub const RUN_VMPL: u64 = 0x8000_0018;
    /// Hypervisor features: → EXITINFO2.
    pub const HV_FEATURES: u64 = 0x8000_FFFD;
    /// Termination: EXITINFO1 = [`super::TerminationReason::exit_info1`].
    pub const TERMINATE: u64 = 0x8000_FFFE;
    /// Unsupported event.
    pub const UNSUPPORTED: u64 = 0x8000_FFFF;
}

/// SW_EXITINFO2 error of a guest request: the VMM rejected the length.
pub const GUEST_REQUEST_VMM_INVALID_LEN: u32 = 1;
/// SW_EXITINFO2 error of a guest request: the VMM is busy, retry.
pub const GUEST_REQUEST_VMM_BUSY: u32 = 2;

/// GHCB input error (SW_EXITINFO2 when SW_EXITINFO1[31:0] = 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GhcbInputError {
    /// 1: the GHCB GPA was not registered.
    NotRegistered,
    /// 2: GHCB_USAGE is not supported.
    InvalidUsage,
    /// 3: SW_SCRATCH is not valid.
    InvalidScratchArea,
    /// 4: a required input field is not marked valid.
    MissingInput,
    /// 5: an input value is not valid.
    InvalidInput,
    /// 6: the exit code is not supported.
    InvalidEvent,
    /// Any other value.
    Other(u64),
}

impl GhcbInputError {
    /// The SW_EXITINFO2 code.
    pub const fn code(self) -> u64 {
        match self {
            GhcbInputError::NotRegistered => 1,
            GhcbInputError::InvalidUsage => 2,
            GhcbInputError::InvalidScratchArea => 3,
            GhcbInputError::MissingInput => 4,
            GhcbInputError::InvalidInput => 5,
            GhcbInputError::InvalidEvent => 6,
            GhcbInputError::Other(code) => code,
        }
    }

    /// Decodes SW_EXITINFO2[31:0].
    pub const fn from_code(code: u64) -> GhcbInputError {
        match code {
            1 => GhcbInputError::NotRegistered,
            2 => GhcbInputError::InvalidUsage,
            3 => GhcbInputError::InvalidScratchArea,
            4 => GhcbInputError::MissingInput,
            5 => GhcbInputError::InvalidInput,
            6 => GhcbInputError::InvalidEvent,
            other => GhcbInputError::Other(other),
        }
    }
}

/// SW_EXITINFO1[31:0] after a GHCB call: 0 = done.
pub const GHCB_RESULT_OK: u32 = 0;
/// SW_EXITINFO1[31:0]: the hypervisor asks the guest to raise the exception
/// described in SW_EXITINFO2 (VMCB EVENTINJ format).
pub const GHCB_RESULT_EXCEPTION: u32 = 1;
/// SW_EXITINFO1[31:0]: the hypervisor rejected the input; SW_EXITINFO2
/// holds a [`GhcbInputError`].
pub const GHCB_RESULT_MALFORMED_INPUT: u32 = 2;

/// The outcome of a GHCB page call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GhcbResult {
    /// The hypervisor handled the event.
    Ok,
    /// The hypervisor asks for an exception.
    Exception {
        /// Vector (EVENTINJ bits 7:0).
        vector: u8,
        /// Error code, if EVENTINJ bit 11 (EV) is set.
        error_code: Option<u32>,
        /// Whether EVENTINJ bit 31 (V) was set; without it the request is
        /// malformed.
        valid: bool,
    },
    /// The hypervisor rejected the input.
    MalformedInput(GhcbInputError),
    /// A SW_EXITINFO1 value the protocol does not define.
    Unknown(u32),
}

impl GhcbResult {
    /// Decodes SW_EXITINFO1 and SW_EXITINFO2 after VMGEXIT.
    pub const fn decode(exit_info1: u64, exit_info2: u64) -> GhcbResult {
        match exit_info1 as u32 {
            GHCB_RESULT_OK => GhcbResult::Ok,
            GHCB_RESULT_EXCEPTION => GhcbResult::Exception {
                vector: exit_info2 as u8,
                error_code: if exit_info2 & (1 << 11) != 0 {
                    Some((exit_info2 >> 32) as u32)
                } else {
                    None
                },
                valid: exit_info2 & (1 << 31) != 0,
            },
            GHCB_RESULT_MALFORMED_INPUT => {
                GhcbResult::MalformedInput(GhcbInputError::from_code(exit_info2 & 0xFFFF_FFFF))
            }
            other => GhcbResult::Unknown(other),
        }
    }
}

/// Direction of a port access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoDirection {
    /// OUT: guest to device.
    Out,
    /// IN: device to guest.
    In,
}

/// SW_EXITINFO1 of an IOIO event: the SVM IOIO intercept information (APM
/// vol. 2 figure 15-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoioInfo {
    /// The port (bits 31:16).
    pub port: u16,
    /// IN (bit 0 = 1) or OUT.
    pub direction: IoDirection,
    /// Operand size in bytes: 1 (bit 4), 2 (bit 5) or 4 (bit 6).
    pub size: u8,
    /// String instruction (INS/OUTS, bit 2).
    pub string: bool,
    /// REP prefix (bit 3).
    pub rep: bool,
    /// Address size in bits: 16 (bit 7), 32 (bit 8) or 64 (bit 9).
    pub address_size: u8,
    /// Segment of a string instruction (bits 12:10; 0 = ES, 3 = DS).
    pub segment: u8,
}

impl IoioInfo {
    /// A plain (non-string) IN/OUT from 64-bit code, as Linux's
    /// `vc_ioio_exitinfo` encodes it.
    pub const fn simple(port: u16, direction: IoDirection, size: u8) -> IoioInfo {
        IoioInfo { port, direction, size, string: false, rep: false, address_size: 64, segment: 0 }
    }

    /// The SW_EXITINFO1 value. Sizes other than 1, 2, 4 (and address sizes
    /// other than 16, 32, 64) encode no size bit, which a hypervisor
    /// rejects.
    pub const fn encode(self) -> u64 {
        let size_bit = match self.size {
            1 => 1 << 4,
            2 => 1 << 5,
            4 => 1 << 6,
            _ => 0,
        };
        let address_bit = match self.address_size {
            16 => 1 << 7,
            32 => 1 << 8,
            64 => 1 << 9,
            _ => 0,
        };
        ((self.port as u64) << 16)
            | ((self.segment as u64 & 7) << 10)
            | address_bit
            | size_bit
            | if self.rep { 1 << 3 } else { 0 }
            | if self.string { 1 << 2 } else { 0 }
            | if matches!(self.direction, IoDirection::In) { 1 } else { 0 }
    }

    /// Decodes SW_EXITINFO1 (the hypervisor's view); `None` if the size or
    /// address-size field does not name exactly one size, or reserved bits
    /// (1, 15:13, 63:32) are set.
    pub const fn decode(info: u64) -> Option<IoioInfo> {
        if info & 0x2 != 0 || bits(info, 15, 13) != 0 || info >> 32 != 0 {
            return None;
        }
        let size = match bits(info, 6, 4) {
            0b001 => 1,
            0b010 => 2,
            0b100 => 4,
            _ => return None,
        };
        let address_size = match bits(info, 9, 7) {
            0b001 => 16,
            0b010 => 32,
            0b100 => 64,
            _ => return None,
        };
        Some(IoioInfo {
            port: (info >> 16) as u16,
            direction: if info & 1 != 0 { IoDirection::In } else { IoDirection::Out },
            size,
            string: info & (1 << 2) != 0,
            rep: info & (1 << 3) != 0,
            address_size,
            segment: bits(info, 12, 10) as u8,
        })
    }
}

/// SW_EXITINFO1 of an MSR event: read.
pub const MSR_EXIT_READ: u64 = 0;
/// SW_EXITINFO1 of an MSR event: write.
pub const MSR_EXIT_WRITE: u64 = 1;

/// AP creation request type (SW_EXITINFO1 bits 31:0, low bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApCreateRequest {
    /// 0: use the VMSA at the next INIT.
    CreateOnInit = 0,
    /// 1: create and run now.
    Create = 1,
    /// 2: destroy.
    Destroy = 2,
}

/// SW_EXITINFO1 of the AP creation event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApCreation {
    /// The request.
    pub request: ApCreateRequest,
    /// The VMPL of the VMSA (bits 19:16). Defined only by hypervisors that
    /// run several VMPLs (KVM planes series, COCONUT-SVSM); 0 elsewhere.
    pub vmpl: u8,
    /// The target vCPU's APIC ID (bits 63:32).
    pub apic_id: u32,
}

impl ApCreation {
    /// The SW_EXITINFO1 value.
    pub const fn encode(self) -> u64 {
        self.request as u64 | ((self.vmpl as u64 & 0xF) << 16) | ((self.apic_id as u64) << 32)
    }

    /// Decodes SW_EXITINFO1 (the hypervisor's view).
    pub const fn decode(info: u64) -> Option<ApCreation> {
        let request = match bits(info, 15, 0) {
            0 => ApCreateRequest::CreateOnInit,
            1 => ApCreateRequest::Create,
            2 => ApCreateRequest::Destroy,
            _ => return None,
        };
        if bits(info, 31, 20) != 0 {
            return None;
        }
        Some(ApCreation { request, vmpl: bits(info, 19, 16) as u8, apic_id: (info >> 32) as u32 })
    }
}

/// Size of the GHCB's shared buffer.
pub const SHARED_BUFFER_SIZE: usize = 2032;
/// Offset of the shared buffer in the GHCB page.
pub const SHARED_BUFFER_OFFSET: usize = 0x800;

/// The GHCB page (protocol version 2, standard usage). Registers sit at
/// their VMSA offsets; a field at byte offset `o` below 0x400 is valid when
/// bit `o / 8` of the 128-bit valid bitmap is set.
///
/// Fields are reached through [`Ghcb::set`] and [`Ghcb::get`], which keep
/// the bitmap right; the struct exists to pin the layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Ghcb {
    reserved_0x000: [u8; 0xCB],
    cpl: u8,
    reserved_0x0cc: [u8; 0x74],
    xss: u64,
    reserved_0x148: [u8; 0x18],
    dr7: u64,
    reserved_0x168: [u8; 0x10],
    rip: u64,
    reserved_0x180: [u8; 0x58],
    rsp: u64,
    reserved_0x1e0: [u8; 0x18],
    rax: u64,
    reserved_0x200: [u8; 0x108],
    rcx: u64,
    rdx: u64,
    rbx: u64,
    reserved_0x320: u64,
    rbp: u64,
    rsi: u64,
    rdi: u64,
    r8: u64,
    r9: u64,
    r10: u64,
    r11: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
    reserved_0x380: [u8; 0x10],
    sw_exit_code: u64,
    sw_exit_info1: u64,
    sw_exit_info2: u64,
    sw_scratch: u64,
    reserved_0x3b0: [u8; 0x38],
    xcr0: u64,
    valid_bitmap: [u64; 2],
    x87_state_gpa: u64,
    reserved_0x408: [u8; 0x3F8],
    shared_buffer: [u8; SHARED_BUFFER_SIZE],
    reserved_0xff0: [u8; 10],
    protocol_version: u16,
    usage: u32,
}

/// A GHCB field covered by the valid bitmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GhcbField {
    /// CPL (one byte at 0x0CB).
    Cpl,
    /// XSS.
    Xss,
    /// DR7.
    Dr7,
    /// RIP.
    Rip,
    /// RSP.
    Rsp,
    /// RAX.
    Rax,
    /// RCX.
    Rcx,
    /// RDX.
    Rdx,
    /// RBX.
    Rbx,
    /// RBP.
    Rbp,
    /// RSI.
    Rsi,
    /// RDI.
    Rdi,
    /// R8.
    R8,
    /// R9.
    R9,
    /// R10.
    R10,
    /// R11.
    R11,
    /// R12.
    R12,
    /// R13.
    R13,
    /// R14.
    R14,
    /// R15.
    R15,
    /// SW_EXITCODE.
    SwExitCode,
    /// SW_EXITINFO1.
    SwExitInfo1,
    /// SW_EXITINFO2.
    SwExitInfo2,
    /// SW_SCRATCH.
    SwScratch,
    /// XCR0.
    Xcr0,
}

impl GhcbField {
    /// Byte offset in the page.
    pub const fn offset(self) -> usize {
        use core::mem::offset_of;
        match self {
            GhcbField::Cpl => offset_of!(Ghcb, cpl),
            GhcbField::Xss => offset_of!(Ghcb, xss),
            GhcbField::Dr7 => offset_of!(Ghcb, dr7),
            GhcbField::Rip => offset_of!(Ghcb, rip),
            GhcbField::Rsp => offset_of!(Ghcb, rsp),
            GhcbField::Rax => offset_of!(Ghcb, rax),
            GhcbField::Rcx => offset_of!(Ghcb, rcx),
            GhcbField::Rdx => offset_of!(Ghcb, rdx),
            GhcbField::Rbx => offset_of!(Ghcb, rbx),
            GhcbField::Rbp => offset_of!(Ghcb, rbp),
            GhcbField::Rsi => offset_of!(Ghcb, rsi),
            GhcbField::Rdi => offset_of!(Ghcb, rdi),
            GhcbField::R8 => offset_of!(Ghcb, r8),
            GhcbField::R9 => offset_of!(Ghcb, r9),
            GhcbField::R10 => offset_of!(Ghcb, r10),
            GhcbField::R11 => offset_of!(Ghcb, r11),
            GhcbField::R12 => offset_of!(Ghcb, r12),
            GhcbField::R13 => offset_of!(Ghcb, r13),
            GhcbField::R14 => offset_of!(Ghcb, r14),
            GhcbField::R15 => offset_of!(Ghcb, r15),
            GhcbField::SwExitCode => offset_of!(Ghcb, sw_exit_code),
            GhcbField::SwExitInfo1 => offset_of!(Ghcb, sw_exit_info1),
            GhcbField::SwExitInfo2 => offset_of!(Ghcb, sw_exit_info2),
            GhcbField::SwScratch => offset_of!(Ghcb, sw_scratch),
            GhcbField::Xcr0 => offset_of!(Ghcb, xcr0),
        }
    }

    /// Width in bytes.
    pub const fn width(self) -> usize {
        match self {
            GhcbField::Cpl => 1,
            _ => 8,
        }
    }

    /// Index of the field's bit in the 128-bit valid bitmap (Linux
    /// `GHCB_BITMAP_IDX`: offset / 8).
    pub const fn valid_bit(self) -> usize {
        self.offset() / 8
    }
}

impl Ghcb {
    /// Writes `value` to `field` and marks it valid. CPL takes the low byte.
    pub fn set(&mut self, field: GhcbField, value: u64) {
        let offset = field.offset();
        let width = field.width();
        self.as_mut_bytes()[offset..offset + width].copy_from_slice(&value.to_le_bytes()[..width]);
        let bit = field.valid_bit();
        self.valid_bitmap[bit / 64] |= 1 << (bit % 64);
    }

    /// The raw value of `field`, valid or not.
    pub fn get(&self, field: GhcbField) -> u64 {
        let offset = field.offset();
        let mut value = [0u8; 8];
        value[..field.width()].copy_from_slice(&self.as_bytes()[offset..offset + field.width()]);
        u64::from_le_bytes(value)
    }

    /// Whether `field` is marked valid.
    pub fn is_valid(&self, field: GhcbField) -> bool {
        let bit = field.valid_bit();
        self.valid_bitmap[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// The value of `field` if it is marked valid.
    pub fn get_valid(&self, field: GhcbField) -> Option<u64> {
        self.is_valid(field).then(|| self.get(field))
    }

    /// The 128-bit valid bitmap.
    pub fn valid_bitmap(&self) -> [u64; 2] {
        self.valid_bitmap
    }

    /// Sets the exit code and information words (all marked valid) and the
    /// protocol version and usage, as every request needs.
    pub fn set_exit(&mut self, code: u64, info1: u64, info2: u64) {
        self.set(GhcbField::SwExitCode, code);
        self.set(GhcbField::SwExitInfo1, info1);
        self.set(GhcbField::SwExitInfo2, info2);
        self.protocol_version = GHCB_PROTOCOL_VERSION;
        self.usage = GHCB_USAGE_STANDARD;
    }

    /// The protocol version field (0xFFA).
    pub fn protocol_version(&self) -> u16 {
        self.protocol_version
    }

    /// The usage field (0xFFC).
    pub fn usage(&self) -> u32 {
        self.usage
    }

    /// The shared buffer (0x800..0xFF0).
    pub fn shared_buffer(&self) -> &[u8; SHARED_BUFFER_SIZE] {
        &self.shared_buffer
    }

    /// The shared buffer, for writing.
    pub fn shared_buffer_mut(&mut self) -> &mut [u8; SHARED_BUFFER_SIZE] {
        &mut self.shared_buffer
    }

    /// The outcome the hypervisor reported.
    pub fn result(&self) -> GhcbResult {
        GhcbResult::decode(self.sw_exit_info1, self.sw_exit_info2)
    }
}

const _: () = {
    use core::mem::{offset_of, size_of};
    // Linux arch/x86/include/asm/svm.h: struct ghcb_save_area is 1032 bytes,
    // struct ghcb is one page, reserved fields at the offsets they name.
    assert!(size_of::<Ghcb>() == 4096);
    assert!(offset_of!(Ghcb, cpl) == 0x0CB);
    assert!(offset_of!(Ghcb, xss) == 0x140);
    assert!(offset_of!(Ghcb, dr7) == 0x160);
    assert!(offset_of!(Ghcb, rip) == 0x178);
    assert!(offset_of!(Ghcb, rsp) == 0x1D8);
    assert!(offset_of!(Ghcb, rax) == 0x1F8);
    assert!(offset_of!(Ghcb, rcx) == 0x308);
    assert!(offset_of!(Ghcb, rbx) == 0x318);
    assert!(offset_of!(Ghcb, rbp) == 0x328);
    assert!(offset_of!(Ghcb, r15) == 0x378);
    assert!(offset_of!(Ghcb, sw_exit_code) == 0x390);
    assert!(offset_of!(Ghcb, sw_exit_info1) == 0x398);
    assert!(offset_of!(Ghcb, sw_exit_info2) == 0x3A0);
    assert!(offset_of!(Ghcb, sw_scratch) == 0x3A8);
    assert!(offset_of!(Ghcb, xcr0) == 0x3E8);
    assert!(offset_of!(Ghcb, valid_bitmap) == 0x3F0);
    assert!(offset_of!(Ghcb, x87_state_gpa) == 0x400);
    assert!(offset_of!(Ghcb, shared_buffer) == SHARED_BUFFER_OFFSET);
    assert!(offset_of!(Ghcb, reserved_0xff0) == 0xFF0);
    assert!(offset_of!(Ghcb, protocol_version) == 0xFFA);
    assert!(offset_of!(Ghcb, usage) == 0xFFC);
};

/// Header of a page-state-change descriptor (in the shared buffer).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct PscHeader {
    /// The next entry to process (advanced by the hypervisor).
    pub cur_entry: u16,
    /// Index of the last entry (inclusive).
    pub end_entry: u16,
    /// Reserved.
    pub reserved: u32,
}

/// One page-state-change entry: cur_page [11:0], GFN [51:12], operation
/// [55:52], page size [56] (0 = 4 KiB, 1 = 2 MiB).
#[repr(transparent)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct PscEntry(pub u64);

impl PscEntry {
    /// An entry for `gfn` (40 bits kept).
    pub const fn new(gfn: u64, operation: PageOperation, large: bool) -> PscEntry {
        PscEntry(
            ((gfn & ((1 << 40) - 1)) << 12)
                | ((operation as u64) << 52)
                | if large { 1 << 56 } else { 0 },
        )
    }

    /// Progress within a 2 MiB entry, in 4 KiB pages (host-updated).
    pub const fn cur_page(self) -> u16 {
        (self.0 & 0xFFF) as u16
    }

    /// The guest frame number.
    pub const fn gfn(self) -> u64 {
        bits(self.0, 51, 12)
    }

    /// The operation, if it is a defined one.
    pub const fn operation(self) -> Option<PageOperation> {
        PageOperation::from_bits(bits(self.0, 55, 52))
    }

    /// Whether the entry covers a 2 MiB page.
    pub const fn is_large(self) -> bool {
        self.0 & (1 << 56) != 0
    }

    /// Reserved bits 63:57.
    pub const fn reserved(self) -> u64 {
        self.0 >> 57
    }
}

/// Most entries one descriptor holds (Linux `VMGEXIT_PSC_MAX_COUNT`).
pub const PSC_MAX_ENTRIES: usize = 253;

/// A page-state-change descriptor: exactly fills the shared buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct PscDescriptor {
    /// The header.
    pub header: PscHeader,
    /// The entries (only `0..=end_entry` are meaningful).
    pub entries: [PscEntry; PSC_MAX_ENTRIES],
}

const _: () = assert!(core::mem::size_of::<PscDescriptor>() == SHARED_BUFFER_SIZE);

/// SW_EXITINFO2 of a failed page state change: bad header (KVM).
pub const PSC_ERROR_INVALID_HEADER: u64 = (1 << 32) | 1;
/// SW_EXITINFO2 of a failed page state change: bad entry (KVM).
pub const PSC_ERROR_INVALID_ENTRY: u64 = (1 << 32) | 2;
/// SW_EXITINFO2 of a failed page state change: generic error (KVM).
pub const PSC_ERROR_GENERIC: u64 = 0x100 << 32;

#[cfg(test)]
mod tests {
    use zerocopy::FromZeros;

    use super::*;

    #[test]
    fn msr_requests_match_linux_macros() {
        // Values of Linux's macros, computed by hand from sev-common.h.
        assert_eq!(MsrRequest::SevInfo.encode(), 0x002);
        // GHCB_CPUID_REQ(0x8000001F, GHCB_CPUID_REQ_EBX)
        let cpuid = MsrRequest::Cpuid { function: 0x8000_001F, register: CpuidRegister::Ebx };
        assert_eq!(cpuid.encode(), 0x8000_001F_4000_0004);
        assert_eq!(MsrRequest::ApResetHold.encode(), 0x006);
        assert_eq!(MsrRequest::PreferredGhcbGpa.encode(), 0x010);
        // GHCB_MSR_REG_GPA_REQ_VAL(0x81234)
        assert_eq!(MsrRequest::RegisterGhcbGpa { gfn: 0x8_1234 }.encode(), 0x8123_4012);
        // GHCB_MSR_PSC_REQ_GFN(0x81234, SNP_PAGE_STATE_SHARED)
        let psc = MsrRequest::PageStateChange { gfn: 0x8_1234, operation: PageOperation::Shared };
        assert_eq!(psc.encode(), 0x0020_0000_8123_4014);
        let private =
            MsrRequest::PageStateChange { gfn: 0x8_1234, operation: PageOperation::Private };
        assert_eq!(private.encode(), 0x0010_0000_8123_4014);
        // GHCB_MSR_VMPL_REQ_LEVEL(0) and (2): the fixed macro, value in [39:32].
        assert_eq!(MsrRequest::RunVmpl { vmpl: 0 }.encode(), 0x016);
        assert_eq!(MsrRequest::RunVmpl { vmpl: 2 }.encode(), 0x2_0000_0016);
        assert_eq!(MsrRequest::HvFeatures.encode(), 0x080);
        // GHCB_MSR_TERM_REQ | GHCB_SEV_TERM_REASON(1, GHCB_TERM_NOT_VMPL0)
        let linux = MsrRequest::Terminate(TerminationReason { set: 1, code: 3 });
        assert_eq!(linux.encode(), 0x3_1100);
        assert_eq!(MsrRequest::Terminate(TerminationReason::SVSM_EXIT_FAILURE).encode(), 0x11_3100);
    }

    #[test]
    fn msr_requests_round_trip_and_reject_reserved_bits() {
        let requests = [
            MsrRequest::SevInfo,
            MsrRequest::Cpuid { function: 7, register: CpuidRegister::Edx },
            MsrRequest::ApResetHold,
            MsrRequest::PreferredGhcbGpa,
            MsrRequest::RegisterGhcbGpa { gfn: 0xF_FFFF_FFFF_FFFF },
            MsrRequest::PageStateChange { gfn: 0xFF_FFFF_FFFF, operation: PageOperation::Private },
            MsrRequest::RunVmpl { vmpl: 3 },
            MsrRequest::HvFeatures,
            MsrRequest::Terminate(TerminationReason { set: 0xF, code: 0xFF }),
        ];
        for request in requests {
            assert_eq!(MsrRequest::decode(request.encode()), Ok(request), "{request:?}");
        }
        assert_eq!(MsrRequest::decode(0x8123_4000), Err(MsrDecodeError::GhcbGpa(0x8123_4000)));
        assert_eq!(MsrRequest::decode(0x1002), Err(MsrDecodeError::ReservedBits(0x1000)));
        assert_eq!(MsrRequest::decode(0x0030_0000_0000_1014), Err(MsrDecodeError::BadOperation(3)));
        assert!(matches!(
            MsrRequest::decode(0x0120_0000_0000_1014),
            Err(MsrDecodeError::ReservedBits(_))
        ));
        assert!(matches!(
            MsrRequest::decode(0x1_0000_0000_0016 | (2 << 32)),
            Err(MsrDecodeError::ReservedBits(_))
        ));
        assert!(matches!(MsrRequest::decode(0x1016), Err(MsrDecodeError::ReservedBits(_))));
        assert_eq!(MsrRequest::decode(0x001), Err(MsrDecodeError::UnknownCode(1)));
        assert_eq!(MsrRequest::decode(0xFFF), Err(MsrDecodeError::UnknownCode(0xFFF)));
    }

    #[test]
    fn msr_responses_match_linux_macros() {
        // GHCB_MSR_SEV_INFO(2, 1, 51)
        let info = MsrResponse::SevInfo { max_version: 2, min_version: 1, c_bit: 51 };
        assert_eq!(info.encode(), 0x0002_0001_3300_0001);
        // GHCB_MSR_PREF_GPA_NONE in [63:12] with response code 0x011.
        assert_eq!(MsrResponse::PreferredGhcbGpa { gfn: None }.encode(), 0xFFFF_FFFF_FFFF_F011);
        // KVM's feature answer SNP | AP_CREATION | MULTI_VMPL.
        let features = MsrResponse::HvFeatures(HvFeatures(0x23));
        assert_eq!(features.encode(), 0x2_3081);
        // PSC error in [63:32].
        assert_eq!(MsrResponse::PageStateChange { error: 5 }.encode(), 0x5_0000_0015);
        assert_eq!(MsrResponse::RunVmpl { error: 0 }.encode(), 0x017);
        assert_eq!(
            MsrResponse::Cpuid { register: CpuidRegister::Ebx, value: 0x33 }.encode(),
            0x33_4000_0005
        );
        let responses = [
            info,
            MsrResponse::Cpuid { register: CpuidRegister::Ecx, value: 0xDEAD_BEEF },
            MsrResponse::ApResetHold { result: 1 },
            MsrResponse::PreferredGhcbGpa { gfn: None },
            MsrResponse::PreferredGhcbGpa { gfn: Some(0x8_1234) },
            MsrResponse::RegisterGhcbGpa { gfn: 0x8_1234 },
            MsrResponse::PageStateChange { error: 0xFFFF_FFFF },
            MsrResponse::RunVmpl { error: 1 },
            features,
        ];
        for response in responses {
            assert_eq!(MsrResponse::decode(response.encode()), Ok(response), "{response:?}");
        }
        assert_eq!(MsrResponse::decode(0x002), Err(MsrDecodeError::UnknownCode(2)));
        assert_eq!(MsrResponse::decode(0x5000), Err(MsrDecodeError::GhcbGpa(0x5000)));
        assert_eq!(MsrRequest::RunVmpl { vmpl: 0 }.response_code(), Some(0x017));
        assert_eq!(MsrRequest::Terminate(TerminationReason::GENERAL).response_code(), None);
    }

    #[test]
    fn termination_reason_encodings() {
        let reason = TerminationReason { set: 1, code: 3 };
        // SVM_VMGEXIT_TERM_REASON(1, 3): set in [3:0], code in [11:4].
        assert_eq!(reason.exit_info1(), 0x31);
        assert_eq!(TerminationReason::from_exit_info1(0x31), reason);
        assert_eq!(reason.meaning(), "Linux: not running at VMPL0");
        assert_eq!(TerminationReason { set: 9, code: 9 }.meaning(), "no meaning known");
    }

    #[test]
    fn ghcb_field_offsets_and_valid_bits_match_linux() {
        // GHCB_BITMAP_IDX(field) = offsetof(ghcb_save_area, field) / 8.
        let expected = [
            (GhcbField::Cpl, 0x0CB, 25),
            (GhcbField::Xss, 0x140, 40),
            (GhcbField::Dr7, 0x160, 44),
            (GhcbField::Rip, 0x178, 47),
            (GhcbField::Rsp, 0x1D8, 59),
            (GhcbField::Rax, 0x1F8, 63),
            (GhcbField::Rcx, 0x308, 97),
            (GhcbField::Rdx, 0x310, 98),
            (GhcbField::Rbx, 0x318, 99),
            (GhcbField::Rbp, 0x328, 101),
            (GhcbField::Rsi, 0x330, 102),
            (GhcbField::Rdi, 0x338, 103),
            (GhcbField::R8, 0x340, 104),
            (GhcbField::R15, 0x378, 111),
            (GhcbField::SwExitCode, 0x390, 114),
            (GhcbField::SwExitInfo1, 0x398, 115),
            (GhcbField::SwExitInfo2, 0x3A0, 116),
            (GhcbField::SwScratch, 0x3A8, 117),
            (GhcbField::Xcr0, 0x3E8, 125),
        ];
        for (field, offset, bit) in expected {
            assert_eq!(field.offset(), offset, "{field:?}");
            assert_eq!(field.valid_bit(), bit, "{field:?}");
            let mut ghcb = Ghcb::new_zeroed();
            ghcb.set(field, 0xA5);
            assert_eq!(ghcb.as_bytes()[offset], 0xA5, "{field:?}");
            // The bitmap at 0x3F0 holds exactly this bit.
            let bitmap = &ghcb.as_bytes()[0x3F0..0x400];
            for (i, byte) in bitmap.iter().enumerate() {
                let want = if i == bit / 8 { 1 << (bit % 8) } else { 0 };
                assert_eq!(*byte, want, "{field:?} bitmap byte {i}");
            }
            assert_eq!(ghcb.get_valid(field), Some(0xA5));
        }
    }

    /// A GHCB exchange, golden bytes: the SVSM writes 'A' to COM1 with
    /// `out dx, al` semantics. EXITINFO1 per Linux `vc_ioio_exitinfo`:
    /// port << 16 | IOIO_DATA_8 (bit 4) | IOIO_ADDR_64 (bit 9).
    #[test]
    fn ioio_request_golden_bytes() {
        let mut ghcb = Ghcb::new_zeroed();
        ghcb.set(GhcbField::Rax, u64::from(b'A'));
        let info = IoioInfo::simple(0x3F8, IoDirection::Out, 1).encode();
        assert_eq!(info, 0x03F8_0210);
        ghcb.set_exit(exit_code::IOIO, info, 0);
        let mut expected = [0u8; 4096];
        expected[0x1F8] = 0x41;
        expected[0x390] = 0x7B;
        expected[0x398..0x3A0].copy_from_slice(&0x03F8_0210u64.to_le_bytes());
        // Bits 63 (RAX), 114, 115, 116 (exit code, info1, info2).
        expected[0x3F0..0x3F8].copy_from_slice(&(1u64 << 63).to_le_bytes());
        expected[0x3F8..0x400].copy_from_slice(&(0b111u64 << 50).to_le_bytes());
        expected[0xFFA] = 2;
        assert_eq!(ghcb.as_bytes(), &expected);
    }

    #[test]
    fn ioio_info_round_trip_and_linux_string_form() {
        // REP OUTSB from 64-bit code: OUTS (bit 2) | REP | DATA_8 | ADDR_64 | SEG_DS.
        let outs = IoioInfo {
            port: 0x3F8,
            direction: IoDirection::Out,
            size: 1,
            string: true,
            rep: true,
            address_size: 64,
            segment: 3,
        };
        assert_eq!(outs.encode(), 0x03F8_0C00 | 0x200 | 0x10 | 0x8 | 0x4);
        assert_eq!(IoioInfo::decode(outs.encode()), Some(outs));
        let inl = IoioInfo::simple(0xCFC, IoDirection::In, 4);
        assert_eq!(inl.encode(), 0x0CFC_0241);
        assert_eq!(IoioInfo::decode(inl.encode()), Some(inl));
        assert_eq!(IoioInfo::decode(0x0CFC_0261), None, "two size bits");
        assert_eq!(IoioInfo::decode(0x0CFC_0001), None, "no size bit");
        assert_eq!(IoioInfo::decode(0x1_0CFC_0241), None, "bit 32");
        assert_eq!(IoioInfo::simple(1, IoDirection::Out, 3).encode() & 0x70, 0);
    }

    #[test]
    fn ghcb_results() {
        assert_eq!(GhcbResult::decode(0, 0), GhcbResult::Ok);
        assert_eq!(GhcbResult::decode(0xFFFF_FFFF_0000_0000, 7), GhcbResult::Ok, "upper half");
        // #GP with error code 0: vector 13, type 3 (exception), EV, V.
        assert_eq!(
            GhcbResult::decode(1, 0x8000_0B0D),
            GhcbResult::Exception { vector: 13, error_code: Some(0), valid: true }
        );
        assert_eq!(
            GhcbResult::decode(1, 0x306),
            GhcbResult::Exception { vector: 6, error_code: None, valid: false }
        );
        assert_eq!(
            GhcbResult::decode(2, 1),
            GhcbResult::MalformedInput(GhcbInputError::NotRegistered)
        );
        assert_eq!(
            GhcbResult::decode(2, 0xFFFF_FFFF_0000_0004),
            GhcbResult::MalformedInput(GhcbInputError::MissingInput)
        );
        assert_eq!(GhcbResult::decode(3, 0), GhcbResult::Unknown(3));
        for code in 1..=7 {
            assert_eq!(GhcbInputError::from_code(code).code(), code);
        }
    }

    #[test]
    fn psc_descriptor_layout() {
        // struct psc_entry: cur_page:12, gfn:40, operation:4, pagesize:1.
        let entry = PscEntry::new(0x8_1234, PageOperation::Shared, false);
        assert_eq!(entry.0, 0x0020_0000_8123_4000);
        let large = PscEntry::new(0x800, PageOperation::Private, true);
        assert_eq!(large.0, 0x0110_0000_0080_0000);
        assert!(large.is_large());
        assert_eq!(large.gfn(), 0x800);
        assert_eq!(large.operation(), Some(PageOperation::Private));
        assert_eq!(PscEntry(0x1FF | (5 << 52)).operation(), None);
        assert_eq!(PscEntry(0x1FF).cur_page(), 0x1FF);
        assert_eq!(PscEntry(1 << 60).reserved(), 0x8);
        let mut descriptor = PscDescriptor::new_zeroed();
        descriptor.header = PscHeader { cur_entry: 0, end_entry: 1, reserved: 0 };
        descriptor.entries[0] = entry;
        descriptor.entries[1] = large;
        let bytes = descriptor.as_bytes();
        assert_eq!(&bytes[0..8], &[0, 0, 1, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[8..16], &0x0020_0000_8123_4000u64.to_le_bytes());
        assert_eq!(&bytes[16..24], &0x0110_0000_0080_0000u64.to_le_bytes());
        assert_eq!(PSC_ERROR_INVALID_ENTRY, 0x1_0000_0002);
    }

    #[test]
    fn ap_creation_exit_info() {
        // COCONUT's create request: 1 | VMPL 2 << 16 | APIC ID 3 << 32.
        let create = ApCreation { request: ApCreateRequest::Create, vmpl: 2, apic_id: 3 };
        assert_eq!(create.encode(), 0x3_0002_0001);
        assert_eq!(ApCreation::decode(create.encode()), Some(create));
        assert_eq!(ApCreation::decode(3), None, "request 3 does not exist");
        assert_eq!(ApCreation::decode(0x10_0001), None, "bit 20");
    }

    #[test]
    fn hv_features() {
        let kvm_upstream = HvFeatures(HvFeatures::SNP | HvFeatures::AP_CREATION);
        assert!(kvm_upstream.has(HvFeatures::SNP));
        assert!(!kvm_upstream.has(HvFeatures::MULTI_VMPL));
        assert_eq!(HvFeatures::MULTI_VMPL, 0x20);
    }
}
