//! Exceptions: the IDT, entry stubs that save every register into a
//! [`TrapFrame`], and the dispatcher.
//!
//! Breakpoints are logged and survived. A fault at an instruction listed in
//! the exception table (see [`crate::cpu::extable`]) resumes at its fixup:
//! that is how the kernel touches memory that may legitimately fault. Every
//! other exception is fatal: the handler prints the vector, error code, RIP,
//! CR2 and all registers, and stops the VM with a failure status.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::cpu::gdt::{IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI, KERNEL_CS};
use crate::cpu::{extable, registers};

/// Registers saved on exception entry, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// The exception vector (pushed by the stub).
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Exception vectors the kernel names.
pub mod vector {
    pub const DIVIDE_ERROR: u64 = 0;
    pub const NMI: u64 = 2;
    pub const BREAKPOINT: u64 = 3;
    pub const INVALID_OPCODE: u64 = 6;
    pub const DOUBLE_FAULT: u64 = 8;
    pub const GENERAL_PROTECTION: u64 = 13;
    pub const PAGE_FAULT: u64 = 14;
    pub const MACHINE_CHECK: u64 = 18;
    pub const VMM_COMMUNICATION: u64 = 29;
}

/// Name of an exception vector, for reports.
pub fn vector_name(vector: u64) -> &'static str {
    match vector {
        0 => "#DE divide error",
        1 => "#DB debug",
        2 => "NMI",
        3 => "#BP breakpoint",
        4 => "#OF overflow",
        5 => "#BR bound range",
        6 => "#UD invalid opcode",
        7 => "#NM device not available",
        8 => "#DF double fault",
        10 => "#TS invalid TSS",
        11 => "#NP segment not present",
        12 => "#SS stack fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        16 => "#MF x87 error",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        19 => "#XM SIMD error",
        20 => "#VE virtualization",
        21 => "#CP control protection",
        28 => "#HV hypervisor injection",
        29 => "#VC VMM communication",
        30 => "#SX security",
        _ => "reserved",
    }
}

/// Breakpoints taken (for tests and diagnostics).
pub static BREAKPOINTS: AtomicU64 = AtomicU64::new(0);
/// Faults recovered through the exception table.
pub static RECOVERED_FAULTS: AtomicU64 = AtomicU64::new(0);

/// A handler the platform installs for #VC (SNP); it returns whether it
/// handled the exception.
pub type VcHandler = fn(&mut TrapFrame) -> bool;
static VC_HANDLER: spin::Once<VcHandler> = spin::Once::new();

/// Installs the platform's #VC handler.
pub fn set_vc_handler(handler: VcHandler) {
    VC_HANDLER.call_once(|| handler);
}

#[unsafe(no_mangle)]
extern "sysv64" fn trap_dispatch(frame: &mut TrapFrame) {
    let vector = frame.vector;
    if vector == vector::BREAKPOINT {
        BREAKPOINTS.fetch_add(1, Ordering::Relaxed);
        log::info!("breakpoint at {:#x}", frame.rip);
        return;
    }
    if vector == vector::VMM_COMMUNICATION && VC_HANDLER.get().is_some_and(|handler| handler(frame))
    {
        return;
    }
    let recoverable = matches!(
        vector,
        vector::PAGE_FAULT | vector::GENERAL_PROTECTION | vector::VMM_COMMUNICATION
    );
    if !(recoverable && recover(frame)) {
        fatal(frame);
    }
}

fn recover(frame: &mut TrapFrame) -> bool {
    match extable::fixup_for(frame.rip) {
        Some(fixup) => {
            RECOVERED_FAULTS.fetch_add(1, Ordering::Relaxed);
            frame.rip = fixup;
            true
        }
        None => false,
    }
}

fn fatal(frame: &TrapFrame) -> ! {
    let cr2 = registers::read_cr2();
    crate::console::print_emergency(format_args!(
        "\nFATAL: exception {} (vector {}) error code {:#x}\n  RIP {:#018x} CS {:#x} RFLAGS {:#x} RSP {:#018x} SS {:#x} CR2 {:#018x}\n  \
         RAX {:#018x} RBX {:#018x} RCX {:#018x} RDX {:#018x}\n  RSI {:#018x} RDI {:#018x} RBP {:#018x} R8  {:#018x}\n  \
         R9  {:#018x} R10 {:#018x} R11 {:#018x} R12 {:#018x}\n  R13 {:#018x} R14 {:#018x} R15 {:#018x} CR3 {:#018x}\n",
        vector_name(frame.vector),
        frame.vector,
        frame.error_code,
        frame.rip,
        frame.cs,
        frame.rflags,
        frame.rsp,
        frame.ss,
        cr2,
        frame.rax,
        frame.rbx,
        frame.rcx,
        frame.rdx,
        frame.rsi,
        frame.rdi,
        frame.rbp,
        frame.r8,
        frame.r9,
        frame.r10,
        frame.r11,
        frame.r12,
        frame.r13,
        frame.r14,
        frame.r15,
        registers::read_cr3(),
    ));
    crate::platform::exit_failure()
}

