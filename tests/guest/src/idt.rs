//! The guest's 64-bit IDT: every exception is reported on the console and
//! ends the test (failure), except #VC (vector 29), which forwards port
//! I/O through the GHCB when SNP encryption is really active.

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::console;

/// The 64-bit code selector of the reset code's GDT.
pub const CODE64_SELECTOR: u16 = 0x18;
/// #VC.
const VC_VECTOR: u64 = 29;
const VECTORS: usize = 32;

/// The registers an exception stub saves, in memory order.
#[repr(C)]
#[derive(Debug)]
pub struct Frame {
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
    /// The vector number.
    pub vector: u64,
    /// The CPU's error code (0 for vectors without one).
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

#[repr(C, align(16))]
struct Idt([u64; VECTORS * 2]);

static mut IDT: Idt = Idt([0; VECTORS * 2]);
static IN_HANDLER: AtomicBool = AtomicBool::new(false);

// One stub per vector: vectors without an error code push a 0 so every
// frame looks the same; then the vector, the registers, and a call into
// Rust with RDI = the frame.
macro_rules! stubs {
    ($($v:literal $err:literal),*) => {
        global_asm!(
            $(
                concat!(".global exception_stub_", $v),
                concat!("exception_stub_", $v, ":"),
                concat!(".if ", $err, " == 0"),
                "push 0",
                ".endif",
                concat!("push ", $v),
                "jmp exception_common",
            )*
            ".section .rodata",
            ".balign 8",
            ".global exception_stubs",
            "exception_stubs:",
            $( concat!(".quad exception_stub_", $v), )*
            ".text",
        );
    };
}

stubs!(0 0, 1 0, 2 0, 3 0, 4 0, 5 0, 6 0, 7 0, 8 1, 9 0, 10 1, 11 1, 12 1, 13 1, 14 1, 15 0,
       16 0, 17 1, 18 0, 19 0, 20 0, 21 1, 22 0, 23 0, 24 0, 25 0, 26 0, 27 0, 28 0, 29 1, 30 1,
       31 0);

global_asm!(
    "exception_common:",
    "push rax",
    "push rbx",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push rbp",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov rdi, rsp",
    "mov rbp, rsp",
    "and rsp, -16",
    "call {handler}",
    "mov rsp, rbp",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rbp",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rbx",
    "pop rax",
    "add rsp, 16",
    "iretq",
    handler = sym exception_handler,
);

unsafe extern "C" {
    static exception_stubs: [u64; VECTORS];
}

/// Fills the IDT; each vCPU then loads it with [`load`].
pub fn init() {
    // SAFETY: the stub table is read-only data defined above.
    let stubs = unsafe { &*core::ptr::addr_of!(exception_stubs) };
    for (vector, &handler) in stubs.iter().enumerate() {
        let low = (handler & 0xFFFF)
            | (u64::from(CODE64_SELECTOR) << 16)
            | (0x8E00 << 32) // present, DPL 0, 64-bit interrupt gate
            | ((handler >> 16) & 0xFFFF) << 48;
        let high = handler >> 32;
        // SAFETY: the BSP fills the IDT once, before any other vCPU runs or
        // any IDT is loaded.
        unsafe {
            let idt = &mut *core::ptr::addr_of_mut!(IDT);
            idt.0[vector * 2] = low;
            idt.0[vector * 2 + 1] = high;
        }
    }
}

/// Loads the IDT on this vCPU.
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
    // SAFETY: the IDT is static and filled by `init`; its entries point at
    // the stubs above.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack)) };
}

extern "C" fn exception_handler(frame: &mut Frame) {
    if frame.vector == VC_VECTOR && crate::snp::handle_vc(frame) {
        return;
    }
    if IN_HANDLER.swap(true, Ordering::SeqCst) {
        console::halt_forever();
    }
    crate::runner::abort(format_args!(
        "exception {} (error code {:#x}) at rip {:#x}, rsp {:#x}",
        frame.vector, frame.error_code, frame.rip, frame.rsp
    ))
}
