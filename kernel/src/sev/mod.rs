//! AMD SEV-SNP: what the SVSM needs to run as an SNP guest at VMPL0.
//!
//! - [`msr_protocol`]: the GHCB MSR protocol (SEV information, hypervisor
//!   features, GHCB registration, page state change, Run-VMPL,
//!   termination);
//! - [`ghcb`]: the GHCB page protocol (port I/O, MSRs, page state changes,
//!   AP creation, guest requests);
//! - [`setup`]: the checks of the hypervisor and of VMPL0 at start;
//! - [`shared`]: making a private page shared (the GHCB page);
//! - [`status`]: the SVSM's checks of its SEV_STATUS;
//! - [`cpuid`]: CPUID from the measured CPUID page;
//! - [`vc`]: the #VC handler's decoder and emulation;
//! - [`secrets`]: the secrets page, private to the SVSM;
//! - [`guest`]: the guest's boot VMSA, secrets and CPUID pages;
//! - [`ap`]: the VMPL0 VMSA of a secondary SVSM CPU.
//!
//! All of it is written against small traits ([`MsrProtocol`],
//! [`GhcbTransport`], [`PageOps`], [`VcServices`]) and tested on the host
//! against fakes; the instructions themselves (VMGEXIT, PVALIDATE,
//! RMPADJUST) are in `hardware`, built only for the bare-metal kernel.
//!
//! [`MsrProtocol`]: msr_protocol::MsrProtocol
//! [`GhcbTransport`]: ghcb::GhcbTransport
//! [`PageOps`]: shared::PageOps
//! [`VcServices`]: vc::VcServices

pub mod ap;
pub mod cpuid;
pub mod ghcb;
pub mod guest;
pub mod msr_protocol;
pub mod secrets;
pub mod setup;
pub mod shared;
pub mod status;
pub mod vc;

#[cfg(target_os = "none")]
pub mod hardware;

#[cfg(test)]
mod fake;
