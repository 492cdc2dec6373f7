//! The few privileged instructions the guest uses, each behind a small safe
//! or unsafe function: port I/O (a #VC on real SNP, forwarded by the #VC
//! handler), MSRs, the TSC, VMGEXIT, and raw access to guest-physical
//! memory through the identity map the reset code built.

use core::arch::asm;

/// Writes a byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O touches no memory the compiler knows about; the
    // guest owns every device it talks to (COM1, fw_cfg, PIT, debug exit).
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) }
}

/// Reads a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as for `outb`.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack)) }
    value
}

/// Writes a 16-bit word to an I/O port.
pub fn outw(port: u16, value: u16) {
    // SAFETY: as for `outb`.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack)) }
}

/// Reads an MSR.
///
/// # Safety
/// The MSR must exist (or its read be intercepted) and reading it must have
/// no side effect the caller has not accounted for.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: per the function's contract.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes an MSR.
///
/// # Safety
/// The MSR must exist (or its write be intercepted) and the value must not
/// break the guest's own execution.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: per the function's contract.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack))
    }
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only reads the counter.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// A random 64-bit value from RDRAND, retried a few times as Intel and
/// AMD advise; `None` if the CPU keeps reporting no entropy.
pub fn rdrand() -> Option<u64> {
    for _ in 0..16 {
        let value: u64;
        let ok: u8;
        // SAFETY: RDRAND only writes its destination and CF.
        unsafe {
            asm!("rdrand {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok,
                 options(nomem, nostack))
        };
        if ok != 0 {
            return Some(value);
        }
    }
    None
}

/// VMGEXIT (`rep vmmcall`): hands the vCPU to the hypervisor (on the dev
/// platform, to the SVSM's VMMCALL intercept), which answers through the
/// GHCB MSR or page.
pub fn vmgexit() {
    // SAFETY: VMGEXIT exits to the host and returns; the registers the
    // host may change under the GHCB protocol (none for the MSR protocol)
    // are declared by the callers that use them.
    unsafe { asm!("rep vmmcall", options(nostack)) }
}

/// The dev platform's null exit (`abi::vmcb::DEV_NULL_EXIT_RAX`): one
/// VMMCALL exit the platform returns from at once. Dev platform only: on
/// SNP a VMMCALL raises #VC, which ends the test guest.
pub fn null_exit() {
    // SAFETY: the dev platform moves RIP past the VMMCALL and changes
    // nothing else (no register, no memory).
    unsafe { asm!("vmmcall", in("rax") abi::vmcb::DEV_NULL_EXIT_RAX, options(nostack)) }
}

/// A hint for spin loops.
pub fn relax() {
    core::hint::spin_loop();
}

/// Reads a u64 of guest-physical memory.
///
/// # Safety
/// `gpa` must be 8-byte aligned, identity mapped, and memory this guest
/// may read (validated, not the SVSM's, unless the read is a deliberate
/// test of that rule).
pub unsafe fn read_u64(gpa: u64) -> u64 {
    // SAFETY: per the function's contract.
    unsafe { core::ptr::read_volatile(gpa as *const u64) }
}

/// Writes a u64 of guest-physical memory.
///
/// # Safety
/// As for [`read_u64`], and nothing else in the guest may rely on the old
/// contents.
pub unsafe fn write_u64(gpa: u64, value: u64) {
    // SAFETY: per the function's contract.
    unsafe { core::ptr::write_volatile(gpa as *mut u64, value) }
}

/// Fills a 4 KiB page of guest-physical memory with `value`.
///
/// # Safety
/// As for [`write_u64`], for the whole page.
pub unsafe fn fill_page(gpa: u64, value: u64) {
    for offset in (0..abi::layout::PAGE_SIZE).step_by(8) {
        // SAFETY: the page is the caller's, per the contract.
        unsafe { write_u64(gpa + offset, value) };
    }
}

/// Whether every u64 of a 4 KiB page equals `value`.
///
/// # Safety
/// As for [`read_u64`], for the whole page.
pub unsafe fn page_is(gpa: u64, value: u64) -> bool {
    // SAFETY: the page is readable, per the contract.
    (0..abi::layout::PAGE_SIZE).step_by(8).all(|offset| unsafe { read_u64(gpa + offset) } == value)
}
