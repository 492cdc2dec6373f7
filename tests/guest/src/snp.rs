//! What makes the guest SNP-aware: SEV_STATUS and the C-bit (found by the
//! reset code), the GHCB MSR protocol, SVSM calls (calling area + Run-VMPL
//! through the MSR protocol + VMGEXIT), and, when SNP encryption is really
//! active, a GHCB page through which the #VC handler forwards port I/O.
//! On the dev platform the SVSM intercepts SEV_STATUS, the GHCB MSR and
//! VMGEXIT, port I/O runs directly and no #VC is ever raised; the same
//! binary runs on SNP.

use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use abi::ghcb::{
    Ghcb, GhcbField, GhcbResult, IoDirection, MSR_GHCB, MsrRequest, MsrResponse, PageOperation,
    exit_code,
};
use abi::layout::PAGE_SIZE;
use abi::sev_status::{SevStatus, SevStatusBit};
use abi::svsm::{
    CALL_PENDING, CALL_PENDING_OFFSET, CoreCall, ListHeader, PROTOCOL_CORE, PageSize,
    PvalidateEntry, SVSM_SUCCESS, request_rax,
};
use zerocopy::{FromZeros, IntoBytes};

use crate::arch::{self, rdmsr, vmgexit, wrmsr};
use crate::idt::Frame;
use crate::layout::{GHCB_GPA, GHCB_PT_GPA, PD_GPA, PREVALIDATED_BASE};
use crate::port_io;

/// SEV_STATUS as the reset code read it (0 if the read faulted: no SEV).
#[unsafe(no_mangle)]
static BOOT_SEV_STATUS: AtomicU64 = AtomicU64::new(0);
/// The C-bit as a mask of the high 32 bits of a page-table entry, as the
/// reset code derived it from the CPUID page (0: no encryption bit).
#[unsafe(no_mangle)]
static BOOT_C_BIT_HIGH: AtomicU32 = AtomicU32::new(0);
/// The GHCB page's GPA once registered (0 before).
static GHCB_REGISTERED: AtomicU64 = AtomicU64::new(0);

/// SEV_STATUS as seen at boot.
pub fn sev_status() -> SevStatus {
    SevStatus(BOOT_SEV_STATUS.load(Ordering::Relaxed))
}

/// Whether the platform presents SEV-SNP (real, or the dev platform's
/// emulation).
pub fn snp_active() -> bool {
    sev_status().has(SevStatusBit::Snp)
}

/// The C-bit mask for page-table entries (0 when memory is not encrypted,
/// as on the dev platform).
pub fn c_bit_mask() -> u64 {
    u64::from(BOOT_C_BIT_HIGH.load(Ordering::Relaxed)) << 32
}

/// Whether memory encryption is really active (real SNP): then port I/O
/// raises #VC and needs the GHCB page.
pub fn encryption_active() -> bool {
    c_bit_mask() != 0 && sev_status().has(SevStatusBit::SevEs)
}

/// One GHCB MSR-protocol exchange: writes `request`, VMGEXITs, returns the
/// response. A registered GHCB GPA is restored afterwards (the MSR is
/// shared by both protocols).
pub fn msr_protocol(request: u64) -> u64 {
    let registered = GHCB_REGISTERED.load(Ordering::Relaxed);
    // SAFETY: the GHCB MSR exists on SNP and is intercepted on the dev
    // platform; writing a protocol value changes nothing but the MSR.
    let response = unsafe {
        wrmsr(MSR_GHCB, request);
        vmgexit();
        rdmsr(MSR_GHCB)
    };
    if registered != 0 {
        // SAFETY: as above; this puts the registered GHCB GPA back.
        unsafe { wrmsr(MSR_GHCB, registered) };
    }
    response
}

/// The registers of an SVSM call (RAX = protocol << 32 | call on entry,
/// the result code on return).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallRegs {
    /// Request in, result out.
    pub rax: u64,
    /// First argument / output.
    pub rcx: u64,
    /// Second argument / output.
    pub rdx: u64,
    /// Third argument / output.
    pub r8: u64,
    /// Fourth argument / output.
    pub r9: u64,
}

impl CallRegs {
    /// A core-protocol call with RCX, RDX and R8 set.
    pub fn core(call: CoreCall, rcx: u64, rdx: u64, r8: u64) -> CallRegs {
        CallRegs { rax: request_rax(PROTOCOL_CORE, call as u32), rcx, rdx, r8, r9: 0 }
    }
}

