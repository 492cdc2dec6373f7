//! The SNP secrets page, kept private to the SVSM.
//!
//! The PSP writes the page into the boot image at launch; that part of the
//! image is handed to the guest after boot. So the SVSM copies the page into
//! its own memory first thing and zeroes the original. From then on the
//! only copies of the VMPCKs are here and with their one user (the
//! attestation client takes VMPCK0), and the guest sees the page only
//! through [`SvsmSecrets::guest_page`], without the keys of the VMPLs more
//! privileged than its own.

use abi::secrets::{GuestCopyError, SecretsPage, SvsmDescription, VMPCK_LEN};

/// The SVSM's private secrets page.
pub struct SvsmSecrets {
    page: SecretsPage,
}

impl SvsmSecrets {
    /// Takes the launch page: copies it and overwrites `launch_page` with
    /// zeros.
    pub fn take(launch_page: &mut SecretsPage) -> SvsmSecrets {
        let page = *launch_page;
        *launch_page = zerocopy::FromZeros::new_zeroed();
        // The zeros must reach memory: the page goes to the guest later.
        core::hint::black_box(&*launch_page);
        SvsmSecrets { page }
    }

    /// The secrets-page layout version the PSP wrote.
    pub fn version(&self) -> u32 {
        self.page.version
    }

    /// The guest's copy: no VMPCK of a VMPL more privileged than the guest,
    /// the SVSM fields filled.
    pub fn guest_page(&self, svsm: &SvsmDescription) -> Result<SecretsPage, GuestCopyError> {
        self.page.guest_copy(svsm)
    }

    /// Moves VMPCK `index` out to its one user, leaving zeros behind.
    /// `None` if the PSP provided no key there (or it was taken already).
    pub fn take_vmpck(&mut self, index: usize) -> Option<[u8; VMPCK_LEN]> {
        let key = *self.page.key(index)?;
        self.page.wipe_key(index);
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use zerocopy::{FromZeros, IntoBytes};

    use super::*;

    fn launch_page() -> SecretsPage {
        let mut page = SecretsPage::new_zeroed();
        page.version = 3;
        for (i, key) in page.vmpck.iter_mut().enumerate() {
            *key = [0xA0 + i as u8; VMPCK_LEN];
        }
        page
    }

    #[test]
    fn taking_the_page_leaves_nothing_behind() {
        let mut launch = launch_page();
        let secrets = SvsmSecrets::take(&mut launch);
        assert!(launch.as_bytes().iter().all(|b| *b == 0));
        assert_eq!(secrets.version(), 3);
    }

    #[test]
    fn vmpck0_has_one_owner_and_never_reaches_the_guest() {
        let mut secrets = SvsmSecrets::take(&mut launch_page());
        let svsm = SvsmDescription {
            base: 0x0800_0000,
            size: 0x0400_0000,
            calling_area: 0x0081_2000,
            max_version: 1,
            guest_vmpl: 2,
        };
        let guest = secrets.guest_page(&svsm).unwrap();
        assert_eq!(guest.key(0), None);
        assert_eq!(guest.key(1), None);
        assert_eq!(guest.key(2), Some(&[0xA2; VMPCK_LEN]));
        assert_eq!(secrets.take_vmpck(0), Some([0xA0; VMPCK_LEN]));
        assert_eq!(secrets.take_vmpck(0), None, "taken once");
        assert_eq!(secrets.take_vmpck(7), None);
    }
}
