/* Reset to long mode (AT&T syntax).
 *
 * reset_vector (0xFFFFFFF0, 16-bit, CS base 0xFFFF0000) jumps to reset16,
 * which loads the ROM GDT and enters 32-bit protected mode. protected32
 * copies the loader's code and data from the ROM to low RAM, zeroes .bss
 * and jumps to ram_entry32 in the RAM copy, which identity-maps the first
 * 4 GiB with 2 MiB pages, enables long mode and calls romloader_main.
 *
 * The ROM GDT has its accessed bits preset: a CPU loading a descriptor
 * whose accessed bit is clear writes the bit back, which a ROM cannot take
 * (KVM-PVM hangs on it).
 */

    .section .reset16, "ax"
    .code16
reset16:
    cli
    cld
    lgdtl %cs:(rom_gdt_pointer - 0xffff0000)
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

    .balign 8
rom_gdt:
    .quad 0
    .quad 0x00cf9b000000ffff    /* 0x08: flat 32-bit code */
    .quad 0x00cf93000000ffff    /* 0x10: flat data */
    .quad 0x00af9b000000ffff    /* 0x18: 64-bit code */
rom_gdt_end:
rom_gdt_pointer:
    .word rom_gdt_end - rom_gdt - 1
    .long rom_gdt

    .section .reset_vector, "ax"
    .code16
    .global reset_vector
reset_vector:
    jmp reset16
    .fill 16 - (. - reset_vector), 1, 0xf4

    .section .text.boot32, "ax"
    .code32
ram_entry32:
    /* 2048 2 MiB pages: the first 4 GiB, present, writable, large. */
    movl $boot_pd, %edi
    movl $0x83, %eax
    movl $2048, %ecx
1:  movl %eax, (%edi)
    movl $0, 4(%edi)
    addl $0x200000, %eax
    addl $8, %edi
    loop 1b
    movl $(boot_pd + 0x0003), boot_pdpt
    movl $(boot_pd + 0x1003), boot_pdpt + 8
    movl $(boot_pd + 0x2003), boot_pdpt + 16
    movl $(boot_pd + 0x3003), boot_pdpt + 24
    movl $(boot_pdpt + 3), boot_pml4
    movl %cr4, %eax
    orl $0x20, %eax             /* PAE */
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx      /* EFER */
    rdmsr
    orl $0x100, %eax            /* LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax       /* PG | PE */
    movl %eax, %cr0
    ljmpl $0x18, $long64

    .code64
long64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    leaq boot_stack_top(%rip), %rsp
    call romloader_main
2:  hlt
    jmp 2b

    .section .bss.pagetables, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096 * 4

    .section .bss.stack, "aw", @nobits
    .balign 16
boot_stack:
    .skip 0x8000
boot_stack_top:
