//! Attestation: how the SVSM obtains SNP attestation reports that cover its
//! services.
//!
//! - [`guest_msg`]: AES-256-GCM sealing of SNP guest messages under a VMPCK.
//! - [`client`]: MSG_REPORT_REQ at VMPL0 with VMPCK0, sequence numbers that
//!   never repeat, and a key that is wiped on the first failure.
//! - [`services`]: the registry of services that appear in the services
//!   manifest (the vTPM registers its EK public area there).
//! - [`dev_psp`] and [`dev_handover`] (feature `dev-psp`): the development
//!   PSP that answers the client on the dev platform, and how it gets its
//!   keys from the boot image.
//!
//! The SVSM's two pieces of attestation state live here: the services
//! ([`register_service`]; any time) and the report source the platform
//! installs at boot ([`install_report_source`]: the guest-request client
//! over the GHCB on SNP, over the development PSP on the dev platform).
//! Without a report source the attestation protocol is not offered. The
//! protocol itself (the guest's calls) is `crate::protocols::attest`.

pub mod client;
#[cfg(any(test, feature = "dev-psp"))]
pub mod dev_handover;
#[cfg(any(test, feature = "dev-psp"))]
pub mod dev_psp;
pub mod guest_msg;
pub mod services;
pub mod snp_transport;

use alloc::boxed::Box;
use alloc::vec::Vec;

use abi::attestation::Guid;
use spin::Mutex;

use crate::protocols::attest::ReportSource;
use services::ServiceRegistry;

/// The services and their manifest data.
pub static SERVICES: Mutex<ServiceRegistry> = Mutex::new(ServiceRegistry::new());
/// Where reports come from, once the platform installed it.
pub static REPORTS: Mutex<Option<Box<dyn ReportSource + Send>>> = Mutex::new(None);

/// Registers (or updates) a service's manifest data.
pub fn register_service(guid: Guid, data: Vec<u8>) {
    SERVICES.lock().register(guid, data);
}

/// Installs the platform's report source (once per boot).
pub fn install_report_source(source: Box<dyn ReportSource + Send>) {
    *REPORTS.lock() = Some(source);
}

/// Lists the vTPM service in the manifest with its current EK public area
/// (none while the vTPM is in failure mode or absent).
pub fn register_vtpm_service() {
    SERVICES.lock().register_current(abi::attestation::VTPM_SERVICE_GUID, crate::vtpm::ek_public);
}

/// Attestation at boot: the vTPM service in the manifest, and the report
/// source: on SNP the guest-request client over the GHCB with VMPCK0; on
/// the dev platform (kernel feature `dev-psp`) the development PSP from the
/// boot image's hand-over. Must run before the guest gets the boot image's
/// pages.
#[cfg(target_os = "none")]
pub fn init_at_boot(info: &abi::boot::KernelBootInfo, platform: crate::platform::PlatformKind) {
    register_vtpm_service();
    #[cfg(feature = "dev-psp")]
    if platform == crate::platform::PlatformKind::Dev {
        match dev_handover::install_from_boot_image(info) {
            Ok(()) => {
                log::info!("attestation: development PSP installed (development keys, not AMD)")
            }
            Err(e) => log::warn!("attestation: no development PSP ({e:?}); protocol 1 not offered"),
        }
    }
    if platform == crate::platform::PlatformKind::Snp {
        if snp_transport::install() {
            log::info!("attestation: guest requests to the PSP with VMPCK0");
        } else {
            log::warn!("attestation: no VMPCK0; protocol 1 not offered");
        }
    }
    let _ = info;
}
