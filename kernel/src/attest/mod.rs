//! Attestation: how the SVSM obtains SNP attestation reports that cover its
//! services.
//!
//! - [`guest_msg`]: AES-256-GCM sealing of SNP guest messages under a VMPCK.
//! - [`client`]: MSG_REPORT_REQ at VMPL0 with VMPCK0, sequence numbers that
//!   never repeat, and a key that is wiped on the first failure.
//! - [`services`]: the registry of services that appear in the services
//!   manifest (the vTPM registers its EK public area there).
//! - [`dev_psp`] (feature `dev-psp`): the development PSP that answers the
//!   client on the dev platform.
//!
//! The attestation protocol itself (protocol 1, the guest's calls) is
//! `crate::protocols::attest`.

pub mod client;
#[cfg(any(test, feature = "dev-psp"))]
pub mod dev_psp;
pub mod guest_msg;
pub mod services;
