//! The SVSM kernel.
//!
//! Runs at VMPL0 on SNP (or as the hypervisor of the guest on the dev
//! platform) and serves the guest's SVSM calls. The library holds the
//! kernel's logic and builds on the host too, so `cargo test` runs its unit
//! tests there; the bare-metal binary (`src/main.rs`) adds the entry point,
//! and tests that need the real machine run inside the booted kernel
//! ([`testing`]).

#![cfg_attr(target_os = "none", no_std)]

extern crate alloc;

pub mod attest;
pub mod console;
pub mod cpu;
pub mod crb;
pub mod guest_mem;
pub mod mm;
pub mod protocols;
pub mod requests;
pub mod sev;
pub mod svm;
pub mod testing;
pub mod vtpm;

#[cfg(target_os = "none")]
pub mod boot;
#[cfg(target_os = "none")]
pub mod guest_start;
pub mod platform;

#[cfg(not(target_os = "none"))]
pub mod host_doubles;
