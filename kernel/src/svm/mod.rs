//! The dev platform's machinery: what the SVSM needs to play the part of
//! SNP hardware and the hypervisor on a CPU with AMD SVM and nested paging.
//!
//! - [`rmp`]: the emulated RMP behind PVALIDATE and RMPADJUST.
//!
//! Everything here that is pure logic builds and is tested on the host; the
//! parts that execute SVM instructions are bare-metal only.

pub mod rmp;
