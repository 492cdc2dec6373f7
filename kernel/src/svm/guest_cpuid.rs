//! The CPUID page the dev platform hands an SNP-aware guest: on SNP the
//! PSP checks the host's CPUID values into such a page at launch; on the
//! dev platform the SVSM fills it from the CPU it runs on, and adds the SEV
//! leaf (Fn8000_001F) an SNP guest expects: SEV, SEV-ES, SNP and VMPLs
//! supported, 4 VMPLs, the SVSM-present bit, and C-bit position 0 (the dev
//! platform encrypts nothing, so a guest sets no C-bit).

use abi::cpuid_page::{CpuidEntry, CpuidPage, MAX_ENTRIES};
use abi::svsm::{CPUID_SEV_LEAF, CPUID_SVSM_PRESENT};
use zerocopy::FromZeros;

/// Fn8000_001F EAX on the dev platform: SEV (1), SEV-ES (3), SNP (4),
/// VMPL (5), SVSM present (28).
pub const SEV_LEAF_EAX: u32 = (1 << 1) | (1 << 3) | (1 << 4) | (1 << 5) | CPUID_SVSM_PRESENT;
/// Fn8000_001F EBX: C-bit position 0, no physical-address reduction, 4
/// VMPLs (bits 15:12).
pub const SEV_LEAF_EBX: u32 = 4 << 12;

/// The leaves (and subleaves) copied from the CPU.
const LEAVES: &[(u32, u32)] = &[
    (0x0, 0),
    (0x1, 0),
    (0x7, 0),
    (0xD, 0),
    (0xD, 1),
    (0x8000_0000, 0),
    (0x8000_0001, 0),
    (0x8000_0007, 0),
    (0x8000_0008, 0),
];

/// The guest's CPUID page, from `cpuid` (the CPU's answers).
pub fn guest_cpuid_page(cpuid: &dyn Fn(u32, u32) -> [u32; 4]) -> CpuidPage {
    let mut page = CpuidPage::new_zeroed();
    let max_extended = cpuid(0x8000_0000, 0)[0];
    let mut entries = LEAVES
        .iter()
        .filter(|(leaf, _)| *leaf < 0x8000_0000 || *leaf <= max_extended)
        .map(|&(leaf, subleaf)| {
            let [mut eax, ebx, ecx, edx] = cpuid(leaf, subleaf);
            if leaf == 0x8000_0000 {
                eax = eax.max(CPUID_SEV_LEAF);
            }
            // Leaf 0xD is given for the legacy XSAVE state (x87 + SSE).
            let xcr0_in = if leaf == 0xD { 3 } else { 0 };
            CpuidEntry {
                eax_in: leaf,
                ecx_in: subleaf,
                xcr0_in,
                eax,
                ebx,
                ecx,
                edx,
                ..Default::default()
            }
        })
        .chain(core::iter::once(CpuidEntry {
            eax_in: CPUID_SEV_LEAF,
            eax: SEV_LEAF_EAX,
            ebx: SEV_LEAF_EBX,
            ..Default::default()
        }));
    let mut count = 0;
    for slot in page.entries.iter_mut().take(MAX_ENTRIES) {
        let Some(entry) = entries.next() else { break };
        *slot = entry;
        count += 1;
    }
    page.count = count;
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(leaf: u32, subleaf: u32) -> [u32; 4] {
        match leaf {
            0x8000_0000 => [0x8000_001E, 0, 0, 0],
            _ => [leaf, subleaf, 0xC, 0xD],
        }
    }

    #[test]
    fn the_page_has_the_cpu_leaves_and_an_snp_sev_leaf() {
        let page = guest_cpuid_page(&cpu);
        assert_eq!(page.count as usize, LEAVES.len() + 1);
        assert_eq!(page.lookup(1, 0), Some([1, 0, 0xC, 0xD]));
        assert_eq!(page.lookup(0xD, 1), Some([0xD, 1, 0xC, 0xD]));
        assert_eq!(page.lookup(0x8000_0000, 0).map(|r| r[0]), Some(CPUID_SEV_LEAF));
        let [eax, ebx, _, _] = page.lookup(CPUID_SEV_LEAF, 0).unwrap();
        assert_ne!(eax & CPUID_SVSM_PRESENT, 0);
        assert_ne!(eax & (1 << 4), 0, "SNP");
        assert_eq!(ebx & 0x3F, 0, "no C-bit");
        assert_eq!((ebx >> 12) & 0xF, 4, "VMPLs");
    }

    #[test]
    fn extended_leaves_past_the_cpu_maximum_are_left_out() {
        let low = |leaf: u32, subleaf: u32| match leaf {
            0x8000_0000 => [0x8000_0001, 0, 0, 0],
            _ => [leaf, subleaf, 0, 0],
        };
        let page = guest_cpuid_page(&low);
        assert_eq!(page.lookup(0x8000_0008, 0), None);
        assert!(page.lookup(CPUID_SEV_LEAF, 0).is_some());
    }
}
