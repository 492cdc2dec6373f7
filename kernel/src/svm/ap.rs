//! Starting the SVSM's secondary CPUs on the dev platform: INIT-SIPI-SIPI
//! through the local APIC into a real-mode trampoline that switches to
//! long mode on the kernel's page tables and enters the kernel. (On SNP the
//! hypervisor starts them from VMSAs instead.) Bare metal only.
//!
//! The trampoline needs two pages below 1 MiB, identity mapped while a CPU
//! starts: its code (read, execute) and its data (GDT and the start
//! parameters; read, write). Both are guest RAM the guest has not started
//! to use: they are mapped for each start and unmapped and zeroed once the
//! CPU runs on its own stack. CPUs start one at a time.

use core::sync::atomic::{AtomicU32, Ordering};

use abi::layout::{DIRECT_MAP_BASE, PAGE_SIZE};
use abi::paging::{PageFlags, PageSize};

use crate::mm::paging::phys_to_virt;
use crate::mm::with_kernel_tables;
use crate::platform::{CpuStart, PlatformError};

/// The trampoline's code page (SIPI vector 0x09).
const CODE_PAGE: u64 = 0x9000;
/// The trampoline's data page.
const DATA_PAGE: u64 = 0xA000;
/// The local APIC's registers.
const LAPIC_BASE: u64 = 0xFEE0_0000;
const LAPIC_ICR_LOW: u64 = 0x300;
const LAPIC_ICR_HIGH: u64 = 0x310;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;
const ICR_INIT: u32 = 0x4500;
const ICR_STARTUP: u32 = 0x4600;
/// How long to wait for an AP (TSC cycles; about half a second under TCG).
const START_TIMEOUT: u64 = 1 << 30;

/// The trampoline's data page, as the assembly reads it.
#[repr(C)]
struct TrampolineData {
    /// Null, 64-bit code (0x08), flat data (0x10), 32-bit code (0x18).
    gdt: [u64; 4],
    /// LGDT's operand: limit (u16), then the 32-bit base, unaligned.
    gdt_pointer: [u8; 8],
    cr3: u64,
    stack_top: u64,
    entry: u64,
    index: u32,
    started: AtomicU32,
}

const _: () = {
    use core::mem::offset_of;
    // The offsets the assembly below uses.
    assert!(offset_of!(TrampolineData, gdt_pointer) == 0x20);
    assert!(offset_of!(TrampolineData, cr3) == 0x28);
    assert!(offset_of!(TrampolineData, stack_top) == 0x30);
    assert!(offset_of!(TrampolineData, entry) == 0x38);
    assert!(offset_of!(TrampolineData, index) == 0x40);
    assert!(offset_of!(TrampolineData, started) == 0x44);
};

core::arch::global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .global ap_trampoline_start
    .global ap_trampoline_end
    .code16
    ap_trampoline_start:
        cli
        cld
        xor %ax, %ax
        mov %ax, %ds
        lgdtl ({data} + 0x20)
        mov %cr0, %eax
        or $1, %eax
        mov %eax, %cr0
        ljmpl $0x18, $({code} + (1f - ap_trampoline_start))
    .code32
    1:
        mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov %cr4, %eax
        or $0x20, %eax
        mov %eax, %cr4
        mov ({data} + 0x28), %eax
        mov %eax, %cr3
        mov $0xC0000080, %ecx
        rdmsr
        or $0x900, %eax
        wrmsr
        mov %cr0, %eax
        or $0x80010001, %eax
        mov %eax, %cr0
        ljmpl $0x08, $({code} + (2f - ap_trampoline_start))
    .code64
    2:
        mov ({data} + 0x30), %rsp
        mov ({data} + 0x40), %edi
        mov ({data} + 0x38), %rax
        movl $1, ({data} + 0x44)
        push $0
        jmp *%rax
    ap_trampoline_end:
    .text
    "#,
    code = const CODE_PAGE,
    data = const DATA_PAGE,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
}

fn data() -> &'static mut TrampolineData {
    // SAFETY: the data page is guest RAM below 1 MiB in the direct map,
    // used only by this module (one CPU starting at a time, under the
    // caller's serialisation) before the guest starts.
    unsafe { &mut *(phys_to_virt(DATA_PAGE) as *mut TrampolineData) }
}

fn lapic(register: u64) -> *mut u32 {
    (DIRECT_MAP_BASE + LAPIC_BASE + register) as *mut u32
}

