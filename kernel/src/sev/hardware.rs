//! The SNP instructions themselves, for the bare-metal kernel: VMGEXIT with
//! the GHCB MSR, the shared GHCB page, PVALIDATE and RMPADJUST (both guarded
//! by the exception table, so a fault becomes an error), SEV_STATUS, and the
//! page operations that make a private page shared.
//!
//! Everything above this module is host-tested against fakes of the traits
//! implemented here.

use abi::ghcb::{Ghcb, MSR_GHCB};
use abi::paging::{MapError, PageFlags};
use abi::sev_status::{MSR_SEV_STATUS, SevStatus};
use abi::snp_instr::{
    PvalidateError, PvalidateInput, RmpAdjustError, RmpAdjustInput, RmpPageSize, pvalidate_result,
    rmpadjust_result,
};
use zerocopy::IntoBytes;

use super::ghcb::GhcbTransport;
use super::msr_protocol::MsrProtocol;
use super::shared::PageOps;
use crate::cpu::registers::{invlpg, rdmsr, wrmsr};
use crate::mm;

/// Reads SEV_STATUS (a plain RDMSR: the MSR is not intercepted, it raises
/// no #VC).
pub fn read_sev_status() -> SevStatus {
    // SAFETY: SEV_STATUS exists on every CPU that runs an SEV guest, and the
    // kernel reads it only when the boot parameters say SNP.
    SevStatus(unsafe { rdmsr(MSR_SEV_STATUS) })
}

/// Executes VMGEXIT.
fn vmgexit() {
    // SAFETY: VMGEXIT hands control to the hypervisor, which reads the GHCB
    // MSR and, for the page protocol, the shared GHCB page; it changes no
    // memory the compiler knows about (the shared page is only reached
    // through volatile accesses).
    unsafe { core::arch::asm!("rep vmmcall", options(nostack)) };
}

/// The GHCB MSR protocol on this CPU.
pub struct GhcbMsr;

impl MsrProtocol for GhcbMsr {
    fn exchange(&mut self, request: u64) -> u64 {
        // SAFETY: the GHCB MSR exists on SEV-ES/SNP guests; any value may be
        // written (it is a request to the hypervisor, not CPU state), and
        // the page protocol writes its GPA back before every use.
        unsafe {
            wrmsr(MSR_GHCB, request);
            vmgexit();
            rdmsr(MSR_GHCB)
        }
    }
}

/// The registered, shared GHCB page.
pub struct SharedGhcbPage {
    va: u64,
    gpa: u64,
}

impl SharedGhcbPage {
    /// The page at `va` (mapped without the C-bit), guest-physical `gpa`.
    ///
    /// # Safety
    /// The page must be mapped shared at `va`, registered with the
    /// hypervisor as the GHCB, and used by nothing else.
    pub unsafe fn new(va: u64, gpa: u64) -> SharedGhcbPage {
        SharedGhcbPage { va, gpa }
    }
}

impl GhcbTransport for SharedGhcbPage {
    fn gpa(&self) -> u64 {
        self.gpa
    }

    fn exchange(&mut self, ghcb: &mut Ghcb) {
        let shared = self.va as *mut u64;
        for (i, word) in ghcb.as_bytes().chunks_exact(8).enumerate() {
            let value = u64::from_le_bytes(word.try_into().expect("8-byte chunk"));
            // SAFETY: per `new`, the page is mapped and ours; volatile because
            // the hypervisor reads it.
            unsafe { shared.add(i).write_volatile(value) };
        }
        GhcbMsr.exchange(self.gpa);
        for (i, word) in ghcb.as_mut_bytes().chunks_exact_mut(8).enumerate() {
            // SAFETY: as above; the hypervisor may have written the page.
            let value = unsafe { shared.add(i).read_volatile() };
            word.copy_from_slice(&value.to_le_bytes());
        }
    }
}

unsafe extern "sysv64" {
    /// PVALIDATE; returns EAX | CF << 32, or u64::MAX if it faulted.
    fn sev_pvalidate(va: u64, size: u64, validate: u64) -> u64;
    /// RMPADJUST; returns EAX, or u64::MAX if it faulted.
    fn sev_rmpadjust(va: u64, size: u64, attributes: u64) -> u64;
}

