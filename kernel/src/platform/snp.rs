//! The SEV-SNP platform. What exists so far: CPUID answered from the
//! measured CPUID page, and termination through the GHCB MSR protocol.
//! Console output needs the GHCB page protocol for port I/O; until the GHCB
//! is set up the console stays silent.

use abi::boot::KernelBootInfo;
use abi::cpuid_page::CpuidPage;
use spin::Once;

use super::{Platform, PlatformKind};
use crate::cpu::io::IoPort;

/// The GHCB MSR.
pub const MSR_GHCB: u32 = 0xC001_0130;
/// GHCB MSR protocol: termination request.
const GHCB_MSR_TERMINATE: u64 = 0x100;
/// Termination reason set of this SVSM's own codes (0 = general).
const REASON_SET_GENERAL: u64 = 0;

struct Snp {
    cpuid_page: &'static CpuidPage,
}

static SNP: Once<Snp> = Once::new();

/// Port I/O before the GHCB exists: dropped (a direct `out` would raise #VC).
struct NoIo;

static NO_IO: NoIo = NoIo;

impl IoPort for NoIo {
    fn outb(&self, _port: u16, _value: u8) {}
    fn inb(&self, _port: u16) -> u8 {
        0xFF
    }
    fn outw(&self, _port: u16, _value: u16) {}
    fn inw(&self, _port: u16) -> u16 {
        0xFFFF
    }
    fn outl(&self, _port: u16, _value: u32) {}
    fn inl(&self, _port: u16) -> u32 {
        0xFFFF_FFFF
    }
}

impl Platform for Snp {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Snp
    }

    fn io(&self) -> &'static dyn IoPort {
        &NO_IO
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        // A leaf the page does not list reads as zeros, as CPUID does for
        // leaves above the maximum.
        self.cpuid_page.lookup(leaf, subleaf).unwrap_or([0; 4])
    }

    fn exit(&self, code: u8) -> ! {
        terminate(code)
    }
}

/// The SNP platform.
pub fn init(info: &KernelBootInfo) -> &'static dyn Platform {
    let params = crate::boot::boot_params(info);
    let page = crate::mm::paging::phys_to_virt(params.cpuid_gpa);
    // SAFETY: the CPUID page is a measured page of the boot image at a GPA
    // from the measured boot parameters; it lies in RAM (direct mapped) and
    // nothing writes to it before the kernel releases the boot area, which
    // happens after this copy.
    let copy = unsafe { core::ptr::read_unaligned(page as *const CpuidPage) };
    let cpuid_page: &'static CpuidPage = alloc::boxed::Box::leak(alloc::boxed::Box::new(copy));
    SNP.call_once(|| Snp { cpuid_page })
}

/// Asks the hypervisor to end the VM (GHCB MSR protocol 0x100), with the
/// exit-device value as the reason code.
pub fn terminate(code: u8) -> ! {
    let request = GHCB_MSR_TERMINATE | (REASON_SET_GENERAL << 12) | (u64::from(code) << 16);
    loop {
        // SAFETY: writing the GHCB MSR and VMGEXIT hands control to the
        // hypervisor, which ends the VM; no memory is touched.
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