/// Copies the trampoline, maps its pages and the local APIC.
fn install() -> Result<(), PlatformError> {
    let start = &raw const ap_trampoline_start as usize;
    let end = &raw const ap_trampoline_end as usize;
    // SAFETY: the two symbols bound the trampoline's bytes in .rodata; the
    // code page is guest RAM not yet in use, in the direct map.
    unsafe {
        core::ptr::write_bytes(phys_to_virt(CODE_PAGE) as *mut u8, 0, PAGE_SIZE as usize);
        core::ptr::copy_nonoverlapping(
            start as *const u8,
            phys_to_virt(CODE_PAGE) as *mut u8,
            end - start,
        );
        core::ptr::write_bytes(phys_to_virt(DATA_PAGE) as *mut u8, 0, PAGE_SIZE as usize);
    }
    let data = data();
    data.gdt = [0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF, 0x00CF_9B00_0000_FFFF];
    let limit = (8 * data.gdt.len() - 1) as u16;
    data.gdt_pointer[..2].copy_from_slice(&limit.to_le_bytes());
    data.gdt_pointer[2..6].copy_from_slice(&(DATA_PAGE as u32).to_le_bytes());
    let mapped = with_kernel_tables(|mapper, tables| {
        mapper.map(tables, CODE_PAGE, CODE_PAGE, PageSize::Size4K, PageFlags::code())?;
        mapper.map(tables, DATA_PAGE, DATA_PAGE, PageSize::Size4K, PageFlags::data())?;
        let lapic_va = DIRECT_MAP_BASE + LAPIC_BASE;
        match mapper.map(
            tables,
            lapic_va,
            LAPIC_BASE,
            PageSize::Size4K,
            PageFlags::data() | PageFlags::NO_CACHE,
        ) {
            Ok(()) | Err(abi::paging::MapError::AlreadyMapped) => Ok(mapper.cr3()),
            Err(e) => Err(e),
        }
    });
    let cr3 = mapped.map_err(|_| PlatformError("cannot map the AP trampoline"))?;
    data.cr3 = cr3;
    Ok(())
}

fn send_ipi(apic_id: u32, command: u32) {
    // SAFETY: the local APIC page is mapped uncached at this address by
    // `install`; writing the ICR sends one IPI; the guest does not run yet.
    unsafe {
        core::ptr::write_volatile(lapic(LAPIC_ICR_HIGH), apic_id << 24);
        core::ptr::write_volatile(lapic(LAPIC_ICR_LOW), command);
        while core::ptr::read_volatile(lapic(LAPIC_ICR_LOW)) & ICR_DELIVERY_PENDING != 0 {
            core::hint::spin_loop();
        }
    }
}

fn tsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn wait(cycles: u64) {
    let until = tsc() + cycles;
    while tsc() < until {
        core::hint::spin_loop();
    }
}

/// Starts the CPU with APIC ID `apic_id` at `start.entry(start.index)`;
/// returns once it runs on its own stack. The caller starts one CPU at a
/// time.
pub fn start(apic_id: u32, start: &CpuStart) -> Result<(), PlatformError> {
    install()?;
    let result = kick(apic_id, start);
    remove();
    result
}

fn kick(apic_id: u32, start: &CpuStart) -> Result<(), PlatformError> {
    let data = data();
    data.stack_top = start.stack_top;
    data.entry = start.entry as usize as u64;
    data.index = start.index;
    data.started.store(0, Ordering::Release);
    send_ipi(apic_id, ICR_INIT);
    wait(1 << 20);
    for _ in 0..2 {
        send_ipi(apic_id, ICR_STARTUP | (CODE_PAGE >> 12) as u32);
        let deadline = tsc() + START_TIMEOUT;
        while tsc() < deadline {
            if data.started.load(Ordering::Acquire) != 0 {
                return Ok(());
            }
            core::hint::spin_loop();
        }
    }
    Err(PlatformError("the CPU did not start (no answer to INIT-SIPI-SIPI)"))
}

/// Unmaps the trampoline and zeroes its pages: they are the guest's.
fn remove() {
    with_kernel_tables(|mapper, tables| {
        for page in [CODE_PAGE, DATA_PAGE] {
            let _ = mapper.unmap(tables, page, PageSize::Size4K);
            crate::cpu::registers::invlpg(page);
        }
    });
    // SAFETY: the pages are guest RAM in the direct map; no CPU runs the
    // trampoline any more (the AP signalled it left, or it never came).
    unsafe {
        core::ptr::write_bytes(phys_to_virt(CODE_PAGE) as *mut u8, 0, PAGE_SIZE as usize);
        core::ptr::write_bytes(phys_to_virt(DATA_PAGE) as *mut u8, 0, PAGE_SIZE as usize);
    }
}
