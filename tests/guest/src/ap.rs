//! The AP the guest creates with CREATE_VCPU: the VMSA it starts from (64-bit
//! mode, at `ap_entry`, sharing the boot vCPU's page tables) and what it
//! does: report that it runs, make one SVSM call through its own calling
//! area, then park itself with the GHCB MSR protocol's AP reset hold so the
//! boot vCPU can delete it.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use abi::ghcb::MsrRequest;
use abi::svsm::{CORE_PROTOCOL_VERSION, CoreCall, PROTOCOL_CORE, query_protocol_request};
use abi::vmsa::{EFER_SVME, Segment, Vmsa};
use zerocopy::FromZeros;

use crate::env::Env;
use crate::idt::{self, CODE64_SELECTOR};
use crate::report::PREFIX;
use crate::snp::{self, CallRegs};
use crate::{arch, println};

/// The AP has not started.
pub const AP_NOT_STARTED: u32 = 0;
/// The AP made its call and stored the result.
pub const AP_REPORTED: u32 = 1;
/// The AP is about to park (AP reset hold).
pub const AP_PARKING: u32 = 2;

/// How far the AP got.
pub static AP_STATE: AtomicU32 = AtomicU32::new(AP_NOT_STARTED);
/// Result code of the AP's QUERY_PROTOCOL call.
pub static AP_CALL_CODE: AtomicU64 = AtomicU64::new(u64::MAX);
/// RCX the AP's call returned.
pub static AP_CALL_RCX: AtomicU64 = AtomicU64::new(u64::MAX);
/// The AP's calling area (set by the boot vCPU before CREATE_VCPU).
static AP_CALLING_AREA: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" {
    static ap_entry: u8;
    static ap_stack_top: u8;
}

fn read_control_registers() -> (u64, u64) {
    let (cr3, cr4): (u64, u64);
    // SAFETY: reading CR3 and CR4 has no side effect.
    unsafe {
        core::arch::asm!("mov {}, cr3", "mov {}, cr4", out(reg) cr3, out(reg) cr4,
                         options(nomem, nostack))
    };
    (cr3, cr4)
}

/// The GDTR of this vCPU (the reset code's GDT, in the image).
fn read_gdtr() -> (u16, u64) {
    let mut gdtr = [0u8; 10];
    // SAFETY: SGDT stores 10 bytes into the buffer.
    unsafe { core::arch::asm!("sgdt [{}]", in(reg) gdtr.as_mut_ptr(), options(nostack)) };
    let limit = u16::from_le_bytes([gdtr[0], gdtr[1]]);
    let base = u64::from_le_bytes(gdtr[2..].try_into().expect("8 bytes"));
    (limit, base)
}

/// A VMSA that starts the AP at `ap_entry` in 64-bit mode at the guest's
/// VMPL, with the boot vCPU's SEV features: the one CREATE_VCPU accepts.
pub fn ap_vmsa(env: &Env) -> Vmsa {
    let mut vmsa = Vmsa::new_zeroed();
    let (cr3, cr4) = read_control_registers();
    // SAFETY: reading EFER has no side effect.
    let efer = unsafe { arch::rdmsr(0xC000_0080) };
    let (gdt_limit, gdt_base) = read_gdtr();
    let data = Segment::new(0x10, 0x0C93, 0xFFFF_FFFF, 0);
    vmsa.es = data;
    vmsa.ss = data;
    vmsa.ds = data;
    vmsa.fs = data;
    vmsa.gs = data;
    vmsa.cs = Segment::new(CODE64_SELECTOR, 0x029B, 0xFFFF_FFFF, 0);
    vmsa.gdtr = Segment::new(0, 0, u32::from(gdt_limit), gdt_base);
    vmsa.idtr = Segment::new(0, 0, 0, 0);
    vmsa.ldtr = Segment::new(0, 0x0082, 0xFFFF, 0);
    vmsa.tr = Segment::new(0, 0x008B, 0xFFFF, 0);
    vmsa.vmpl = env.guest_vmpl;
    vmsa.efer = efer | EFER_SVME;
    vmsa.cr0 = 0x8000_0031; // PG | NE | ET | PE
    vmsa.cr3 = cr3;
    vmsa.cr4 = cr4;
    vmsa.rflags = 0x2;
    vmsa.rip = (&raw const ap_entry) as u64;
    vmsa.rsp = (&raw const ap_stack_top) as u64;
    vmsa.dr6 = 0xFFFF_0FF0;
    vmsa.dr7 = 0x400;
    vmsa.g_pat = 0x0007_0406_0007_0406;
    vmsa.xcr0 = 1;
    vmsa.mxcsr = 0x1F80;
    vmsa.x87_fcw = 0x37F;
    vmsa.sev_features = env.sev_features.0;
    vmsa
}

/// Tells the AP which calling area to use (before CREATE_VCPU).
pub fn set_calling_area(gpa: u64) {
    AP_CALLING_AREA.store(gpa, Ordering::SeqCst);
}

/// The AP's life, from `ap_entry`.
pub fn run() -> ! {
    idt::load();
    let ca = AP_CALLING_AREA.load(Ordering::SeqCst);
    if !snp::encryption_active() {
        // On real SNP the GHCB page belongs to the boot vCPU: the AP
        // reports through memory only.
        println!("{PREFIX}AP running, calling area {ca:#x}");
    }
    let outcome = snp::svsm_call(
        ca,
        CallRegs::core(
            CoreCall::QueryProtocol,
            query_protocol_request(PROTOCOL_CORE, CORE_PROTOCOL_VERSION),
            0,
            0,
        ),
    );
    let code = if outcome.delivered() { u64::from(outcome.code()) } else { u64::MAX - 1 };
    AP_CALL_CODE.store(code, Ordering::SeqCst);
    AP_CALL_RCX.store(outcome.regs.rcx, Ordering::SeqCst);
    AP_STATE.store(AP_REPORTED, Ordering::SeqCst);
    AP_STATE.store(AP_PARKING, Ordering::SeqCst);
    loop {
        snp::msr_protocol(MsrRequest::ApResetHold.encode());
    }
}
