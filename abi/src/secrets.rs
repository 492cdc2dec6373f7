//! The SNP secrets page (SNP_LAUNCH_UPDATE page type 5): the VM platform
//! communication keys (VMPCK0-3) the PSP generates at launch, the guest-OS
//! area where a guest keeps its message sequence numbers, and the area
//! where an SVSM advertises itself (base, size, calling area, protocol
//! version, the guest's VMPL).
//!
//! The SVSM keeps the real page (every VMPCK) to itself and gives the guest
//! a copy ([`SecretsPage::guest_copy`]) in which the keys of the VMPLs more
//! privileged than the guest are zero and the SVSM fields are filled. A key
//! the guest must never have is a key it can never leak.
//!
//! Sources: Linux `arch/x86/include/asm/sev.h` (`struct snp_secrets_page`,
//! `struct secrets_os_area`), SVSM specification #58019 §4.1 as summarised
//! in the project reference `snp-svsm.md` §5.1.

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// Length of one VMPCK.
pub const VMPCK_LEN: usize = 32;
/// Number of VMPCKs (one per VMPL).
pub const VMPCK_COUNT: usize = 4;

/// The guest-OS area (GHCB specification, "secrets page layout").
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SecretsOsArea {
    /// Last message sequence number used with VMPCK0..3 (Linux keeps it
    /// here; the SVSM keeps its own privately).
    pub msg_seqno: [u32; VMPCK_COUNT],
    /// SEV-ES AP jump table physical address.
    pub ap_jump_table_pa: u64,
    /// Reserved.
    pub reserved: [u8; 40],
    /// Free for the guest.
    pub guest_usage: [u8; 32],
}

/// The secrets page.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SecretsPage {
    /// Layout version (written by the PSP).
    pub version: u32,
    /// Bit 0: IMIEN, the guest was launched as a migration image.
    pub flags: u32,
    /// CPU family/model/stepping.
    pub fms: u32,
    /// Reserved.
    pub reserved0: u32,
    /// Guest-OS-visible workarounds (from SNP_LAUNCH_START).
    pub gosvw: [u8; 16],
    /// VMPCK0..3.
    pub vmpck: [[u8; VMPCK_LEN]; VMPCK_COUNT],
    /// The guest-OS area.
    pub os_area: SecretsOsArea,
    /// VMSA tweak bitmap.
    pub vmsa_tweak_bitmap: [u8; 64],
    /// GPA of the SVSM's memory (0x140).
    pub svsm_base: u64,
    /// Size of the SVSM's memory in bytes; 0 means "no SVSM" (0x148).
    pub svsm_size: u64,
    /// GPA of the boot vCPU's calling area (0x150).
    pub svsm_caa: u64,
    /// Highest SVSM core-protocol version (0x158).
    pub svsm_max_version: u32,
    /// VMPL the guest runs at (0x15C).
    pub svsm_guest_vmpl: u8,
    /// Reserved.
    pub reserved1: [u8; 3],
    /// Secure TSC: mean frequency = nominal × (1 − factor / 100000).
    pub tsc_factor: u32,
    /// Reserved to the end of the page.
    pub reserved2: [u8; 3740],
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<SecretsOsArea>() == 96);
    assert!(size_of::<SecretsPage>() == 4096);
    assert!(offset_of!(SecretsPage, gosvw) == 0x010);
    assert!(offset_of!(SecretsPage, vmpck) == 0x020);
    assert!(offset_of!(SecretsPage, os_area) == 0x0A0);
    assert!(offset_of!(SecretsPage, vmsa_tweak_bitmap) == 0x100);
    assert!(offset_of!(SecretsPage, svsm_base) == 0x140);
    assert!(offset_of!(SecretsPage, svsm_size) == 0x148);
    assert!(offset_of!(SecretsPage, svsm_caa) == 0x150);
    assert!(offset_of!(SecretsPage, svsm_max_version) == 0x158);
    assert!(offset_of!(SecretsPage, svsm_guest_vmpl) == 0x15C);
    assert!(offset_of!(SecretsPage, tsc_factor) == 0x160);
};

