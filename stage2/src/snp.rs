//! The two SNP operations stage2 needs: PVALIDATE, and the GHCB MSR
//! protocol's termination request. Only executed when the measured boot
//! parameters say the image runs on SNP. Encodings and return codes come
//! from `abi::snp_instr` and `abi::ghcb`, shared with the kernel.

use abi::ghcb::{MSR_GHCB, MsrRequest, TerminationReason};
use abi::paging::PageSize;
use abi::snp_instr::{self, PvalidateInput, RmpPageSize};
use stage2::validate::{PageValidator, PvalidateError};

/// PVALIDATE through the real instruction.
pub struct Pvalidate;

impl PageValidator for Pvalidate {
    fn validate(&mut self, addr: u64, size: PageSize) -> Result<(), PvalidateError> {
        let size = if size == PageSize::Size2M { RmpPageSize::Size2M } else { RmpPageSize::Size4K };
        let [rax, rcx, rdx] = PvalidateInput { va: addr, size, validate: true }.registers();
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
                inout("rax") rax => result,
                in("rcx") rcx,
                in("rdx") rdx,
                options(nostack),
            );
        }
        snp_instr::pvalidate_result(result as u32, carry != 0)
    }
}

/// GHCB MSR protocol termination request with this SVSM's "stage2 failed"
/// reason (set 3, code 0x24), so a host's log says where the boot stopped.
pub fn terminate() -> ! {
    let request = MsrRequest::Terminate(TerminationReason::SVSM_STAGE2_FAILED).encode();
    loop {
        // SAFETY: writing the GHCB MSR and VMGEXIT asks the hypervisor to
        // end the VM; nothing in this VM's memory changes.
        unsafe {
            core::arch::asm!(
                "wrmsr",
                "rep vmmcall",
                in("ecx") MSR_GHCB,
                in("eax") request as u32,
                in("edx") (request >> 32) as u32,
                options(nostack),
            );
        }
    }
}
