//! The bare-metal ROM loader: reset code (`boot.s`), the hardware side of
//! the library's traits (port I/O, identity-mapped memory, COM1), and the
//! hand-over to the image's start context (`handoff.s`).

#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::fmt::Write;
use core::mem::{offset_of, size_of};

use abi::layout::{DEBUG_EXIT_PORT, EXIT_FAILURE, SERIAL_PORT};
use romloader::fw_cfg::{DATA_PORT, FwCfgPorts, SELECTOR_PORT};
use romloader::loader::{GuestMemory, load};
use romloader::table::{
    HANDOFF_GDT_ENTRIES, LOADER_SIZE, MAX_ROM_SIZE, ROM_ALIGN, ROM_END, ROM_MAGIC, RomTrailer,
    StartContext, TRAILER_SIZE,
};
use zerocopy::FromBytes;

global_asm!(include_str!("boot.s"), options(att_syntax));

global_asm!(
    include_str!("handoff.s"),
    size = const size_of::<Handoff>(),
    gdt = const offset_of!(Handoff, gdt),
    gdt_limit = const HANDOFF_GDT_ENTRIES as usize * 8 - 1,
    loader_gdtr = const offset_of!(Handoff, loader_gdtr),
    context_gdtr = const offset_of!(Handoff, context_gdtr),
    context_idtr = const offset_of!(Handoff, context_idtr),
    code_selector = const offset_of!(Handoff, code_selector),
    data_selector = const offset_of!(Handoff, data_selector),
    efer_low = const offset_of!(Handoff, efer_low),
    efer_high = const offset_of!(Handoff, efer_high),
    cr0 = const offset_of!(Handoff, cr0),
    cr3 = const offset_of!(Handoff, cr3),
    cr4 = const offset_of!(Handoff, cr4),
    eflags = const offset_of!(Handoff, eflags),
    eax = const offset_of!(Handoff, eax),
    ebx = const offset_of!(Handoff, ebx),
    ecx = const offset_of!(Handoff, ecx),
    edx = const offset_of!(Handoff, edx),
    esi = const offset_of!(Handoff, esi),
    edi = const offset_of!(Handoff, edi),
    ebp = const offset_of!(Handoff, ebp),
    esp = const offset_of!(Handoff, esp),
    eip = const offset_of!(Handoff, eip),
    options(att_syntax)
);

unsafe extern "C" {
    /// Enters the start context described by `handoff`; never returns.
    ///
    /// # Safety
    /// The context must have passed `StartContext::check`, and the image it
    /// starts must be loaded: nothing of the loader survives the call.
    fn romloader_enter(handoff: *const Handoff) -> !;
}

/// What `handoff.s` reads: the start context as 32-bit values, the GDT to
/// hand over with, and the pseudo-descriptors for LGDT/LIDT.
#[repr(C)]
struct Handoff {
    eax: u32,
    ebx: u32,
    ecx: u32,
    edx: u32,
    esi: u32,
    edi: u32,
    ebp: u32,
    esp: u32,
    eip: u32,
    eflags: u32,
    cr0: u32,
    cr3: u32,
    cr4: u32,
    efer_low: u32,
    efer_high: u32,
    code_selector: u32,
    data_selector: u32,
    gdt: [u64; HANDOFF_GDT_ENTRIES as usize],
    /// Limit and 64-bit base of `gdt`, filled in by `handoff.s`.
    loader_gdtr: [u8; 10],
    context_gdtr: [u8; 6],
    context_idtr: [u8; 6],
}

impl Handoff {
    /// `context` has passed `StartContext::check`, so every register value
    /// fits 32 bits and the truncations below lose nothing.
    fn new(context: &StartContext) -> Handoff {
        let pseudo = |limit: u16, base: u64| {
            let mut bytes = [0u8; 6];
            bytes[..2].copy_from_slice(&limit.to_le_bytes());
            bytes[2..].copy_from_slice(&(base as u32).to_le_bytes());
            bytes
        };
        Handoff {
            eax: context.rax as u32,
            ebx: context.rbx as u32,
            ecx: context.rcx as u32,
            edx: context.rdx as u32,
            esi: context.rsi as u32,
            edi: context.rdi as u32,
            ebp: context.rbp as u32,
            esp: context.rsp as u32,
            eip: context.rip as u32,
            eflags: context.rflags as u32,
            cr0: context.cr0 as u32,
            cr3: context.cr3 as u32,
            cr4: context.cr4 as u32,
            efer_low: context.efer as u32,
            efer_high: (context.efer >> 32) as u32,
            code_selector: u32::from(context.code_selector),
            data_selector: u32::from(context.data_selector),
            gdt: context.handoff_gdt(),
            loader_gdtr: [0; 10],
            context_gdtr: pseudo(context.gdtr_limit, context.gdtr_base),
            context_idtr: pseudo(context.idtr_limit, context.idtr_base),
        }
    }
}

