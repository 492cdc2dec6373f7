//! The development PSP's keys arrive in the boot image: the xtask writes a
//! [`DevPspParams`] block at the fixed GPA `DEV_PSP_PARAMS_GPA` as page
//! data of the IGVM's native platform only (the SNP platform never carries
//! them, so the SNP launch digest does not cover them). It is page data,
//! not an IGVM parameter area: a parameter area is filled by the loader
//! with what it knows at load time, and these keys are a build-time input
//! of the xtask that no loader knows about. At boot the dev platform copies
//! the block into the SVSM, wipes the pages (they become guest memory), and
//! installs a guest-request client over the development PSP as the report
//! source.

#[cfg(target_os = "none")]
use abi::attestation::{DEV_PSP_PARAMS_GPA, DEV_PSP_PARAMS_MAX_SIZE};
use abi::attestation::{DevPspParams, DevPspParamsError};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use super::client::GuestRequestClient;
use super::dev_psp::{DevPsp, DevPspError};
use super::guest_msg::Vmpck;

/// Why no development PSP was installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoverError {
    /// The hand-over block is missing or malformed.
    Params(DevPspParamsError),
    /// Its keys are unusable.
    Psp(DevPspError),
    /// The block's pages are not RAM in this boot's memory map.
    NotInMemory,
}

/// Reads the hand-over in `area`, wipes `area` whatever the outcome, and
/// returns the report source. `launch_entropy` makes this launch's
/// REPORT_ID unique (any per-boot value: REPORT_ID is not secret).
pub fn take(
    area: &mut [u8],
    launch_entropy: u64,
) -> Result<GuestRequestClient<DevPsp>, HandoverError> {
    let result = parse(area, launch_entropy);
    area.zeroize();
    result
}

fn parse(area: &[u8], launch_entropy: u64) -> Result<GuestRequestClient<DevPsp>, HandoverError> {
    let (params, certs) = DevPspParams::parse(area).map_err(HandoverError::Params)?;
    let report_id: [u8; 32] = Sha256::new()
        .chain_update(params.chip_id)
        .chain_update(params.measurement)
        .chain_update(launch_entropy.to_le_bytes())
        .finalize()
        .into();
    let psp = DevPsp::new(&params, certs, report_id).map_err(HandoverError::Psp)?;
    let mut vmpck0 = params.vmpck0;
    let client = GuestRequestClient::new(psp, Vmpck::new(vmpck0, 0));
    vmpck0.zeroize();
    Ok(client)
}

/// On the dev platform: takes the hand-over from the boot image and
/// installs the development PSP as the report source. Must run before the
/// guest gets the pages.
#[cfg(target_os = "none")]
pub fn install_from_boot_image(info: &abi::boot::KernelBootInfo) -> Result<(), HandoverError> {
    let wanted =
        abi::boot::MemoryRange { base: DEV_PSP_PARAMS_GPA, size: DEV_PSP_PARAMS_MAX_SIZE as u64 };
    if !info.memory_ranges().iter().any(|ram| ram.contains_range(&wanted)) {
        return Err(HandoverError::NotInMemory);
    }
    let virt = crate::mm::paging::phys_to_virt(DEV_PSP_PARAMS_GPA);
    // SAFETY: the range is RAM of this boot (checked above), mapped by the
    // kernel's direct map; no guest runs yet, and nothing else in the
    // kernel uses these pages, so this is the only reference to them.
    let area = unsafe { core::slice::from_raw_parts_mut(virt as *mut u8, DEV_PSP_PARAMS_MAX_SIZE) };
    // SAFETY: RDTSC only reads the time-stamp counter.
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    let client = take(area, tsc)?;
    super::install_report_source(alloc::boxed::Box::new(client));
    Ok(())
}

#[cfg(test)]
mod tests {
    use abi::attestation::{DEV_PSP_PARAMS_MAGIC, DEV_PSP_PARAMS_VERSION};
    use zerocopy::{FromZeros, IntoBytes};

    use super::*;
    use crate::protocols::attest::ReportSource;

    fn handover() -> alloc::vec::Vec<u8> {
        let mut params = DevPspParams::new_zeroed();
        params.magic = DEV_PSP_PARAMS_MAGIC;
        params.version = DEV_PSP_PARAMS_VERSION;
        params.vmpck0 = [3; 32];
        params.vcek_private = [0x21; 48];
        params.cpuid_family = 0x19;
        let mut area = alloc::vec![0u8; 0x4000];
        area[..core::mem::size_of::<DevPspParams>()].copy_from_slice(params.as_bytes());
        area
    }

    #[test]
    fn the_hand_over_becomes_a_working_client_and_is_wiped() {
        let mut area = handover();
        let mut client = take(&mut area, 1).unwrap();
        assert!(area.iter().all(|&b| b == 0), "the keys do not stay in guest memory");
        let (report, _) = ReportSource::report(&mut client, &[9; 64], None).unwrap();
        assert_eq!(report.report_data, [9; 64]);
        let mut next_launch = take(&mut handover(), 2).unwrap();
        let (other, _) = ReportSource::report(&mut next_launch, &[9; 64], None).unwrap();
        assert_ne!(other.report_id, report.report_id, "REPORT_ID differs per launch");
    }

    #[test]
    fn a_missing_or_damaged_hand_over_is_refused_and_wiped() {
        let mut empty = alloc::vec![0u8; 0x4000];
        assert_eq!(
            take(&mut empty, 1).err(),
            Some(HandoverError::Params(DevPspParamsError::BadMagic))
        );
        let mut bad_key = handover();
        let at = core::mem::offset_of!(DevPspParams, vcek_private);
        bad_key[at..at + 48].fill(0);
        assert!(matches!(take(&mut bad_key, 1).err(), Some(HandoverError::Psp(_))));
        assert!(bad_key.iter().all(|&b| b == 0));
    }
}
