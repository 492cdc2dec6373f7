//! The exception table: instructions that may fault on purpose, and where
//! execution resumes when they do.
//!
//! The kernel reaches memory it does not trust to be mapped (guest memory,
//! test probes) only through the probe functions here. Each records its
//! faulting instruction and a fixup in the `.exception_table` section; the
//! exception dispatcher looks the faulting RIP up and resumes at the fixup,
//! which reports the fault as an error instead of crashing.

#[repr(C)]
struct Entry {
    fault: u64,
    fixup: u64,
}

unsafe extern "C" {
    static __extable_start: Entry;
    static __extable_end: Entry;
}

fn table() -> &'static [Entry] {
    // SAFETY: the linker script places every `.exception_table` entry
    // between these two symbols; the section is read-only and 8-aligned.
    unsafe {
        let start = &raw const __extable_start;
        let end = &raw const __extable_end;
        let count = (end as usize - start as usize) / core::mem::size_of::<Entry>();
        core::slice::from_raw_parts(start, count)
    }
}

/// The fixup address for a fault at `rip`, if the instruction is listed.
pub fn fixup_for(rip: u64) -> Option<u64> {
    table().iter().find(|entry| entry.fault == rip).map(|entry| entry.fixup)
}

/// A memory access faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault;

#[repr(C)]
struct ProbeResult {
    value: u64,
    faulted: u64,
}

unsafe extern "sysv64" {
    fn probe_read_u64(address: u64) -> ProbeResult;
    fn probe_write_u64(address: u64, value: u64) -> u64;
}

/// Reads the u64 at `address`, or reports that the read faulted.
///
/// # Safety
/// If `address` is mapped, reading it must not break Rust's aliasing rules
/// (no `&mut` to it may be live) and must have no side effects (not MMIO).
pub unsafe fn read_u64(address: u64) -> Result<u64, Fault> {
    // SAFETY: the probe's only memory access is listed in the exception
    // table, so a fault resumes at its fixup; the caller vouches for the
    // access itself.
    let result = unsafe { probe_read_u64(address) };
    if result.faulted == 0 { Ok(result.value) } else { Err(Fault) }
}

/// Writes the u64 at `address`, or reports that the write faulted.
///
/// # Safety
/// As for [`read_u64`], and the write must not corrupt memory anything else
/// relies on.
pub unsafe fn write_u64(address: u64, value: u64) -> Result<(), Fault> {
    // SAFETY: as for `read_u64`.
    let faulted = unsafe { probe_write_u64(address, value) };
    if faulted == 0 { Ok(()) } else { Err(Fault) }
}

core::arch::global_asm!(
    r#"
    .section .text.probes, "ax"
    .global probe_read_u64
    probe_read_u64:
    1:  mov rax, qword ptr [rdi]
        xor edx, edx
        ret
    2:  xor eax, eax
        mov edx, 1
        ret
    .global probe_write_u64
    probe_write_u64:
    3:  mov qword ptr [rdi], rsi
        xor eax, eax
        ret
    4:  mov eax, 1
        ret
    .section .exception_table, "a"
    .balign 8
    .quad 1b, 2b
    .quad 3b, 4b
    "#
);