#[repr(C)]
#[derive(Clone, Copy)]
struct IdtEntry {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attributes: u8,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}

impl IdtEntry {
    const MISSING: IdtEntry = IdtEntry {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attributes: 0,
        offset_middle: 0,
        offset_high: 0,
        reserved: 0,
    };

    fn interrupt_gate(handler: u64, ist: u8) -> IdtEntry {
        IdtEntry {
            offset_low: handler as u16,
            selector: KERNEL_CS,
            ist,
            // Present, DPL 0, 64-bit interrupt gate.
            type_attributes: 0x8E,
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

/// Number of exception vectors with a stub.
pub const EXCEPTION_VECTORS: usize = 32;

#[repr(C, align(16))]
struct Idt([IdtEntry; 256]);

static mut IDT: Idt = Idt([IdtEntry::MISSING; 256]);

unsafe extern "C" {
    /// Addresses of the 32 entry stubs (defined in the assembly below).
    static trap_stubs: [u64; EXCEPTION_VECTORS];
}

/// Fills the IDT with the exception stubs and loads it on this CPU.
pub fn init() {
    // SAFETY: `trap_stubs` is a constant table emitted by the assembly below.
    let stubs = unsafe { &trap_stubs };
    // SAFETY: the IDT is written here, before it is loaded, on the boot CPU
    // only; afterwards it is only read (by the CPU).
    let idt = unsafe { &mut *core::ptr::addr_of_mut!(IDT) };
    for (vector, stub) in stubs.iter().enumerate() {
        let ist = match vector as u64 {
            vector::DOUBLE_FAULT => IST_DOUBLE_FAULT,
            vector::NMI => IST_NMI,
            vector::MACHINE_CHECK => IST_MACHINE_CHECK,
            _ => 0,
        };
        idt.0[vector] = IdtEntry::interrupt_gate(*stub, ist);
    }
    load();
}

/// Loads the (already filled) IDT on this CPU.
pub fn load() {
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let pointer = Pointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: core::ptr::addr_of!(IDT) as u64,
    };
    // SAFETY: the IDT is static and its gates point at the stubs below.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &pointer, options(nostack)) };
}

core::arch::global_asm!(
    r#"
    .macro trap_without_error_code vector
    .balign 16
    trap_stub_\vector:
        push 0
        push \vector
        jmp trap_common
    .endm
    .macro trap_with_error_code vector
    .balign 16
    trap_stub_\vector:
        push \vector
        jmp trap_common
    .endm

    .section .text.traps, "ax"
    trap_without_error_code 0
    trap_without_error_code 1
    trap_without_error_code 2
    trap_without_error_code 3
    trap_without_error_code 4
    trap_without_error_code 5
    trap_without_error_code 6
    trap_without_error_code 7
    trap_with_error_code 8
    trap_without_error_code 9
    trap_with_error_code 10
    trap_with_error_code 11
    trap_with_error_code 12
    trap_with_error_code 13
    trap_with_error_code 14
    trap_without_error_code 15
    trap_without_error_code 16
    trap_with_error_code 17
    trap_without_error_code 18
    trap_without_error_code 19
    trap_without_error_code 20
    trap_with_error_code 21
    trap_without_error_code 22
    trap_without_error_code 23
    trap_without_error_code 24
    trap_without_error_code 25
    trap_without_error_code 26
    trap_without_error_code 27
    trap_without_error_code 28
    trap_with_error_code 29
    trap_with_error_code 30
    trap_without_error_code 31

    trap_common:
        push rax
        push rbx
        push rcx
        push rdx
        push rsi
        push rdi
        push rbp
        push r8
        push r9
        push r10
        push r11
        push r12
        push r13
        push r14
        push r15
        mov rdi, rsp
        cld
        call trap_dispatch
        pop r15
        pop r14
        pop r13
        pop r12
        pop r11
        pop r10
        pop r9
        pop r8
        pop rbp
        pop rdi
        pop rsi
        pop rdx
        pop rcx
        pop rbx
        pop rax
        add rsp, 16
        iretq

    .section .rodata.trap_stubs, "a"
    .balign 8
    .global trap_stubs
    trap_stubs:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .quad trap_stub_\v
    .endr
    "#
);
