//! Exceptions, descriptor tables, per-CPU data and control registers.

use core::sync::atomic::Ordering;

use kernel::cpu::extable;
use kernel::cpu::gdt::{IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI, TSS_SELECTOR};
use kernel::cpu::idt::{BREAKPOINTS, RECOVERED_FAULTS};
use kernel::cpu::percpu;
use kernel::cpu::registers::{EFER_NXE, MSR_EFER, MSR_GS_BASE, rdmsr, read_cr0, read_cr4};
use kernel::{check, check_eq, kernel_test};

kernel_test! {
    fn breakpoint_is_survived() {
        let before = BREAKPOINTS.load(Ordering::Relaxed);
        // SAFETY: int3 traps into the kernel's handler, which logs and returns.
        unsafe { core::arch::asm!("int3") };
        check_eq!(BREAKPOINTS.load(Ordering::Relaxed), before + 1);
    }
}

kernel_test! {
    fn page_fault_is_recovered() {
        let before = RECOVERED_FAULTS.load(Ordering::Relaxed);
        // SAFETY: the address is unmapped (below the kernel's mappings); the
        // read faults and resumes at its fixup.
        let result = unsafe { extable::read_u64(0x1000) };
        check_eq!(result, Err(extable::Fault));
        check_eq!(RECOVERED_FAULTS.load(Ordering::Relaxed), before + 1);
    }
}

kernel_test! {
    fn general_protection_fault_is_recovered() {
        // SAFETY: a non-canonical address raises #GP, recovered by the fixup.
        let result = unsafe { extable::read_u64(0x8000_0000_0000_0000) };
        check_eq!(result, Err(extable::Fault));
    }
}

kernel_test! {
    fn write_to_kernel_text_is_refused() {
        let text = kernel::boot::info().kernel_virt_base;
        // SAFETY: text is mapped read-only; with CR0.WP the write faults and
        // is recovered, so nothing changes.
        let result = unsafe { extable::write_u64(text, 0) };
        check_eq!(result, Err(extable::Fault));
    }
}

kernel_test! {
    fn percpu_data_is_reached_through_gs() {
        let cpu = percpu::current();
        check_eq!(cpu.index, 0);
        // SAFETY: GS_BASE exists on x86-64; reading it has no side effects.
        let gs_base = unsafe { rdmsr(MSR_GS_BASE) };
        check_eq!(gs_base, cpu.address());
        check_eq!(cpu as *const percpu::PerCpu as u64, cpu.address());
    }
}

kernel_test! {
    fn interrupt_stacks_are_distinct_and_set() {
        let cpu = percpu::current();
        let tops = [cpu.ist_top(IST_DOUBLE_FAULT), cpu.ist_top(IST_NMI), cpu.ist_top(IST_MACHINE_CHECK)];
        check!(tops.iter().all(|&t| t != 0 && t.is_multiple_of(16)), "IST tops {tops:x?}");
        check!(tops[0] != tops[1] && tops[1] != tops[2] && tops[0] != tops[2]);
        for pair in [(0, 1), (1, 2), (0, 2)] {
            let distance = tops[pair.0].abs_diff(tops[pair.1]);
            check!(distance >= percpu::IST_STACK_SIZE as u64, "stacks overlap: {tops:x?}");
        }
    }
}

kernel_test! {
    fn task_register_holds_the_tss() {
        let selector: u16;
        // SAFETY: `str` only reads the task register.
        unsafe { core::arch::asm!("str {0:x}", out(reg) selector, options(nomem, nostack)) };
        check_eq!(selector, TSS_SELECTOR);
    }
}

kernel_test! {
    fn protection_bits_are_on() {
        check!(read_cr0() & (1 << 16) != 0, "CR0.WP off");
        check!(read_cr0() & (1 << 31) != 0, "paging off");
        check!(read_cr4() & (1 << 5) != 0, "CR4.PAE off");
        // SAFETY: EFER exists on x86-64; reading it has no side effects.
        check!(unsafe { rdmsr(MSR_EFER) } & EFER_NXE != 0, "EFER.NXE off: NX bits would be ignored");
    }
}
