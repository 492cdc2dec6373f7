//! SNP primitives in the booted kernel. Each test holds on every platform;
//! on SNP it exercises the SNP path (CPUID through #VC and the CPUID page,
//! the C-bit in the page tables, the GHCB).

use abi::paging::PageFlags;
use kernel::cpu::registers::{cpuid, read_cr3};
use kernel::mm::paging::phys_to_virt;
use kernel::{boot, check, check_eq, kernel_test, mm, platform};

kernel_test! {
    fn cpuid_instruction_agrees_with_the_platform() {
        // On SNP the instruction raises #VC and the handler answers from the
        // CPUID page; elsewhere both are the CPU's answer.
        let Some(platform) = platform::current() else {
            check!(false, "no platform");
            return Ok(());
        };
        for (leaf, subleaf) in [(0, 0), (1, 0), (7, 0), (0x8000_0000, 0), (0x8000_0001, 0)] {
            check_eq!(cpuid(leaf, subleaf), platform.cpuid(leaf, subleaf));
        }
    }
}

kernel_test! {
    fn kernel_memory_is_private_and_cr3_carries_the_c_bit() {
        let info = boot::info();
        check_eq!(read_cr3() & info.c_bit_mask, info.c_bit_mask);
        let va = phys_to_virt(info.free_base);
        let flags = mm::with_kernel_tables(|mapper, tables| mapper.translate(tables, va))
            .map(|translation| translation.flags);
        check!(flags.is_some(), "free kernel memory is not in the direct map");
        check!(!flags.is_some_and(|flags| flags.contains(PageFlags::SHARED)), "{flags:?}");
    }
}

kernel_test! {
    fn console_port_io_works_through_the_platform() {
        // The console's line status register: idle transmitter bits (5, 6)
        // read through the platform's port I/O (the GHCB on SNP).
        let Some(platform) = platform::current() else {
            check!(false, "no platform");
            return Ok(());
        };
        let status = platform.io().inb(abi::layout::SERIAL_PORT + 5);
        check!(status != 0xFF, "line status {status:#x}: no UART answered");
    }
}
