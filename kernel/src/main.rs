//! The kernel binary: the entry point stage2 jumps to, the panic handler,
//! the global allocator, and (in a test build) the in-kernel tests.

#![no_std]
#![no_main]

extern crate alloc;

#[cfg(feature = "test-runner")]
mod in_kernel_tests;

use kernel::platform;

#[global_allocator]
static ALLOCATOR: kernel::mm::KernelAllocator = kernel::mm::KernelAllocator;

core::arch::global_asm!(
    r#"
    .section .text.entry, "ax"
    .global _start
    _start:
        lea rsp, [rip + boot_stack_top]
        xor ebp, ebp
        call kernel_entry
        ud2

    .section .bss.boot_stack, "aw", @nobits
    .balign 4096
    boot_stack:
        .skip 0x10000
    boot_stack_top:
    "#
);

/// Stage2 jumps to `_start` with the boot info's physical address in RDI.
#[unsafe(no_mangle)]
extern "sysv64" fn kernel_entry(boot_info_pa: u64) -> ! {
    // SAFETY: this is the first code after stage2 on the boot CPU, with
    // stage2's tables live and RDI (the argument) set by stage2.
    let kernel = unsafe { kernel::boot::start(boot_info_pa) };
    run(kernel)
}

#[cfg(feature = "test-runner")]
fn run(_kernel: kernel::boot::Kernel) -> ! {
    in_kernel_tests::fatal::run_if_requested();
    let summary = kernel::testing::run_tests(in_kernel_tests::all(), kernel::console::print);
    if summary.failed == 0 { platform::exit_success() } else { platform::exit_failure() }
}

#[cfg(not(feature = "test-runner"))]
fn run(kernel: kernel::boot::Kernel) -> ! {
    kernel::guest_start::run(kernel)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    kernel::console::print_emergency(format_args!("\nPANIC: {info}\n"));
    platform::exit_failure()
}
