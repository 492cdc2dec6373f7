//! Control registers and MSRs.

/// EFER.
pub const MSR_EFER: u32 = 0xC000_0080;
/// The base of GS (per-CPU data).
pub const MSR_GS_BASE: u32 = 0xC000_0101;
/// EFER.NXE: no-execute page bit enabled.
pub const EFER_NXE: u64 = 1 << 11;
/// EFER.SVME: SVM enabled.
pub const EFER_SVME: u64 = 1 << 12;
/// CR0.WP: supervisor writes respect read-only pages.
pub const CR0_WP: u64 = 1 << 16;

/// Reads an MSR.
///
/// # Safety
/// The MSR must exist on this CPU (or the read raises #GP), and reading it
/// must have no side effects the caller does not expect.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: per the function's contract.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nomem, nostack))
    };
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes an MSR.
///
/// # Safety
/// The MSR must exist, and the value must not break the invariants the
/// kernel relies on (paging, segments, SVM state).
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: per the function's contract.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nostack))
    };
}

/// CR0.
pub fn read_cr0() -> u64 {
    let value;
    // SAFETY: reading CR0 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr0", out(reg) value, options(nomem, nostack)) };
    value
}

/// CR2 (the last page-fault address).
pub fn read_cr2() -> u64 {
    let value;
    // SAFETY: reading CR2 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) value, options(nomem, nostack)) };
    value
}

/// CR3.
pub fn read_cr3() -> u64 {
    let value;
    // SAFETY: reading CR3 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) value, options(nomem, nostack)) };
    value
}

/// CR4.
pub fn read_cr4() -> u64 {
    let value;
    // SAFETY: reading CR4 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr4", out(reg) value, options(nomem, nostack)) };
    value
}

/// Writes CR0.
///
/// # Safety
/// The new value must keep paging and protection enabled as the kernel
/// expects.
pub unsafe fn write_cr0(value: u64) {
    // SAFETY: per the function's contract.
    unsafe { core::arch::asm!("mov cr0, {}", in(reg) value, options(nostack)) };
}

/// Switches to the page tables at `cr3`.
///
/// # Safety
/// The tables must map the running code, its stack and everything the
/// kernel touches afterwards.
pub unsafe fn write_cr3(cr3: u64) {
    // SAFETY: per the function's contract.
    unsafe { core::arch::asm!("mov cr3, {}", in(reg) cr3, options(nostack)) };
}

/// Flushes the TLB entry of one page.
pub fn invlpg(va: u64) {
    // SAFETY: invalidating a TLB entry only makes the CPU re-read tables.
    unsafe { core::arch::asm!("invlpg [{}]", in(reg) va, options(nostack)) };
}

/// Executes CPUID.
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}