/// What the SVSM tells the guest about itself in the guest's copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvsmDescription {
    /// GPA of the SVSM's memory.
    pub base: u64,
    /// Size of the SVSM's memory (non-zero).
    pub size: u64,
    /// GPA of the boot vCPU's calling area.
    pub calling_area: u64,
    /// Highest core-protocol version the SVSM speaks.
    pub max_version: u32,
    /// VMPL the guest runs at (1..=3).
    pub guest_vmpl: u8,
}

/// Why a guest copy could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestCopyError {
    /// The guest VMPL is 0 (that is the SVSM's) or above 3.
    BadGuestVmpl(u8),
    /// A zero-sized SVSM reads as "no SVSM" to the guest.
    EmptySvsm,
    /// The calling area is not 4 KiB aligned.
    UnalignedCallingArea(u64),
}

impl SecretsPage {
    /// VMPCK `index` (0..=3), or `None` if it is out of range or wiped
    /// (all zero).
    pub fn key(&self, index: usize) -> Option<&[u8; VMPCK_LEN]> {
        self.vmpck.get(index).filter(|key| key.iter().any(|b| *b != 0))
    }

    /// Overwrites VMPCK `index` with zeros (after a failed or replayed
    /// message, so the key can never encrypt twice with the same IV).
    pub fn wipe_key(&mut self, index: usize) {
        if let Some(key) = self.vmpck.get_mut(index) {
            *key = [0; VMPCK_LEN];
            // The page is read afterwards only through other paths; make
            // sure the stores are not dropped as dead.
            core::hint::black_box(&*key);
        }
    }

