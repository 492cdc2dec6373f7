//! The SVSM protocols the guest calls (SVSM specification §6-8).
//!
//! (Created by the attestation work with only its own protocol; the request
//! loop's dispatch and the core protocol belong here too.)

pub mod attest;
