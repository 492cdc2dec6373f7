//! Per-CPU data, reached through GS: each CPU's GDT, TSS and interrupt
//! stacks, and its index. `gs:[0]` holds the structure's own address so
//! [`current`] needs no lookup.

use alloc::alloc::{alloc_zeroed, handle_alloc_error};
use alloc::boxed::Box;
use core::alloc::Layout;

use crate::cpu::gdt::{Gdt, IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI, Tss};
use crate::cpu::registers::{MSR_GS_BASE, wrmsr};

/// Size of each interrupt stack.
pub const IST_STACK_SIZE: usize = 16 * 1024;

/// One CPU's private data.
#[repr(C)]
pub struct PerCpu {
    /// Address of this structure (read through `gs:[0]`).
    self_address: u64,
    /// The CPU's index (0 = the boot CPU).
    pub index: u32,
    /// The CPU's APIC ID.
    pub apic_id: u32,
    tss: Tss,
    gdt: Gdt,
}

impl PerCpu {
    /// Top of the interrupt stack in IST slot `slot` (1..=7).
    pub fn ist_top(&self, slot: u8) -> u64 {
        let ist = self.tss.ist;
        ist[usize::from(slot.clamp(1, 7)) - 1]
    }

    /// Address of this structure.
    pub fn address(&self) -> u64 {
        self.self_address
    }
}

/// Allocates a zeroed interrupt stack that lives for ever; returns its top.
fn allocate_stack() -> u64 {
    let layout = Layout::from_size_align(IST_STACK_SIZE, 16).expect("constant layout is valid");
    // SAFETY: the layout has a non-zero size.
    let stack = unsafe { alloc_zeroed(layout) };
    if stack.is_null() {
        handle_alloc_error(layout);
    }
    stack as u64 + IST_STACK_SIZE as u64
}

/// Creates the per-CPU data of CPU `index`, loads its GDT and TSS, and
/// points GS at it. Runs once on each CPU, with the heap up.
pub fn init(index: u32, apic_id: u32) -> &'static PerCpu {
    let percpu: &'static mut PerCpu = Box::leak(Box::new(PerCpu {
        self_address: 0,
        index,
        apic_id,
        tss: Tss::new(),
        gdt: Gdt::new(0),
    }));
    percpu.self_address = percpu as *const PerCpu as u64;
    for slot in [IST_DOUBLE_FAULT, IST_NMI, IST_MACHINE_CHECK] {
        percpu.tss.ist[usize::from(slot) - 1] = allocate_stack();
    }
    percpu.gdt = Gdt::new(&percpu.tss as *const Tss as u64);
    let percpu: &'static PerCpu = percpu;
    // SAFETY: the GDT and TSS live in leaked (never freed, never moved)
    // memory; the GS base is only ever set to this structure.
    unsafe {
        percpu.gdt.load();
        wrmsr(MSR_GS_BASE, percpu.self_address);
    }
    percpu
}

/// This CPU's data.
pub fn current() -> &'static PerCpu {
    let address: u64;
    // SAFETY: `init` pointed GS at a leaked PerCpu whose first field is its
    // own address; reading it has no side effects.
    unsafe { core::arch::asm!("mov {}, gs:[0]", out(reg) address, options(nostack, readonly)) };
    // SAFETY: the address is that of a leaked PerCpu, not mutated after init.
    unsafe { &*(address as *const PerCpu) }
}
