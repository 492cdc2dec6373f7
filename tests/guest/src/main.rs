//! The test guest firmware: reset code (16-bit -> 32-bit -> long mode),
//! the SEV metadata and GUIDed table an IGVM builder reads, and the entry
//! points of the boot vCPU and of the AP the guest creates.
//!
//! The reset code copies code and data from the image to pre-validated RAM
//! (the x86_64-unknown-none code model cannot address code at 0xFFFxxxxx),
//! reads SEV_STATUS (a #GP there means no SEV: it reads as 0), takes the
//! C-bit position from the CPUID page when SNP is active, identity-maps the
//! first 4 GiB with 2 MiB pages (C-bit set) and enters long mode.

#![no_std]
#![no_main]

use core::arch::global_asm;

use test_guest::layout::{
    self, CPUID_GPA, GUID_TABLE_AREA_SIZE, PD_GPA, PDPT_GPA, PML4_GPA, SEV_METADATA_SIZE,
};

/// The "ASEV" block, placed at `layout::SEV_METADATA_GPA` by the linker.
#[used]
#[unsafe(link_section = ".sev_metadata")]
static SEV_METADATA: [u8; SEV_METADATA_SIZE] = layout::sev_metadata_bytes();

/// The GUIDed table, ending 32 bytes before the end of the image.
#[used]
#[unsafe(link_section = ".guid_table")]
static GUID_TABLE: [u8; GUID_TABLE_AREA_SIZE] = layout::guid_table_area();

global_asm!(
    r#"
    .section .reset16, "ax"
    .code16
reset16:
    cli
    cld
    lgdtl %cs:(guest_gdt_pointer - 0xffff0000)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $protected32

    .code32
protected32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl $__ram_image_load, %esi
    movl $__ram_image_start, %edi
    movl $__ram_image_size, %ecx
    rep movsb
    movl $__bss_start, %edi
    movl $__bss_size, %ecx
    xorl %eax, %eax
    rep stosb
    movl $ram_entry32, %eax
    jmp *%eax

    /* Descriptors with their accessed bits preset (a ROM cannot take the
       CPU's write-back of the bit). */
    .balign 8
guest_gdt:
    .quad 0
    .quad 0x00cf9b000000ffff    /* 0x08: flat 32-bit code */
    .quad 0x00cf93000000ffff    /* 0x10: flat data */
    .quad 0x00af9b000000ffff    /* 0x18: 64-bit code */
guest_gdt_end:
    .global guest_gdt_pointer
guest_gdt_pointer:
    .word guest_gdt_end - guest_gdt - 1
    .long guest_gdt

    .section .reset_vector, "ax"
    .code16
    .global reset_vector
reset_vector:
    jmp reset16
    .fill 16 - (. - reset_vector), 1, 0xf4

    .section .text.boot32, "ax"
    .code32
ram_entry32:
    /* A #GP handler for the SEV_STATUS read below (the MSR does not exist
       without SEV): it reads as 0. */
    movl $gp32, %eax
    movw %ax, idt32 + 13 * 8
    movw $0x08, idt32 + 13 * 8 + 2
    movw $0x8e00, idt32 + 13 * 8 + 4
    shrl $16, %eax
    movw %ax, idt32 + 13 * 8 + 6
    lidtl idt32_pointer
    movl $0xc0010131, %ecx
sev_status_rdmsr:
    rdmsr
    movl %eax, BOOT_SEV_STATUS
    movl %edx, BOOT_SEV_STATUS + 4

    /* The C-bit, when SNP is active: CPUID page entry for 0x8000001F,
       EBX[5:0]; positions below 32 are not used by any part. */
    xorl %ebx, %ebx
    testl $4, %eax
    jz 3f
    movl ${cpuid_page}, %esi
    movl (%esi), %ecx
    cmpl $64, %ecx
    jbe 1f
    movl $64, %ecx
1:  addl $16, %esi
2:  testl %ecx, %ecx
    jz 3f
    cmpl $0x8000001f, (%esi)
    je 4f
    addl $48, %esi
    decl %ecx
    jmp 2b
4:  movl 0x1c(%esi), %ecx
    andl $0x3f, %ecx
    cmpl $32, %ecx
    jb 3f
    subl $32, %ecx
    movl $1, %ebx
    shll %cl, %ebx
3:  movl %ebx, BOOT_C_BIT_HIGH

    /* Page tables: PML4 -> PDPT -> 4 PDs of 2 MiB pages (the first 4 GiB). */
    movl ${pml4}, %edi
    movl $(6 * 4096 / 4), %ecx
    xorl %eax, %eax
    rep stosl
    movl ${pd}, %edi
    movl $0x83, %eax
    movl $2048, %ecx
5:  movl %eax, (%edi)
    movl %ebx, 4(%edi)
    addl $0x200000, %eax
    addl $8, %edi
    loop 5b
    movl ${pdpt}, %edi
    movl $({pd} + 3), %eax
    movl $4, %ecx
6:  movl %eax, (%edi)
    movl %ebx, 4(%edi)
    addl $4096, %eax
    addl $8, %edi
    loop 6b
    movl $({pdpt} + 3), {pml4}
    movl %ebx, {pml4} + 4

    movl %cr4, %eax
    orl $0x20, %eax             /* PAE */
    movl %eax, %cr4
    movl ${pml4}, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx      /* EFER */
    rdmsr
    orl $0x100, %eax            /* LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax       /* PG | PE */
    movl %eax, %cr0
    ljmpl $0x18, $long64

gp32:
    addl $4, %esp               /* the error code */
    cmpl $sev_status_rdmsr, (%esp)
    jne 7f
    addl $2, (%esp)             /* skip the 2-byte RDMSR */
    xorl %eax, %eax
    xorl %edx, %edx
    iretl
7:  hlt
    jmp 7b

    .code64
long64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    leaq bsp_stack_top(%rip), %rsp
    xorl %ebp, %ebp
    call guest_main
8:  hlt
    jmp 8b

    /* The AP starts here in long mode (its VMSA sets CR3, segments, RSP). */
    .global ap_entry
ap_entry:
    xorl %ebp, %ebp
    call ap_main
9:  hlt
    jmp 9b

    .section .data.idt32, "aw"
    .balign 8
idt32_pointer:
    .word 14 * 8 - 1
    .long idt32

    .section .bss.boot, "aw", @nobits
    .balign 16
idt32:
    .skip 14 * 8
    .balign 4096
bsp_stack:
    .skip 0x8000
    .global bsp_stack_top
bsp_stack_top:
    .balign 4096
    .global ap_stack
ap_stack:
    .skip 0x4000
    .global ap_stack_top
ap_stack_top:
    "#,
    cpuid_page = const CPUID_GPA,
    pml4 = const PML4_GPA,
    pdpt = const PDPT_GPA,
    pd = const PD_GPA,
    options(att_syntax)
);

#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    test_guest::run_boot_vcpu()
}

#[unsafe(no_mangle)]
extern "C" fn ap_main() -> ! {
    test_guest::run_ap()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    test_guest::abort(format_args!("panic: {info}"))
}