fn outb(port: u16, value: u8) {
    // SAFETY: writes to COM1, fw_cfg and the debug-exit port have no effect
    // on memory.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

fn outw(port: u16, value: u16) {
    // SAFETY: as in `outb`.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    }
}

fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: reading COM1's status or fw_cfg's data port has no effect on memory.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    value
}

/// COM1, polled.
struct Serial;

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for byte in s.bytes() {
            // Line status register bit 5: transmit holding register empty.
            while inb(SERIAL_PORT + 5) & 0x20 == 0 {}
            outb(SERIAL_PORT, byte);
        }
        Ok(())
    }
}

/// fw_cfg through its I/O ports.
struct PortFwCfg;

impl FwCfgPorts for PortFwCfg {
    fn select(&mut self, key: u16) {
        outw(SELECTOR_PORT, key);
    }

    fn read_byte(&mut self) -> u8 {
        inb(DATA_PORT)
    }
}

/// Guest memory below 4 GiB, identity-mapped by `boot.s`.
struct IdentityMemory;

impl GuestMemory for IdentityMemory {
    fn write(&mut self, gpa: u64, data: &[u8]) {
        // SAFETY: `loader::load` only writes ranges it checked to be RAM
        // below 4 GiB (identity-mapped) and outside the loader's own
        // memory; `data` comes from the ROM, which is not RAM, so the
        // ranges do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), gpa as *mut u8, data.len()) }
    }

    fn zero(&mut self, gpa: u64, size: u64) {
        // SAFETY: as in `write`.
        unsafe { core::ptr::write_bytes(gpa as *mut u8, 0, size as usize) }
    }
}

/// The whole `-bios` image as mapped below 4 GiB. Its size comes from the
/// trailer when the trailer's magic is there; otherwise the smallest size,
/// so that parsing reports the missing trailer.
fn rom() -> &'static [u8] {
    let trailer_at = ROM_END - LOADER_SIZE - TRAILER_SIZE;
    // SAFETY: the trailer lies in the last 64 KiB + 192 bytes below 4 GiB,
    // which QEMU maps as ROM for any -bios image of at least 128 KiB (ours
    // are multiples of 64 KiB with a 64 KiB loader plus data); ROM is
    // never written, and the first 4 GiB are identity-mapped.
    let trailer_bytes =
        unsafe { core::slice::from_raw_parts(trailer_at as *const u8, TRAILER_SIZE as usize) };
    let minimal = (LOADER_SIZE + TRAILER_SIZE).div_ceil(ROM_ALIGN) * ROM_ALIGN;
    let size = match RomTrailer::read_from_bytes(trailer_bytes) {
        Ok(t) if t.magic == ROM_MAGIC && t.rom_size <= MAX_ROM_SIZE && t.rom_size >= minimal => {
            t.rom_size
        }
        _ => minimal,
    };
    // SAFETY: [4 GiB - size, 4 GiB) is the ROM image (size at most 16 MiB,
    // well clear of RAM), identity-mapped and never written.
    unsafe { core::slice::from_raw_parts((ROM_END - size) as *const u8, size as usize) }
}

fn fail(message: core::fmt::Arguments<'_>) -> ! {
    let _ = writeln!(Serial, "romloader: error: {message}");
    outb(DEBUG_EXIT_PORT, EXIT_FAILURE);
    loop {
        // SAFETY: halting with interrupts off stops this vCPU; nothing follows.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) }
    }
}

#[unsafe(no_mangle)]
extern "C" fn romloader_main() -> ! {
    match load(rom(), PortFwCfg, &mut IdentityMemory) {
        Ok(report) => {
            let _ = writeln!(
                Serial,
                "romloader: {} steps, {} KiB copied, {} vCPU(s), {} MiB RAM; entering {:#x}",
                report.steps,
                report.bytes_copied / 1024,
                report.cpu_count,
                report.ram_bytes >> 20,
                report.start.rip
            );
            let handoff = Handoff::new(&report.start);
            // SAFETY: `load` parsed the context with `StartContext::check`
            // and loaded every page of the image.
            unsafe { romloader_enter(&handoff) }
        }
        Err(error) => fail(format_args!("{error}")),
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fail(format_args!("panic: {info}"))
}
