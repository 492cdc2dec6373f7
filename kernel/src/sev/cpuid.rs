//! CPUID on SNP. The CPUID instruction raises #VC and the hypervisor's
//! answer cannot be trusted, so the SVSM answers from the CPUID page the PSP
//! checked at launch, adjusted (as Linux's `snp_cpuid_postprocess` does)
//! for the bits that reflect this CPU's control registers.
//!
//! What is not adjusted, because the SVSM does not use it: the APIC IDs in
//! leaves 0x1, 0xB and 0x8000_001E (the page holds one vCPU's values), and
//! the XSAVE sizes of leaf 0xD for XCR0 states other than x87/SSE (the SVSM
//! never enables more).
//!
//! The guest gets its own copy of the page with the "SVSM present" bit
//! (Fn8000_001F EAX[28]) set, the discovery path of SVSM spec §4.2.

use abi::cpuid_page::{CpuidPage, MAX_ENTRIES};
use abi::svsm::{CPUID_SEV_LEAF, CPUID_SVSM_PRESENT};

/// Why a CPUID page is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuidPageError {
    /// The page lists no leaves.
    Empty,
    /// The page claims more entries than it holds.
    TooManyEntries(u32),
    /// Leaf 0x8000_001F (memory encryption) is missing.
    NoEncryptionLeaf,
}

/// CR4.OSXSAVE.
const CR4_OSXSAVE: u64 = 1 << 18;
/// CR4.PKE.
const CR4_PKE: u64 = 1 << 22;
/// CPUID Fn0000_0001 ECX[27]: OSXSAVE.
const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
/// CPUID Fn0000_0007 ECX[4]: OSPKE.
const LEAF7_ECX_OSPKE: u32 = 1 << 4;

/// The SVSM's CPUID source.
#[derive(Clone, Debug)]
pub struct SnpCpuid {
    page: CpuidPage,
}

impl SnpCpuid {
    /// Checks `page` (a private copy of the launch page) the way Linux does
    /// before trusting it: 1 to 64 entries, and the memory-encryption leaf
    /// present.
    pub fn new(page: CpuidPage) -> Result<SnpCpuid, CpuidPageError> {
        match page.count {
            0 => return Err(CpuidPageError::Empty),
            count if count as usize > MAX_ENTRIES => {
                return Err(CpuidPageError::TooManyEntries(count));
            }
            _ => {}
        }
        if page.lookup(CPUID_SEV_LEAF, 0).is_none() {
            return Err(CpuidPageError::NoEncryptionLeaf);
        }
        Ok(SnpCpuid { page })
    }

    /// The C-bit position (Fn8000_001F EBX[5:0]).
    pub fn c_bit(&self) -> u8 {
        let [_, ebx, _, _] = self.page.lookup(CPUID_SEV_LEAF, 0).expect("checked in new()");
        (ebx & 0x3F) as u8
    }

    /// CPUID `leaf`/`subleaf` for code running with `cr4`: the page's
    /// values (zeros for leaves it does not list, as a CPU answers for
    /// leaves out of range), with OSXSAVE and OSPKE taken from CR4.
    pub fn query(&self, leaf: u32, subleaf: u32, cr4: u64) -> [u32; 4] {
        let mut result = self.page.lookup(leaf, subleaf).unwrap_or([0; 4]);
        let set = |register: &mut u32, bit: u32, on: bool| {
            *register = if on { *register | bit } else { *register & !bit };
        };
        match (leaf, subleaf) {
            (1, _) => set(&mut result[2], LEAF1_ECX_OSXSAVE, cr4 & CR4_OSXSAVE != 0),
            (7, 0) => set(&mut result[2], LEAF7_ECX_OSPKE, cr4 & CR4_PKE != 0),
            _ => {}
        }
        result
    }

    /// The page the guest firmware gets: the launch page with the SVSM
    /// present bit set in every Fn8000_001F entry.
    pub fn guest_page(&self) -> CpuidPage {
        let mut page = self.page;
        let count = (page.count as usize).min(MAX_ENTRIES);
        for entry in page.entries[..count].iter_mut().filter(|e| e.eax_in == CPUID_SEV_LEAF) {
            entry.eax |= CPUID_SVSM_PRESENT;
        }
        page
    }
}

#[cfg(test)]
mod tests {
    use abi::cpuid_page::CpuidEntry;
    use zerocopy::{FromZeros, IntoBytes};

    use super::*;

    /// A page shaped like what QEMU/KVM hand an SNP guest on a Genoa host:
    /// leaf 0x8000_001F with SME/SEV/SEV-ES/SNP (EAX bits 0,1,3,4), C-bit 51
    /// and 1 bit of physical-address reduction (EBX = 0x0000_0173).
    fn page() -> CpuidPage {
        let mut page = CpuidPage::new_zeroed();
        page.entries[0] = CpuidEntry { eax_in: 0, eax: 0x10, ..Default::default() };
        page.entries[1] = CpuidEntry { eax_in: 1, ecx: 0xFEDA_3203, ..Default::default() };
        page.entries[2] =
            CpuidEntry { eax_in: 7, ecx_in: 0, ecx: 0x0040_0010, ..Default::default() };
        page.entries[3] =
            CpuidEntry { eax_in: CPUID_SEV_LEAF, eax: 0x1B, ebx: 0x173, ..Default::default() };
        page.count = 4;
        page
    }

    #[test]
    fn checks_the_page_like_linux() {
        assert!(SnpCpuid::new(page()).is_ok());
        let mut empty = page();
        empty.count = 0;
        assert_eq!(SnpCpuid::new(empty).err(), Some(CpuidPageError::Empty));
        let mut hostile = page();
        hostile.count = 65;
        assert_eq!(SnpCpuid::new(hostile).err(), Some(CpuidPageError::TooManyEntries(65)));
        let mut no_sev = page();
        no_sev.count = 3;
        assert_eq!(SnpCpuid::new(no_sev).err(), Some(CpuidPageError::NoEncryptionLeaf));
    }

    #[test]
    fn answers_from_the_page_with_cr4_dependent_bits() {
        let cpuid = SnpCpuid::new(page()).unwrap();
        assert_eq!(cpuid.c_bit(), 51);
        // The page says OSXSAVE (bit 27 of 0xFEDA_3203 is 1); CR4 says no.
        assert_eq!(cpuid.query(1, 0, 0)[2], 0xF6DA_3203);
        assert_eq!(cpuid.query(1, 0, CR4_OSXSAVE)[2], 0xFEDA_3203);
        assert_eq!(cpuid.query(7, 0, 0)[2], 0x0040_0000, "OSPKE cleared");
        assert_eq!(cpuid.query(7, 0, CR4_PKE)[2], 0x0040_0010);
        assert_eq!(cpuid.query(0x4000_0000, 0, 0), [0; 4], "unlisted leaves read as zero");
        assert_eq!(cpuid.query(0, 0, 0), [0x10, 0, 0, 0]);
    }

    #[test]
    fn the_guest_copy_announces_the_svsm() {
        let cpuid = SnpCpuid::new(page()).unwrap();
        let guest = cpuid.guest_page();
        assert_eq!(guest.lookup(CPUID_SEV_LEAF, 0), Some([0x1000_001B, 0x173, 0, 0]));
        assert_eq!(cpuid.query(CPUID_SEV_LEAF, 0, 0)[0], 0x1B, "the SVSM's own view is unchanged");
        // Everything else is byte-identical.
        let (mine, theirs) = (page(), guest);
        let differing = mine.as_bytes().iter().zip(theirs.as_bytes()).filter(|(a, b)| a != b);
        assert_eq!(differing.count(), 1);
    }
}
