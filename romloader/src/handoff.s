/* romloader_enter(handoff: *const Handoff) -> ! (AT&T syntax)
 *
 * Leaves long mode for the image's start context: 32-bit protected mode,
 * paging off. The Handoff block is first copied to handoff_block (a fixed
 * address), so the final register loads can use absolute addresses and
 * need no base register. Steps:
 *   1. load the handoff GDT (descriptors at the context's selectors) and
 *      far-return into 32-bit compatibility mode through the code selector;
 *   2. clear CR0.PG (this leaves long mode), write EFER, CR4, CR3, CR0;
 *   3. load the data selector into DS, ES, FS, GS, SS; load the context's
 *      GDTR and IDTR (the segment caches keep the handoff descriptors);
 *   4. load RFLAGS and the general registers, then jump to the entry.
 * The braced names are offsets in the Handoff struct of main.rs.
 */

    .section .text.handoff, "ax"
    .code64
    .global romloader_enter
romloader_enter:
    cli
    movq %rdi, %rsi
    leaq handoff_block(%rip), %rdi
    movl ${size}, %ecx
    rep movsb
    leaq handoff_block(%rip), %rbx
    leaq {gdt}(%rbx), %rax
    movq %rax, {loader_gdtr}+2(%rbx)
    movw ${gdt_limit}, {loader_gdtr}(%rbx)
    lgdt {loader_gdtr}(%rbx)
    movl {code_selector}(%rbx), %eax
    pushq %rax
    leaq compat32(%rip), %rax
    pushq %rax
    lretq

    .code32
compat32:
    movl %cr0, %eax
    andl $0x7fffffff, %eax
    movl %eax, %cr0
    movl $0xc0000080, %ecx
    movl handoff_block + {efer_low}, %eax
    movl handoff_block + {efer_high}, %edx
    wrmsr
    movl handoff_block + {cr4}, %eax
    movl %eax, %cr4
    movl handoff_block + {cr3}, %eax
    movl %eax, %cr3
    movl handoff_block + {cr0}, %eax
    movl %eax, %cr0
    movl handoff_block + {data_selector}, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss
    lgdt handoff_block + {context_gdtr}
    lidt handoff_block + {context_idtr}
    pushl handoff_block + {eflags}
    popfl
    movl handoff_block + {ebx}, %ebx
    movl handoff_block + {ecx}, %ecx
    movl handoff_block + {edx}, %edx
    movl handoff_block + {esi}, %esi
    movl handoff_block + {edi}, %edi
    movl handoff_block + {ebp}, %ebp
    movl handoff_block + {esp}, %esp
    movl handoff_block + {eax}, %eax
    jmp *handoff_block + {eip}

    .section .bss.handoff, "aw", @nobits
    .balign 16
handoff_block:
    .skip {size}
