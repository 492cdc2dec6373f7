//! The GDT and TSS of a CPU. The TSS carries the interrupt stacks (IST) that
//! #DF, NMI and #MC switch to, so they run on a known-good stack even when
//! the fault came from a broken one.

/// Kernel code segment selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data segment selector.
pub const KERNEL_DS: u16 = 0x10;
/// TSS selector.
pub const TSS_SELECTOR: u16 = 0x18;

/// IST slot (1-based, as in IDT entries) of the double-fault stack.
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST slot of the NMI stack.
pub const IST_NMI: u8 = 2;
/// IST slot of the machine-check stack.
pub const IST_MACHINE_CHECK: u8 = 3;

/// The 64-bit task-state segment.
#[repr(C, packed(4))]
pub struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    /// Interrupt stack tops, IST1..IST7 at indices 0..7.
    pub ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

const _: () = assert!(core::mem::size_of::<Tss>() == 104);

impl Tss {
    /// An empty TSS without an I/O permission map.
    pub const fn new() -> Tss {
        Tss {
            reserved0: 0,
            rsp: [0; 3],
            reserved1: 0,
            ist: [0; 7],
            reserved2: 0,
            reserved3: 0,
            iomap_base: core::mem::size_of::<Tss>() as u16,
        }
    }
}

impl Default for Tss {
    fn default() -> Tss {
        Tss::new()
    }
}

/// A GDT: null, code, data, and the two-slot TSS descriptor.
#[repr(C, align(16))]
pub struct Gdt {
    entries: [u64; 5],
}

impl Gdt {
    /// The GDT for a CPU whose TSS is at `tss`.
    pub fn new(tss: u64) -> Gdt {
        let limit = (core::mem::size_of::<Tss>() - 1) as u64;
        // Available 64-bit TSS (type 9), present.
        let low = (limit & 0xFFFF)
            | ((tss & 0xFF_FFFF) << 16)
            | (0x89 << 40)
            | (((limit >> 16) & 0xF) << 48)
            | (((tss >> 24) & 0xFF) << 56);
        Gdt {
            entries: [
                0,
                0x00AF_9B00_0000_FFFF, // 64-bit code, accessed
                0x00CF_9300_0000_FFFF, // data, accessed
                low,
                tss >> 32,
            ],
        }
    }

    /// Loads this GDT, reloads the segment registers and the task register.
    ///
    /// # Safety
    /// The GDT and the TSS it describes must stay at their addresses and
    /// unchanged for as long as the CPU uses them.
    pub unsafe fn load(&'static self) {
        #[repr(C, packed)]
        struct Pointer {
            limit: u16,
            base: u64,
        }
        let pointer = Pointer {
            limit: (core::mem::size_of::<Gdt>() - 1) as u16,
            base: self as *const Gdt as u64,
        };
        // SAFETY: the descriptor table is valid and 'static; the selectors
        // match its layout; the far return reloads CS.
        unsafe {
            core::arch::asm!(
                "lgdt [{pointer}]",
                "push {cs}",
                "lea {tmp}, [rip + 2f]",
                "push {tmp}",
                "retfq",
                "2:",
                "mov ds, {ds:x}",
                "mov es, {ds:x}",
                "mov ss, {ds:x}",
                "ltr {tss:x}",
                pointer = in(reg) &pointer,
                cs = in(reg) u64::from(KERNEL_CS),
                tmp = lateout(reg) _,
                ds = in(reg) KERNEL_DS,
                tss = in(reg) TSS_SELECTOR,
            );
        }
    }
}

/// The boot GDT: code and data only, used until the per-CPU GDT with its
/// TSS exists (the selectors are the same, so the IDT works with both).
static BOOT_GDT: [u64; 3] = [0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];

/// Loads the boot GDT and reloads the segment registers.
pub fn load_boot_gdt() {
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let pointer =
        Pointer { limit: (8 * BOOT_GDT.len() - 1) as u16, base: BOOT_GDT.as_ptr() as u64 };
    // SAFETY: BOOT_GDT is a static, valid descriptor table whose selectors
    // 0x08 and 0x10 are flat 64-bit code and data; the far return reloads CS.
    unsafe {
        core::arch::asm!(
            "lgdt [{pointer}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            "mov ss, {ds:x}",
            pointer = in(reg) &pointer,
            cs = in(reg) u64::from(KERNEL_CS),
            tmp = lateout(reg) _,
            ds = in(reg) KERNEL_DS,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tss_descriptor_encodes_base_and_limit() {
        let gdt = Gdt::new(0xFFFF_8000_1234_5678);
        let low = gdt.entries[3];
        assert_eq!(low & 0xFFFF, 103);
        assert_eq!((low >> 16) & 0xFF_FFFF, 0x34_5678);
        assert_eq!((low >> 40) & 0xFF, 0x89);
        assert_eq!((low >> 56) & 0xFF, 0x12);
        assert_eq!(gdt.entries[4], 0xFFFF_8000);
    }
}
