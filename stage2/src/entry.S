/*
 * stage2 entry: 32-bit protected mode, paging off, interrupts off, flat CS
 * 0x08 and data 0x10, ESP = STAGE2_STACK_TOP. The same state on every
 * platform (SNP VMSA, IGVM native context, the QEMU ROM loader).
 *
 * Builds an identity map of the low 4 GiB with 2 MiB pages (with the SNP
 * C-bit, found in the CPUID page, since CPUID itself would raise #VC),
 * enables long mode and calls stage2_main(c_bit_mask).
 */
    .section .text.entry, "ax"
    .code32
    .globl stage2_entry
stage2_entry:
    cli
    cld
    lgdt gdt_descriptor
    ljmp $0x08, $1f
1:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss

    /* Zero the six table pages: PML4, PDPT, four PDs. */
    movl $boot_pml4, %edi
    movl $(6 * 4096 / 4), %ecx
    xorl %eax, %eax
    rep stosl

    call c_bit_high
    movl %eax, c_bit_high_word
    movl %eax, %edx

    /* PML4[0] -> PDPT */
    movl $boot_pdpt, %eax
    orl $0x3, %eax
    movl %eax, boot_pml4
    movl %edx, boot_pml4 + 4

    /* PDPT[0..4] -> PD0..PD3 */
    movl $boot_pd, %eax
    orl $0x3, %eax
    movl $boot_pdpt, %edi
    movl $4, %ecx
2:  movl %eax, (%edi)
    movl %edx, 4(%edi)
    addl $0x1000, %eax
    addl $8, %edi
    loop 2b

    /* 2048 PD entries of 2 MiB: present, writable, large. */
    movl $boot_pd, %edi
    movl $0x83, %eax
    movl $2048, %ecx
3:  movl %eax, (%edi)
    movl %edx, 4(%edi)
    addl $0x200000, %eax
    addl $8, %edi
    loop 3b

    /* CR4.PAE */
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4

    /* EFER.LME | EFER.NXE, written only if it changes (SVME stays). */
    movl $0xC0000080, %ecx
    rdmsr
    movl %eax, %ebx
    orl $0x900, %eax
    cmpl %eax, %ebx
    je 4f
    wrmsr
4:
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl %cr0, %eax
    orl $0x80000000, %eax
    movl %eax, %cr0
    ljmp $0x18, $long_mode

/*
 * Returns in EAX the C-bit as a mask of the upper half of a page-table entry
 * (0 off SNP). The platform comes from the measured boot parameters
 * (BootParams.platform at 0x10000c, 2 = SNP); SNP must then be active in
 * SEV_STATUS, and the C-bit position comes from CPUID 0x8000001F EBX[5:0] in
 * the CPUID page at 0x102000. Anything inconsistent stops here: this early
 * nothing can report an error.
 */
c_bit_high:
    cmpl $2, 0x10000c
    jne .Lno_c_bit
    movl $0xC0010131, %ecx
    rdmsr
    testl $0x4, %eax
    jz .Lstop
    movl $0x102000, %esi
    movl (%esi), %ecx           /* number of entries */
    cmpl $64, %ecx
    ja .Lstop
    addl $16, %esi
.Lnext_leaf:
    testl %ecx, %ecx
    jz .Lstop
    cmpl $0x8000001F, 0(%esi)   /* eax_in */
    jne .Lskip_leaf
    cmpl $0, 4(%esi)            /* ecx_in */
    jne .Lskip_leaf
    movl 28(%esi), %ecx         /* ebx */
    andl $0x3f, %ecx
    cmpl $32, %ecx
    jb .Lstop
    cmpl $52, %ecx
    jae .Lstop
    subl $32, %ecx
    xorl %eax, %eax
    btsl %ecx, %eax
    ret
.Lskip_leaf:
    addl $48, %esi
    decl %ecx
    jmp .Lnext_leaf
.Lno_c_bit:
    xorl %eax, %eax
    ret
.Lstop:
    hlt
    jmp .Lstop

    .code64
long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss

    /* Clear .bss (the boot page tables are not in it). */
    leaq _bss(%rip), %rdi
    leaq _ebss(%rip), %rcx
    subq %rdi, %rcx
    xorl %eax, %eax
    rep stosb

    movl c_bit_high_word(%rip), %edi
    shlq $32, %rdi
    andq $~0xf, %rsp
    xorl %ebp, %ebp
    call stage2_main
5:  hlt
    jmp 5b

    .section .rodata
    .balign 8
/* Descriptors with the accessed bit preset (a CPU never needs to write them). */
gdt:
    .quad 0
    .quad 0x00cf9b000000ffff    /* 0x08: 32-bit code */
    .quad 0x00cf93000000ffff    /* 0x10: data */
    .quad 0x00af9b000000ffff    /* 0x18: 64-bit code */
gdt_end:
gdt_descriptor:
    .word gdt_end - gdt - 1
    .long gdt

    .section .data
    .balign 4
c_bit_high_word:
    .long 0

    .section .pagetables, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4 * 4096
