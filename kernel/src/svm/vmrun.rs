//! The SVM instructions the dev platform executes: VMRUN with the general
//! registers the host swaps itself, and the x87/SSE state moves around it.
//! Bare metal only.
//!
//! Around VMRUN: VMSAVE the host's FS/GS/TR/LDTR and syscall MSRs into the
//! host-state VMCB (VMRUN does not keep them and the kernel reaches its
//! per-CPU data through GS), load the guest's general registers, VMLOAD,
//! VMRUN, VMSAVE, store the guest's registers, VMLOAD the host's. The
//! host's callee-saved registers and stack are preserved by the routine;
//! the CPU restores RSP/RIP/RAX and the control registers from the host
//! save area at #VMEXIT. The host runs with GIF = 0 (see `platform::dev`),
//! so nothing interrupts this sequence.
//!
//! XRSTOR and XSETBV take guest-supplied values (a VMSA the guest wrote),
//! which can fault: both are listed in the exception table and report the
//! fault instead of crashing the SVSM.

use abi::vmcb::GuestGprs;

use super::fpu::XsaveArea;

unsafe extern "sysv64" {
    fn svm_vmrun(vmcb_pa: u64, gprs: *mut GuestGprs, host_vmcb_pa: u64);
    fn svm_xrstor(area: *const XsaveArea, components: u64) -> u64;
    fn svm_xsave(area: *mut XsaveArea, components: u64);
    fn svm_xsetbv(xcr0: u64) -> u64;
}

core::arch::global_asm!(
    r#"
    .section .text.svm, "ax"
    .global svm_vmrun
    svm_vmrun:
        push rbp
        push rbx
        push r12
        push r13
        push r14
        push r15
        push rdx
        push rsi
        push rdi
        mov rax, rdx
        vmsave rax
        mov rax, rsi
        mov rbx, [rax + 0x00]
        mov rcx, [rax + 0x08]
        mov rdx, [rax + 0x10]
        mov rsi, [rax + 0x18]
        mov rdi, [rax + 0x20]
        mov rbp, [rax + 0x28]
        mov r8,  [rax + 0x30]
        mov r9,  [rax + 0x38]
        mov r10, [rax + 0x40]
        mov r11, [rax + 0x48]
        mov r12, [rax + 0x50]
        mov r13, [rax + 0x58]
        mov r14, [rax + 0x60]
        mov r15, [rax + 0x68]
        mov rax, [rsp]
        vmload rax
        vmrun rax
        vmsave rax
        mov rax, [rsp + 8]
        mov [rax + 0x00], rbx
        mov [rax + 0x08], rcx
        mov [rax + 0x10], rdx
        mov [rax + 0x18], rsi
        mov [rax + 0x20], rdi
        mov [rax + 0x28], rbp
        mov [rax + 0x30], r8
        mov [rax + 0x38], r9
        mov [rax + 0x40], r10
        mov [rax + 0x48], r11
        mov [rax + 0x50], r12
        mov [rax + 0x58], r13
        mov [rax + 0x60], r14
        mov [rax + 0x68], r15
        mov rax, [rsp + 16]
        vmload rax
        add rsp, 24
        pop r15
        pop r14
        pop r13
        pop r12
        pop rbx
        pop rbp
        ret

    .global svm_xrstor
    svm_xrstor:
        mov rax, rsi
        mov rdx, rsi
        shr rdx, 32
    1:  xrstor64 [rdi]
        xor eax, eax
        ret
    2:  mov eax, 1
        ret

    .global svm_xsave
    svm_xsave:
        mov rax, rsi
        mov rdx, rsi
        shr rdx, 32
        xsave64 [rdi]
        ret

    .global svm_xsetbv
    svm_xsetbv:
        mov rax, rdi
        mov rdx, rdi
        shr rdx, 32
        xor ecx, ecx
    3:  xsetbv
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

const _: () = {
    use core::mem::offset_of;
    // The offsets the assembly above uses.
    assert!(offset_of!(GuestGprs, rbx) == 0x00);
    assert!(offset_of!(GuestGprs, rcx) == 0x08);
    assert!(offset_of!(GuestGprs, rdx) == 0x10);
    assert!(offset_of!(GuestGprs, rsi) == 0x18);
    assert!(offset_of!(GuestGprs, rdi) == 0x20);
    assert!(offset_of!(GuestGprs, rbp) == 0x28);
    assert!(offset_of!(GuestGprs, r8) == 0x30);
    assert!(offset_of!(GuestGprs, r15) == 0x68);
};

/// Runs the guest whose VMCB is at physical address `vmcb_pa` until the
/// next #VMEXIT.
///
/// # Safety
/// `vmcb_pa` must be a valid VMCB whose nested page tables keep the guest
/// out of SVSM memory and whose intercepts keep it from SVM instructions;
/// `host_vmcb_pa` must be this CPU's host-state page; EFER.SVME and
/// VM_HSAVE_PA must be set on this CPU and GIF must be 0.
pub unsafe fn vmrun(vmcb_pa: u64, gprs: &mut GuestGprs, host_vmcb_pa: u64) {
    // SAFETY: per the contract; the routine preserves the callee-saved
    // registers and the stack, and restores the host's segment state.
    unsafe { svm_vmrun(vmcb_pa, gprs, host_vmcb_pa) }
}

/// Loads x87/SSE/AVX state (the `components` the image and XCR0 both
/// have) from `area`; false if XRSTOR refused the image.
///
/// # Safety
/// CR4.OSXSAVE must be set.
pub unsafe fn xrstor(area: &XsaveArea, components: u64) -> bool {
    // SAFETY: per the contract; a fault is recovered through the
    // exception table. Only FPU/SSE registers change.
    unsafe { svm_xrstor(area, components) == 0 }
}

/// Saves x87/SSE/AVX state (`components`) into `area`.
///
/// # Safety
/// CR4.OSXSAVE must be set and `components` must be a subset of XCR0.
pub unsafe fn xsave(area: &mut XsaveArea, components: u64) {
    // SAFETY: per the contract; the area is 64-byte aligned and large
    // enough for the standard layout of x87, SSE and AVX.
    unsafe { svm_xsave(area, components) }
}

/// Sets XCR0; false if the CPU refused the value.
///
/// # Safety
/// CR4.OSXSAVE must be set; the SVSM itself must not depend on any XCR0
/// component (it is soft-float).
pub unsafe fn xsetbv(xcr0: u64) -> bool {
    // SAFETY: per the contract; a fault is recovered.
    unsafe { svm_xsetbv(xcr0) == 0 }
}

/// Reads XCR0.
pub fn xgetbv() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: XGETBV with ECX = 0 reads XCR0; it needs CR4.OSXSAVE, which
    // the dev platform sets before any guest runs.
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0, out("eax") low, out("edx") high,
            options(nomem, nostack))
    };
    (u64::from(high) << 32) | u64::from(low)
}
