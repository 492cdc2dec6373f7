//! The two SNP instructions stage2 needs: PVALIDATE, and the GHCB MSR
//! protocol's termination request. Only executed when the measured boot
//! parameters say the image runs on SNP.

use abi::paging::PageSize;
use stage2::validate::{PageValidator, PvalidateError};

/// PVALIDATE through the real instruction.
pub struct Pvalidate;

impl PageValidator for Pvalidate {
    fn validate(&mut self, addr: u64, size: PageSize) -> Result<(), PvalidateError> {
        let size_code: u64 = if size == PageSize::Size2M { 1 } else { 0 };
        let result: u64;
        let carry: u8;
        // SAFETY: PVALIDATE (F2 0F 01 FF) changes only the RMP state of the
        // identity-mapped page at RAX; stage2 validates the kernel region,
        // which holds nothing yet.
        unsafe {
            core::arch::asm!(
                ".byte 0xf2, 0x0f, 0x01, 0xff",
                "setc {carry}",
                carry = out(reg_byte) carry,
                inout("rax") addr => result,
                in("rcx") size_code,
                in("rdx") 1u64,
                options(nostack),
            );
        }
        match (result as u32, carry) {
            (0, 0) => Ok(()),
            (0, _) => Err(PvalidateError::Unchanged),
            (1, _) => Err(PvalidateError::Input),
            (6, _) => Err(PvalidateError::SizeMismatch),
            (code, _) => Err(PvalidateError::Other(code)),
        }
    }
}

/// GHCB MSR protocol termination request (0x100), reason set 0, code 0.
pub fn terminate() -> ! {
    const GHCB_MSR: u32 = 0xC001_0130;
    const TERMINATE_REQUEST: u64 = 0x100;
    loop {
        // SAFETY: writing the GHCB MSR and VMGEXIT asks the hypervisor to
        // end the VM; nothing in this VM's memory changes.
        unsafe {
            core::arch::asm!(
                "wrmsr",
                "rep vmmcall",
                in("ecx") GHCB_MSR,
                in("eax") TERMINATE_REQUEST as u32,
                in("edx") 0u32,
                options(nostack),
            );
        }
    }
}
