//! The SNP CPUID page: the launcher fills the outputs of the leaves the IGVM
//! file lists (or, for an empty list, every leaf KVM supports, as QEMU does)
//! from KVM's CPUID, and the firmware checks them at LAUNCH_UPDATE. When the
//! firmware rejects the table it writes a corrected one back; [`differences`]
//! names what it changed before the launcher retries once.

use kvm_bindings::{KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Most entries a CPUID page holds.
pub const CPUID_COUNT_MAX: usize = 64;
/// Size of the page header (count, reserved).
const HEADER: usize = 16;
/// XSAVE area size for XCR0 = x87 only (legacy area + header), which QEMU
/// puts in leaf 0xD subleaves 0 and 1.
const XSAVE_SIZE_X87: u32 = 0x240;

/// One CPUID page entry (48 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CpuidEntry {
    /// Leaf.
    pub eax_in: u32,
    /// Subleaf.
    pub ecx_in: u32,
    /// XCR0 the entry applies to.
    pub xcr0_in: u64,
    /// XSS the entry applies to.
    pub xss_in: u64,
    /// Outputs.
    pub eax: u32,
    /// Outputs.
    pub ebx: u32,
    /// Outputs.
    pub ecx: u32,
    /// Outputs.
    pub edx: u32,
    /// Reserved.
    pub reserved: u64,
}

const _: () = assert!(size_of::<CpuidEntry>() == 48);
const _: () = assert!(HEADER + CPUID_COUNT_MAX * 48 <= 4096);

fn count(page: &[u8]) -> Result<usize, String> {
    let count = page
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or("the CPUID page is shorter than its header")? as usize;
    if count > CPUID_COUNT_MAX {
        return Err(format!(
            "the CPUID page lists {count} entries; the firmware accepts at most {CPUID_COUNT_MAX}"
        ));
    }
    Ok(count)
}

fn entries_mut(page: &mut [u8], count: usize) -> Result<&mut [CpuidEntry], String> {
    let bytes = page
        .get_mut(HEADER..HEADER + count * 48)
        .ok_or("the CPUID page is too short for its entries")?;
    <[CpuidEntry]>::mut_from_bytes(bytes).map_err(|_| "misaligned CPUID entries".to_string())
}

fn lookup(supported: &[kvm_cpuid_entry2], leaf: u32, subleaf: u32) -> Option<&kvm_cpuid_entry2> {
    supported.iter().find(|e| {
        e.function == leaf && (e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0 || e.index == subleaf)
    })
}

fn fill_entry(entry: &mut CpuidEntry, supported: &[kvm_cpuid_entry2]) {
    let (eax, ebx, ecx, edx) = lookup(supported, entry.eax_in, entry.ecx_in)
        .map_or((0, 0, 0, 0), |e| (e.eax, e.ebx, e.ecx, e.edx));
    *entry = CpuidEntry { eax, ebx, ecx, edx, reserved: 0, ..*entry };
    if entry.eax_in == 0xD && entry.ecx_in <= 1 && entry.xcr0_in == 1 {
        entry.ebx = XSAVE_SIZE_X87;
    }
}

/// Fills the CPUID page in place from KVM's `supported` CPUID.
pub fn fill(page: &mut [u8], supported: &[kvm_cpuid_entry2]) -> Result<(), String> {
    let listed = count(page)?;
    if listed > 0 {
        entries_mut(page, listed)?.iter_mut().for_each(|e| fill_entry(e, supported));
        return Ok(());
    }
    let n = supported.len().min(CPUID_COUNT_MAX);
    page[..4].copy_from_slice(&(n as u32).to_le_bytes());
    for (entry, source) in entries_mut(page, n)?.iter_mut().zip(supported) {
        *entry = CpuidEntry {
            eax_in: source.function,
            ecx_in: source.index,
            xcr0_in: u64::from(source.function == 0xD),
            xss_in: 0,
            eax: 0,
            ebx: 0,
            ecx: 0,
            edx: 0,
            reserved: 0,
        };
        fill_entry(entry, supported);
    }
    Ok(())
}

/// What the firmware changed: one line per differing entry.
pub fn differences(ours: &[u8], corrected: &[u8]) -> Vec<String> {
    let (Ok(n), Ok(m)) = (count(ours), count(corrected)) else {
        return vec!["the corrected CPUID page has an invalid entry count".into()];
    };
    let read = |page: &[u8], i: usize| {
        CpuidEntry::read_from_bytes(&page[HEADER + i * 48..HEADER + (i + 1) * 48]).ok()
    };
    let mut out = Vec::new();
    if n != m {
        out.push(format!("entry count {n} -> {m}"));
    }
    for i in 0..n.min(m) {
        let (Some(a), Some(b)) = (read(ours, i), read(corrected, i)) else { continue };
        if a != b {
            out.push(format!(
                "leaf {:#x}/{:#x}: eax {:#x}->{:#x} ebx {:#x}->{:#x} ecx {:#x}->{:#x} edx {:#x}->{:#x}",
                a.eax_in, a.ecx_in, a.eax, b.eax, a.ebx, b.ebx, a.ecx, b.ecx, a.edx, b.edx
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;

    fn entry(function: u32, index: u32, flags: u32, eax: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            flags,
            eax,
            ebx: 2,
            ecx: 3,
            edx: 4,
            ..Default::default()
        }
    }

    #[test]
    fn listed_leaves_get_kvms_values() {
        let mut page = sample::cpuid_leaf_list();
        page.resize(4096, 0);
        let supported = [entry(0, 0, 0, 0x10), entry(1, 0, 0, 0x806f8)];
        fill(&mut page, &supported).unwrap();
        let e = entries_mut(&mut page, 3).unwrap();
        assert_eq!((e[0].eax, e[0].ebx, e[0].edx), (0x10, 2, 4));
        assert_eq!(e[1].eax, 0x806f8);
        assert_eq!(
            (e[2].eax_in, e[2].eax, e[2].ebx),
            (0x8000_0000, 0, 0),
            "unknown leaf stays zero"
        );
    }

    #[test]
    fn an_empty_list_takes_every_supported_leaf_and_xsave_sizes_for_x87() {
        let mut page = vec![0u8; 4096];
        let supported = [
            entry(0xD, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 7),
            entry(0xD, 1, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 9),
        ];
        fill(&mut page, &supported).unwrap();
        let e = entries_mut(&mut page, 2).unwrap();
        assert_eq!(
            (e[0].eax_in, e[0].ecx_in, e[0].xcr0_in, e[0].eax, e[0].ebx),
            (0xD, 0, 1, 7, 0x240)
        );
        assert_eq!((e[1].ecx_in, e[1].eax, e[1].ebx), (1, 9, 0x240));
    }

    #[test]
    fn too_many_entries_is_an_error_and_differences_are_named() {
        let mut page = vec![0u8; 4096];
        page[0] = 65;
        assert!(fill(&mut page, &[]).unwrap_err().contains("at most 64"));
        let mut ours = sample::cpuid_leaf_list();
        ours.resize(4096, 0);
        let mut corrected = ours.clone();
        corrected[HEADER + 48 + 0x18] = 0x42; // leaf 1 eax
        let diff = differences(&ours, &corrected);
        assert_eq!(diff.len(), 1);
        assert!(diff[0].starts_with("leaf 0x1/0x0: eax 0x0->0x42"), "{diff:?}");
    }
}
