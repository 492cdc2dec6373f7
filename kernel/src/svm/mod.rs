//! The dev platform's machinery: what the SVSM needs to play the part of
//! SNP hardware and the hypervisor on a CPU with AMD SVM and nested paging.
//!
//! - [`rmp`]: the emulated RMP behind PVALIDATE and RMPADJUST.
//! - [`decode`]: the guest page walker and the decoder of the instructions
//!   whose length the CPU does not report.
//! - [`ghcb`]: the hypervisor's answers to the guest's VMGEXITs.
//! - [`guest_cpuid`]: the CPUID page an SNP-aware guest gets.
//! - [`fpu`]: a guest's x87/SSE/AVX state between its VMSA and the CPU.
//! - [`fw_cfg`]: the guest's view of QEMU's fw_cfg, without the SVSM's RAM.
//! - [`acpi_power`]: the guest's ACPI power-off, seen by the SVSM first.
//! - [`npt`]: the guest's nested page tables.
//!
//! Everything here that is pure logic builds and is tested on the host; the
//! parts that execute SVM instructions are bare-metal only.

pub mod acpi_power;
#[cfg(target_os = "none")]
pub mod ap;
pub mod decode;
pub mod fpu;
pub mod fw_cfg;
pub mod ghcb;
pub mod guest_cpuid;
pub mod npt;
pub mod rmp;
#[cfg(target_os = "none")]
pub mod vmrun;