/// What came back from an SVSM call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallOutcome {
    /// The registers after the call.
    pub regs: CallRegs,
    /// CALL_PENDING as the guest found it afterwards (and cleared): 0 means
    /// the SVSM ran the call.
    pub pending_after: u8,
    /// The GHCB MSR's Run-VMPL response.
    pub msr_response: u64,
}

impl CallOutcome {
    /// The 32-bit result code (RAX's upper half is ignored, as the spec
    /// allows sign extension).
    pub fn code(&self) -> u32 {
        self.regs.rax as u32
    }

    /// Whether the call reached the SVSM and completed: Run-VMPL answered
    /// with no error and CALL_PENDING cleared.
    pub fn delivered(&self) -> bool {
        matches!(MsrResponse::decode(self.msr_response), Ok(MsrResponse::RunVmpl { error: 0 }))
            && self.pending_after == 0
    }
}

/// Calls the SVSM through the calling area at `ca_gpa`, with
/// `pending` written to CALL_PENDING first (1 normally; other values test
/// the SVSM's check).
pub fn svsm_call_with_pending(ca_gpa: u64, regs: CallRegs, pending: u8) -> CallOutcome {
    let pending_flag = call_pending_flag(ca_gpa);
    pending_flag.store(pending, Ordering::SeqCst);
    let registered = GHCB_REGISTERED.load(Ordering::Relaxed);
    let mut out = regs;
    // SAFETY: as in `msr_protocol`: the Run-VMPL request (target VMPL0).
    unsafe { wrmsr(MSR_GHCB, MsrRequest::RunVmpl { vmpl: 0 }.encode()) };
    // SAFETY: VMGEXIT hands the vCPU to VMPL0 (the SVSM), which may change
    // exactly RAX, RCX, RDX, R8 and R9 (the SVSM calling convention); the
    // other registers and the stack are preserved.
    unsafe {
        core::arch::asm!(
            "rep vmmcall",
            inout("rax") out.rax,
            inout("rcx") out.rcx,
            inout("rdx") out.rdx,
            inout("r8") out.r8,
            inout("r9") out.r9,
            options(nostack),
        );
    }
    // SAFETY: reading the GHCB MSR has no side effect.
    let msr_response = unsafe { rdmsr(MSR_GHCB) };
    if registered != 0 {
        // SAFETY: puts the registered GHCB GPA back.
        unsafe { wrmsr(MSR_GHCB, registered) };
    }
    let pending_after = pending_flag.swap(0, Ordering::SeqCst);
    CallOutcome { regs: out, pending_after, msr_response }
}

/// Calls the SVSM through the calling area at `ca_gpa`.
pub fn svsm_call(ca_gpa: u64, regs: CallRegs) -> CallOutcome {
    svsm_call_with_pending(ca_gpa, regs, CALL_PENDING)
}

fn call_pending_flag(ca_gpa: u64) -> &'static AtomicU8 {
    // SAFETY: calling areas are validated, identity-mapped guest pages the
    // guest owns for its whole life; the SVSM also writes the byte, which
    // is why it is accessed atomically.
    unsafe { &*((ca_gpa + CALL_PENDING_OFFSET as u64) as *const AtomicU8) }
}

/// Which step of the GHCB setup failed (on SNP nothing can be printed
/// before the GHCB works; the guest terminates).
#[derive(Clone, Copy, Debug)]
pub enum GhcbSetupError {
    /// The SVSM refused to rescind the page's validation.
    Rescind,
    /// The hypervisor refused to make the page shared.
    MakeShared,
    /// The hypervisor refused to register the page.
    Register,
}

/// On real SNP: turns [`GHCB_GPA`] into a shared, registered GHCB page, so
/// the #VC handler can forward port I/O. Runs before any port I/O.
pub fn setup_ghcb(ca_gpa: u64) -> Result<(), GhcbSetupError> {
    rescind_validation(ca_gpa, GHCB_GPA)?;
    let response = msr_protocol(
        MsrRequest::PageStateChange { gfn: GHCB_GPA / PAGE_SIZE, operation: PageOperation::Shared }
            .encode(),
    );
    if MsrResponse::decode(response) != Ok(MsrResponse::PageStateChange { error: 0 }) {
        return Err(GhcbSetupError::MakeShared);
    }
    map_ghcb_shared();
    let response = msr_protocol(MsrRequest::RegisterGhcbGpa { gfn: GHCB_GPA / PAGE_SIZE }.encode());
    if MsrResponse::decode(response)
        != Ok(MsrResponse::RegisterGhcbGpa { gfn: GHCB_GPA / PAGE_SIZE })
    {
        return Err(GhcbSetupError::Register);
    }
    GHCB_REGISTERED.store(GHCB_GPA, Ordering::Relaxed);
    // SAFETY: from now on the MSR holds the GHCB GPA between MSR-protocol
    // exchanges, as the GHCB protocol expects.
    unsafe { wrmsr(MSR_GHCB, GHCB_GPA) };
    Ok(())
}

