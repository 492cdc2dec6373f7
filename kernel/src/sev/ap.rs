//! Starting the SVSM on a secondary CPU under SNP. The hypervisor cannot
//! set an SNP vCPU's registers, so the SVSM writes the new CPU's VMPL0 VMSA
//! itself: already in 64-bit mode on the kernel's page tables, GDT and IDT
//! (copied from the CPU that starts it), at the kernel's AP entry with its
//! stack and CPU index, and asks the hypervisor to run it (AP creation).

use abi::vmsa::{EFER_SVME, Segment, Vmsa, attrib, reset};

use crate::cpu::gdt::{KERNEL_CS, KERNEL_DS};

/// A descriptor-table register (GDTR, IDTR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableRegister {
    /// Linear base address.
    pub base: u64,
    /// Limit (size - 1).
    pub limit: u16,
}

/// What the new CPU starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApState {
    /// CR0 of the starting CPU (paging and protection on).
    pub cr0: u64,
    /// CR3: the kernel's page tables (with the C-bit).
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER (LME, LMA, NXE, SVME).
    pub efer: u64,
    /// The GDT with the kernel's code and data selectors.
    pub gdtr: TableRegister,
    /// The IDT.
    pub idtr: TableRegister,
    /// Entry point (a `extern "sysv64" fn(u32) -> !`).
    pub entry: u64,
    /// Top of the CPU's stack (16-byte aligned).
    pub stack_top: u64,
    /// The CPU's index, passed in RDI.
    pub index: u32,
    /// SEV_FEATURES: the SVSM's own (an AP's VMSA has the BSP's).
    pub sev_features: u64,
}

/// Compressed VMSA attributes of the kernel's 64-bit code segment (GDT
/// descriptor 0x00AF_9B00_0000_FFFF: access byte 0x9B, flags G | L).
const CODE_64: u16 = 0x9B | attrib::LONG | attrib::GRANULARITY;
/// Compressed VMSA attributes of the kernel's data segment (descriptor
/// 0x00CF_9300_0000_FFFF: access byte 0x93, flags G | D/B).
const DATA: u16 = 0x93 | attrib::DEFAULT_BIG | attrib::GRANULARITY;

/// The VMPL0 VMSA of a secondary SVSM CPU.
pub fn vmpl0_vmsa(state: &ApState) -> Vmsa {
    let mut vmsa = Vmsa::reset_state(0, state.sev_features);
    let data = Segment::new(KERNEL_DS, DATA, u32::MAX, 0);
    vmsa.cs = Segment::new(KERNEL_CS, CODE_64, u32::MAX, 0);
    vmsa.ds = data;
    vmsa.es = data;
    vmsa.ss = data;
    vmsa.fs = Segment::new(0, 0, 0, 0);
    vmsa.gs = Segment::new(0, 0, 0, 0);
    vmsa.gdtr = Segment::new(0, 0, state.gdtr.limit.into(), state.gdtr.base);
    vmsa.idtr = Segment::new(0, 0, state.idtr.limit.into(), state.idtr.base);
    vmsa.cr0 = state.cr0;
    vmsa.cr3 = state.cr3;
    vmsa.cr4 = state.cr4;
    vmsa.efer = state.efer | EFER_SVME;
    vmsa.rip = state.entry;
    // As after a CALL: the entry finds RSP + 8 16-byte aligned.
    vmsa.rsp = state.stack_top - 8;
    vmsa.rdi = state.index.into();
    vmsa.rflags = reset::RFLAGS;
    vmsa
}

#[cfg(test)]
mod tests {
    use zerocopy::IntoBytes;

    use super::*;

    #[test]
    fn the_vmsa_enters_64_bit_code_at_the_entry() {
        let state = ApState {
            cr0: 0x8005_0033,
            cr3: 0x0008_0000_0810_0000,
            cr4: 0x20,
            efer: 0xD00 | EFER_SVME,
            gdtr: TableRegister { base: 0xFFFF_8000_0812_0000, limit: 0x27 },
            idtr: TableRegister { base: 0xFFFF_FFFF_8010_0000, limit: 0xFFF },
            entry: 0xFFFF_FFFF_8000_1234,
            stack_top: 0xFFFF_8000_0900_0000,
            index: 3,
            sev_features: 0x21,
        };
        let vmsa = vmpl0_vmsa(&state);
        let bytes = vmsa.as_bytes();
        let u64_at =
            |offset: usize| u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap());
        let u16_at = |offset: usize| u16::from_le_bytes([bytes[offset], bytes[offset + 1]]);
        // CS at 0x010: selector 0x08, attributes 0x0A9B (what COCONUT's
        // igvmbuilder writes for 64-bit code), limit 4 GiB - 1, base 0.
        assert_eq!(u16_at(0x10), 0x08);
        assert_eq!(u16_at(0x12), 0x0A9B);
        assert_eq!(&bytes[0x14..0x18], &u32::MAX.to_le_bytes());
        // SS at 0x020 and DS at 0x030: selector 0x10, flat data 0x0C93.
        assert_eq!((u16_at(0x20), u16_at(0x22)), (0x10, 0x0C93));
        assert_eq!((u16_at(0x30), u16_at(0x32)), (0x10, 0x0C93));
        // GDTR (0x060) and IDTR (0x080): limit at +4, base at +8.
        assert_eq!(u16_at(0x64), 0x27);
        assert_eq!(u64_at(0x68), 0xFFFF_8000_0812_0000);
        assert_eq!(u64_at(0x88), 0xFFFF_FFFF_8010_0000);
        assert_eq!(bytes[0xCA], 0, "VMPL0");
        assert_eq!(u64_at(0xD0), 0x1D00, "EFER with SVME");
        assert_eq!(u64_at(0x148), 0x20, "CR4");
        assert_eq!(u64_at(0x150), 0x0008_0000_0810_0000, "CR3 keeps the C-bit");
        assert_eq!(u64_at(0x158), 0x8005_0033, "CR0");
        assert_eq!(u64_at(0x170), 2, "RFLAGS: interrupts off");
        assert_eq!(u64_at(0x178), 0xFFFF_FFFF_8000_1234, "RIP");
        assert_eq!(u64_at(0x1D8), 0xFFFF_8000_08FF_FFF8, "RSP");
        assert_eq!(u64_at(0x338), 3, "RDI = index");
        assert_eq!(u64_at(0x3B0), 0x21, "SEV_FEATURES");
        assert_eq!(u64_at(0x3E8), 1, "XCR0");
    }
}
