//! What the guest firmware starts with on SNP: its boot VMSA at VMPL2 in the
//! x86 reset state, its copy of the secrets page (the SVSM's fields filled,
//! the more privileged VMPCKs gone) and its copy of the CPUID page (with the
//! SVSM-present bit). Built here from the SVSM's private state; the caller
//! places the pages where the firmware's SEV metadata asks for them.

use abi::boot::MemoryRange;
use abi::cpuid_page::CpuidPage;
use abi::secrets::{GuestCopyError, SecretsPage, SvsmDescription};
use abi::sev_status::SevStatus;
use abi::svsm::CORE_PROTOCOL_VERSION;
use abi::vmsa::Vmsa;

use super::cpuid::SnpCpuid;
use super::secrets::SvsmSecrets;
use super::status::guest_features;

/// The VMPL the guest runs at (VMPL1 stays free, as in COCONUT-SVSM).
pub const GUEST_VMPL: u8 = 2;

/// The guest's three start pages.
pub struct GuestStart {
    /// Boot VMSA: reset state, VMPL2, SEV_FEATURES from
    /// [`guest_features`].
    pub vmsa: Vmsa,
    /// The guest's secrets page.
    pub secrets: SecretsPage,
    /// The guest's CPUID page.
    pub cpuid: CpuidPage,
}

/// Builds the guest's start pages. `svsm_region` is the memory the guest
/// must leave alone, `calling_area` the boot vCPU's calling-area GPA (from
/// the firmware's SEV metadata).
pub fn guest_start(
    secrets: &SvsmSecrets,
    cpuid: &SnpCpuid,
    status: SevStatus,
    svsm_region: MemoryRange,
    calling_area: u64,
) -> Result<GuestStart, GuestCopyError> {
    let description = SvsmDescription {
        base: svsm_region.base,
        size: svsm_region.size,
        calling_area,
        max_version: CORE_PROTOCOL_VERSION,
        guest_vmpl: GUEST_VMPL,
    };
    Ok(GuestStart {
        vmsa: Vmsa::reset_state(GUEST_VMPL, guest_features(status).0),
        secrets: secrets.guest_page(&description)?,
        cpuid: cpuid.guest_page(),
    })
}

#[cfg(test)]
mod tests {
    use abi::cpuid_page::CpuidEntry;
    use abi::secrets::VMPCK_LEN;
    use zerocopy::{FromZeros, IntoBytes};

    use super::*;

    #[test]
    fn the_guest_starts_at_vmpl2_and_finds_the_svsm() {
        let mut launch = SecretsPage::new_zeroed();
        launch.vmpck = [[1; VMPCK_LEN], [2; VMPCK_LEN], [3; VMPCK_LEN], [4; VMPCK_LEN]];
        let secrets = SvsmSecrets::take(&mut launch);
        let mut page = CpuidPage::new_zeroed();
        page.entries[0] =
            CpuidEntry { eax_in: 0x8000_001F, eax: 0x1B, ebx: 0x173, ..Default::default() };
        page.count = 1;
        let cpuid = SnpCpuid::new(page).unwrap();
        let region = MemoryRange { base: 0x0800_0000, size: 0x0400_0000 };
        let start = guest_start(&secrets, &cpuid, SevStatus(0x87), region, 0x0081_2000).unwrap();

        let vmsa = start.vmsa.as_bytes();
        assert_eq!(vmsa[0xCA], 2, "VMSA.VMPL");
        assert_eq!(&vmsa[0x3B0..0x3B8], &1u64.to_le_bytes(), "SEV_FEATURES: SNPActive only");
        assert_eq!(&vmsa[0xD0..0xD8], &(1u64 << 12).to_le_bytes(), "EFER.SVME");
        assert_eq!(&vmsa[0x178..0x180], &0xFFF0u64.to_le_bytes(), "reset vector");

        let guest_secrets = start.secrets.as_bytes();
        assert!(guest_secrets[0x20..0x60].iter().all(|b| *b == 0), "VMPCK0/1 hidden");
        assert_eq!(&guest_secrets[0x140..0x148], &0x0800_0000u64.to_le_bytes());
        assert_eq!(&guest_secrets[0x148..0x150], &0x0400_0000u64.to_le_bytes());
        assert_eq!(&guest_secrets[0x150..0x158], &0x0081_2000u64.to_le_bytes());
        assert_eq!(&guest_secrets[0x158..0x15C], &1u32.to_le_bytes());
        assert_eq!(guest_secrets[0x15C], 2);

        assert_eq!(start.cpuid.lookup(0x8000_001F, 0).map(|r| r[0]), Some(0x1000_001B));
    }

    #[test]
    fn a_misaligned_calling_area_is_refused() {
        let secrets = SvsmSecrets::take(&mut SecretsPage::new_zeroed());
        let mut page = CpuidPage::new_zeroed();
        page.entries[0] = CpuidEntry { eax_in: 0x8000_001F, ..Default::default() };
        page.count = 1;
        let cpuid = SnpCpuid::new(page).unwrap();
        let region = MemoryRange { base: 0x0800_0000, size: 0x0400_0000 };
        assert_eq!(
            guest_start(&secrets, &cpuid, SevStatus(0x7), region, 0x0081_2010).err(),
            Some(GuestCopyError::UnalignedCallingArea(0x0081_2010))
        );
    }
}