core::arch::global_asm!(
    r#"
    .section .text.sev, "ax"
    .global sev_pvalidate
    sev_pvalidate:
        mov rax, rdi
        mov rcx, rsi
    1:  .byte 0xf2, 0x0f, 0x01, 0xff
        setc dl
        movzx edx, dl
        shl rdx, 32
        mov eax, eax
        or rax, rdx
        ret
    2:  mov rax, -1
        ret

    .global sev_rmpadjust
    sev_rmpadjust:
        mov rax, rdi
        mov rcx, rsi
    3:  .byte 0xf3, 0x0f, 0x01, 0xfe
        mov eax, eax
        ret
    4:  mov rax, -1
        ret

    .section .exception_table, "a"
    .balign 8
    .quad 1b, 2b
    .quad 3b, 4b
    "#
);

/// PVALIDATE. A fault of the instruction (an unmapped address, not VMPL0)
/// is reported as FAIL_INPUT.
///
/// # Safety
/// Validating a page the SVSM or the guest relies on being invalid (or
/// rescinding one in use) breaks memory the caller must own; `input.va`
/// must map the intended guest-physical page.
pub unsafe fn pvalidate(input: PvalidateInput) -> Result<(), PvalidateError> {
    let [rax, rcx, rdx] = input.registers();
    // SAFETY: the instruction touches only the RMP entry of the page; the
    // caller vouches for the page. A fault resumes at the fixup.
    let result = unsafe { sev_pvalidate(rax, rcx, rdx) };
    if result == u64::MAX {
        return Err(PvalidateError::Input);
    }
    pvalidate_result(result as u32, result >> 32 != 0)
}

/// RMPADJUST. A fault of the instruction is reported as FAIL_INPUT.
///
/// # Safety
/// Granting a lower VMPL access to a page (or making it a VMSA) exposes it
/// to the guest; the caller must own that decision.
pub unsafe fn rmpadjust(input: RmpAdjustInput) -> Result<(), RmpAdjustError> {
    let [rax, rcx, rdx] = input.registers();
    // SAFETY: per the function's contract; a fault resumes at the fixup.
    let result = unsafe { sev_rmpadjust(rax, rcx, rdx) };
    if result == u64::MAX {
        return Err(RmpAdjustError::Input);
    }
    rmpadjust_result(result as u32)
}

/// Size of a cache line for CLFLUSH.
const CACHE_LINE: u64 = 64;

/// Page operations on the SVSM's own frames, through the direct map.
pub struct DirectMapPages;

impl PageOps for DirectMapPages {
    fn flush_cache(&mut self, va: u64) {
        for line in (va..va + abi::layout::PAGE_SIZE).step_by(CACHE_LINE as usize) {
            // SAFETY: CLFLUSH of a mapped kernel address writes the line back
            // and evicts it; memory contents do not change.
            unsafe { core::arch::asm!("clflush [{}]", in(reg) line, options(nostack)) };
        }
        // SAFETY: a fence orders the flushes before what follows.
        unsafe { core::arch::asm!("mfence", options(nostack)) };
    }

    fn rescind(&mut self, va: u64) -> Result<(), PvalidateError> {
        let input = PvalidateInput { va, size: RmpPageSize::Size4K, validate: false };
        // SAFETY: the callers of `make_shared` pass a frame they own and no
        // longer use as private memory.
        unsafe { pvalidate(input) }
    }

    fn map_shared(&mut self, va: u64) -> Result<(), MapError> {
        mm::with_kernel_tables(|mapper, tables| {
            mapper.split(tables, va)?;
            let flags = mapper.translate(tables, va).ok_or(MapError::NotMapped)?.flags;
            let shared = flags.without(PageFlags::ACCESSED | PageFlags::DIRTY) | PageFlags::SHARED;
            mapper.protect(tables, va, shared)?;
            invlpg(va);
            Ok(())
        })
    }
}
