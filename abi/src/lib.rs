//! Binary layouts shared across the project: the boot layout the xtask writes
//! into the IGVM file and stage2 and the kernel read, the hand-over from
//! stage2 to the kernel, and the ELF reader both the loader and the tools use.
//!
//! Every structure here crosses a boundary between programs, so each is
//! written once, with `zerocopy` derives and compile-time size and offset
//! checks. Nothing here trusts its input: parsers return errors, never panic.

#![no_std]
#![forbid(unsafe_code)]

pub mod attestation;
pub mod boot;
pub mod cpuid_page;
pub mod elf;
pub mod ghcb;
pub mod layout;
pub mod paging;
pub mod secrets;
pub mod sev_status;
pub mod snp_instr;
pub mod svsm;
pub mod vmcb;
pub mod vmsa;
