//! Stage2: the SVSM's boot loader.
//!
//! It runs once per boot, entered in 32-bit protected mode from the IGVM
//! start context (the same entry on every platform), switches to long mode,
//! validates the kernel region on SNP, loads the kernel ELF into it, builds
//! the kernel's first page tables and a [`abi::boot::KernelBootInfo`], and
//! jumps to the kernel.
//!
//! This library holds the logic, written against small traits so it runs in
//! host unit tests; the bare-metal binary (`src/main.rs`) supplies the real
//! memory, PVALIDATE and console.

#![cfg_attr(target_os = "none", no_std)]

pub mod handover;
pub mod load;
pub mod validate;
