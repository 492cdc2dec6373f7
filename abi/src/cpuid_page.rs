//! The SNP CPUID page (SNP_LAUNCH_UPDATE page type 6): the CPUID values the
//! hypervisor proposed and the PSP checked against the real CPU. On SNP the
//! CPUID instruction traps (#VC) and its answer would come from the untrusted
//! hypervisor, so the SVSM reads CPUID from this page instead.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Most entries the page holds.
pub const MAX_ENTRIES: usize = 64;

/// One CPUID leaf/subleaf and its result.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct CpuidEntry {
    /// Leaf (EAX input).
    pub eax_in: u32,
    /// Subleaf (ECX input).
    pub ecx_in: u32,
    /// XCR0 input (leaf 0xD).
    pub xcr0_in: u64,
    /// XSS input (leaf 0xD).
    pub xss_in: u64,
    /// EAX output.
    pub eax: u32,
    /// EBX output.
    pub ebx: u32,
    /// ECX output.
    pub ecx: u32,
    /// EDX output.
    pub edx: u32,
    /// Reserved.
    pub reserved: u64,
}

/// The CPUID page.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CpuidPage {
    /// Number of valid entries.
    pub count: u32,
    /// Reserved.
    pub reserved0: u32,
    /// Reserved.
    pub reserved1: u64,
    /// The entries.
    pub entries: [CpuidEntry; MAX_ENTRIES],
}

const _: () = assert!(core::mem::size_of::<CpuidEntry>() == 48);
const _: () = assert!(core::mem::size_of::<CpuidPage>() == 16 + 48 * MAX_ENTRIES);

/// Leaves whose result depends on the subleaf (ECX): Linux's
/// `cpuid_function_is_indexed` (0x4 ... 0x24, 0x8000_001D) plus AMD's
/// indexed extended leaves 0x8000_0020 and 0x8000_0026.
fn has_subleaves(leaf: u32) -> bool {
    matches!(
        leaf,
        0x4 | 0x7
            | 0xB
            | 0xD
            | 0xF
            | 0x10
            | 0x12
            | 0x14
            | 0x17
            | 0x18
            | 0x1D
            | 0x1E
            | 0x1F
            | 0x24
            | 0x8000_001D
            | 0x8000_0020
            | 0x8000_0026
    )
}

/// For leaf 0xD subleaves 0 and 1 the page may list one entry per XCR0/XSS
/// combination; as Linux does (`snp_cpuid_get_validated_func`), only the
/// entry for the legacy XSAVE area (XCR0 = 1 or 3, XSS = 0) is used, which
/// is the state the SVSM runs in.
fn is_legacy_xsave_entry(entry: &CpuidEntry) -> bool {
    matches!(entry.xcr0_in, 1 | 3) && entry.xss_in == 0
}

impl CpuidPage {
    /// The valid entries (at most [`MAX_ENTRIES`], whatever `count` says).
    pub fn valid_entries(&self) -> &[CpuidEntry] {
        &self.entries[..(self.count as usize).min(MAX_ENTRIES)]
    }

    /// The result for `leaf`/`subleaf` (EAX, EBX, ECX, EDX), if listed. For
    /// leaf 0xD subleaves 0 and 1 only the legacy-XSAVE-area entry counts
    /// (see [`is_legacy_xsave_entry`]).
    pub fn lookup(&self, leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
        let subleaf = if has_subleaves(leaf) { subleaf } else { 0 };
        self.valid_entries()
            .iter()
            .find(|e| {
                e.eax_in == leaf
                    && (!has_subleaves(leaf) || e.ecx_in == subleaf)
                    && (leaf != 0xD || subleaf > 1 || is_legacy_xsave_entry(e))
            })
            .map(|e| [e.eax, e.ebx, e.ecx, e.edx])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn entry_layout_matches_the_firmware_abi() {
        // eax_in @0, ecx_in @4, xcr0_in @8, xss_in @0x10, eax @0x18, ebx @0x1C, ecx @0x20, edx @0x24.
        let e = CpuidEntry {
            eax_in: 0x8000_001F,
            ecx_in: 2,
            xcr0_in: 3,
            xss_in: 4,
            eax: 5,
            ebx: 0x33,
            ecx: 7,
            edx: 8,
            reserved: 0,
        };
        let b = e.as_bytes();
        assert_eq!(&b[0..4], &0x8000_001Fu32.to_le_bytes());
        assert_eq!(&b[0x1C..0x20], &0x33u32.to_le_bytes());
        assert_eq!(&b[0x24..0x28], &8u32.to_le_bytes());
    }

    #[test]
    fn lookup_honours_subleaves_and_count() {
        let mut page = CpuidPage::new_zeroed();
        page.entries[0] = CpuidEntry { eax_in: 7, ecx_in: 0, ebx: 0xAA, ..Default::default() };
        page.entries[1] = CpuidEntry { eax_in: 7, ecx_in: 1, ebx: 0xBB, ..Default::default() };
        page.entries[2] =
            CpuidEntry { eax_in: 0x8000_001F, ecx_in: 9, ebx: 0x33, ..Default::default() };
        page.entries[3] = CpuidEntry { eax_in: 1, ecx: 0x11, ..Default::default() };
        page.count = 3;
        assert_eq!(page.lookup(7, 1), Some([0, 0xBB, 0, 0]));
        assert_eq!(page.lookup(7, 0), Some([0, 0xAA, 0, 0]));
        assert_eq!(
            page.lookup(0x8000_001F, 0),
            Some([0, 0x33, 0, 0]),
            "subleaf ignored for leaves without"
        );
        assert_eq!(page.lookup(1, 0), None, "entries past count are not valid");
        page.count = u32::MAX;
        assert_eq!(page.lookup(1, 0), Some([0, 0, 0x11, 0]), "a hostile count is clamped");
    }

    #[test]
    fn xsave_leaf_uses_the_legacy_area_entry_like_linux() {
        let mut page = CpuidPage::new_zeroed();
        let xsave = |ecx_in, xcr0_in, xss_in, ebx| CpuidEntry {
            eax_in: 0xD,
            ecx_in,
            xcr0_in,
            xss_in,
            ebx,
            ..Default::default()
        };
        page.entries[0] = xsave(0, 0xE7, 0, 0x988);
        page.entries[1] = xsave(0, 3, 0, 0x240);
        page.entries[2] = xsave(1, 1, 0x800, 0x250);
        page.entries[3] = xsave(1, 1, 0, 0x240);
        page.entries[4] = xsave(2, 0xE7, 0, 0x100);
        page.entries[5] = CpuidEntry { eax_in: 0x1D, ecx_in: 1, ebx: 0x77, ..Default::default() };
        page.count = 6;
        assert_eq!(page.lookup(0xD, 0).map(|r| r[1]), Some(0x240), "XCR0 = 3 counts");
        assert_eq!(page.lookup(0xD, 1).map(|r| r[1]), Some(0x240), "XSS must be 0");
        assert_eq!(page.lookup(0xD, 2).map(|r| r[1]), Some(0x100), "other subleaves as listed");
        assert_eq!(page.lookup(0x1D, 0), None, "0x1D is indexed (AMX tile info)");
        assert_eq!(page.lookup(0x1D, 1).map(|r| r[1]), Some(0x77));
    }
}