/// PVALIDATE (rescind) one 4 KiB page through the SVSM, with the request
/// list in the calling area's buffer.
fn rescind_validation(ca_gpa: u64, gpa: u64) -> Result<(), GhcbSetupError> {
    let list = ca_gpa + 8;
    let header = ListHeader { entries: 1, next: 0, reserved: 0 };
    let entry = PvalidateEntry::new(gpa, PageSize::Size4K, false, false);
    // SAFETY: the list lies in the guest's own calling area.
    unsafe {
        arch::write_u64(list, u64::from_le_bytes(header.as_bytes().try_into().expect("8 bytes")));
        arch::write_u64(list + 8, entry.0);
    }
    let outcome = svsm_call(ca_gpa, CallRegs::core(CoreCall::Pvalidate, list, 0, 0));
    if !outcome.delivered() || outcome.code() != SVSM_SUCCESS {
        return Err(GhcbSetupError::Rescind);
    }
    Ok(())
}

/// Maps the 2 MiB page holding the GHCB with 4 KiB pages: private (C-bit)
/// everywhere but the GHCB page.
fn map_ghcb_shared() {
    let c_bit = c_bit_mask();
    for index in 0..512u64 {
        let gpa = PREVALIDATED_BASE + index * PAGE_SIZE;
        let entry = gpa | 0x3 | if gpa == GHCB_GPA { 0 } else { c_bit };
        // SAFETY: the page-table page is reserved for this in the
        // pre-validated RAM and not yet in use.
        unsafe { arch::write_u64(GHCB_PT_GPA + index * 8, entry) };
    }
    let pd_index = PREVALIDATED_BASE / abi::layout::LARGE_PAGE_SIZE;
    // SAFETY: switches one PD entry from the 2 MiB mapping to the table
    // above, which maps the same addresses, then flushes the TLB by
    // reloading CR3; only the GHCB page's encryption changes, and nothing
    // uses it yet.
    unsafe {
        arch::write_u64(PD_GPA + pd_index * 8, GHCB_PT_GPA | 0x3 | c_bit);
        core::arch::asm!("mov {t}, cr3", "mov cr3, {t}", t = out(reg) _, options(nostack));
        arch::fill_page(GHCB_GPA, 0);
    }
}

/// The #VC handler's work: forwards an IN/OUT to the hypervisor through
/// the GHCB page. Returns false for anything it cannot handle.
pub fn handle_vc(frame: &mut Frame) -> bool {
    if frame.error_code != exit_code::IOIO || GHCB_REGISTERED.load(Ordering::Relaxed) == 0 {
        return false;
    }
    // SAFETY: RIP points at the faulting instruction in the guest's own
    // code, which is mapped and readable; at most 15 bytes are read.
    let bytes = unsafe { core::slice::from_raw_parts(frame.rip as *const u8, 15) };
    let Some(insn) = port_io::decode(bytes, frame.rdx) else { return false };
    // SAFETY: the GHCB page is the guest's, mapped shared, and used only
    // here with interrupts off (one vCPU does port I/O on SNP: the AP does
    // not print when encryption is active).
    let ghcb = unsafe { &mut *(GHCB_GPA as *mut Ghcb) };
    ghcb.zero();
    if insn.info.direction == IoDirection::Out {
        ghcb.set(GhcbField::Rax, port_io::out_value(frame.rax, insn.info.size));
    }
    ghcb.set_exit(exit_code::IOIO, insn.info.encode(), 0);
    // SAFETY: the MSR holds the GHCB GPA (restored after every MSR-protocol
    // exchange); VMGEXIT hands the GHCB to the hypervisor.
    unsafe { wrmsr(MSR_GHCB, GHCB_GPA) };
    vmgexit();
    if ghcb.result() != GhcbResult::Ok {
        return false;
    }
    if insn.info.direction == IoDirection::In {
        frame.rax = port_io::merge_in_result(frame.rax, insn.info.size, ghcb.get(GhcbField::Rax));
    }
    frame.rip += insn.length;
    true
}

/// Asks the hypervisor to end the VM (used when not even the console
/// works).
pub fn terminate() -> ! {
    msr_protocol(MsrRequest::Terminate(abi::ghcb::TerminationReason::GENERAL).encode());
    crate::console::halt_forever()
}