    /// The page the guest at `svsm.guest_vmpl` gets: every VMPCK of a VMPL
    /// more privileged than the guest's is zero, the guest-OS area is fresh
    /// (zero), and the SVSM area describes the SVSM. The PSP's fields are
    /// copied as they are.
    pub fn guest_copy(&self, svsm: &SvsmDescription) -> Result<SecretsPage, GuestCopyError> {
        if svsm.guest_vmpl == 0 || usize::from(svsm.guest_vmpl) >= VMPCK_COUNT {
            return Err(GuestCopyError::BadGuestVmpl(svsm.guest_vmpl));
        }
        if svsm.size == 0 {
            return Err(GuestCopyError::EmptySvsm);
        }
        if !svsm.calling_area.is_multiple_of(crate::layout::PAGE_SIZE) {
            return Err(GuestCopyError::UnalignedCallingArea(svsm.calling_area));
        }
        let mut copy = *self;
        for key in copy.vmpck.iter_mut().take(usize::from(svsm.guest_vmpl)) {
            *key = [0; VMPCK_LEN];
        }
        copy.os_area = SecretsOsArea::new_zeroed();
        copy.svsm_base = svsm.base;
        copy.svsm_size = svsm.size;
        copy.svsm_caa = svsm.calling_area;
        copy.svsm_max_version = svsm.max_version;
        copy.svsm_guest_vmpl = svsm.guest_vmpl;
        copy.reserved1 = [0; 3];
        Ok(copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launched_page() -> SecretsPage {
        let mut page = SecretsPage::new_zeroed();
        page.version = 3;
        page.fms = 0x00A1_0F11;
        for (i, key) in page.vmpck.iter_mut().enumerate() {
            *key = [0x10 + i as u8; VMPCK_LEN];
        }
        page.vmsa_tweak_bitmap[0] = 0x5A;
        page.tsc_factor = 42;
        page
    }

    const SVSM: SvsmDescription = SvsmDescription {
        base: 0x0800_0000,
        size: 0x0400_0000,
        calling_area: 0x0080_F000,
        max_version: 1,
        guest_vmpl: 2,
    };

    #[test]
    fn guest_copy_hides_the_privileged_keys_and_describes_the_svsm() {
        let page = launched_page();
        let copy = page.guest_copy(&SVSM).unwrap();
        let bytes = copy.as_bytes();
        // VMPCK0 at 0x20 and VMPCK1 at 0x40 are gone, VMPCK2/3 kept.
        assert!(bytes[0x20..0x60].iter().all(|b| *b == 0));
        assert!(bytes[0x60..0x80].iter().all(|b| *b == 0x12));
        assert!(bytes[0x80..0xA0].iter().all(|b| *b == 0x13));
        // SVSM fields at the offsets the SVSM spec (Table 1) and Linux give.
        assert_eq!(&bytes[0x140..0x148], &0x0800_0000u64.to_le_bytes());
        assert_eq!(&bytes[0x148..0x150], &0x0400_0000u64.to_le_bytes());
        assert_eq!(&bytes[0x150..0x158], &0x0080_F000u64.to_le_bytes());
        assert_eq!(&bytes[0x158..0x15C], &1u32.to_le_bytes());
        assert_eq!(bytes[0x15C], 2);
        // PSP fields unchanged.
        assert_eq!(&bytes[0..4], &3u32.to_le_bytes());
        assert_eq!(&bytes[8..12], &0x00A1_0F11u32.to_le_bytes());
        assert_eq!(bytes[0x100], 0x5A);
        assert_eq!(&bytes[0x160..0x164], &42u32.to_le_bytes());
        // The original keeps every key.
        assert!(page.key(0).is_some() && page.key(1).is_some());
        assert_eq!(copy.key(0), None);
        assert_eq!(copy.key(2), Some(&[0x12; VMPCK_LEN]));
    }

    #[test]
    fn guest_at_vmpl1_keeps_vmpck1_and_vmpl3_loses_three() {
        let page = launched_page();
        let vmpl1 = page.guest_copy(&SvsmDescription { guest_vmpl: 1, ..SVSM }).unwrap();
        assert_eq!(vmpl1.key(0), None);
        assert!(vmpl1.key(1).is_some());
        let vmpl3 = page.guest_copy(&SvsmDescription { guest_vmpl: 3, ..SVSM }).unwrap();
        assert!((0..3).all(|i| vmpl3.key(i).is_none()));
        assert!(vmpl3.key(3).is_some());
    }

    #[test]
    fn guest_copy_refuses_what_the_guest_would_misread() {
        let page = launched_page();
        assert_eq!(
            page.guest_copy(&SvsmDescription { guest_vmpl: 0, ..SVSM }),
            Err(GuestCopyError::BadGuestVmpl(0))
        );
        assert_eq!(
            page.guest_copy(&SvsmDescription { guest_vmpl: 4, ..SVSM }),
            Err(GuestCopyError::BadGuestVmpl(4))
        );
        assert_eq!(
            page.guest_copy(&SvsmDescription { size: 0, ..SVSM }),
            Err(GuestCopyError::EmptySvsm)
        );
        assert_eq!(
            page.guest_copy(&SvsmDescription { calling_area: 0x1008, ..SVSM }),
            Err(GuestCopyError::UnalignedCallingArea(0x1008))
        );
    }

    #[test]
    fn guest_area_of_the_copy_starts_empty() {
        let mut page = launched_page();
        page.os_area.msg_seqno = [7, 8, 9, 10];
        page.os_area.ap_jump_table_pa = 0x1234;
        let copy = page.guest_copy(&SVSM).unwrap();
        assert!(copy.as_bytes()[0xA0..0x100].iter().all(|b| *b == 0));
    }

    #[test]
    fn wiped_keys_read_as_absent() {
        let mut page = launched_page();
        page.wipe_key(0);
        page.wipe_key(9);
        assert_eq!(page.key(0), None);
        assert!(page.vmpck[0].iter().all(|b| *b == 0));
        assert!(page.key(1).is_some());
        assert_eq!(page.key(4), None);
    }
}
