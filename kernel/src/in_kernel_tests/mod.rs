//! Tests that run inside the booted kernel (feature `test-runner`): what
//! needs real page tables, exceptions, per-CPU data and the platform.

mod cpu;
mod dev;
pub mod fatal;
mod memory;
mod platform;
mod snp;
mod vtpm;

use kernel::testing::KernelTest;

unsafe extern "C" {
    static __kernel_tests_start: u8;
    static __kernel_tests_end: u8;
}

/// Every registered test, in link order.
pub fn all() -> &'static [KernelTest] {
    // SAFETY: the linker script collects every `.kernel_tests` entry (all
    // `KernelTest` statics written by `kernel_test!`) between the two
    // symbols, in a read-only section.
    unsafe {
        let start = (&raw const __kernel_tests_start).cast::<KernelTest>();
        let end = (&raw const __kernel_tests_end).cast::<KernelTest>();
        let count = (end as usize - start as usize) / core::mem::size_of::<KernelTest>();
        core::slice::from_raw_parts(start, count)
    }
}
