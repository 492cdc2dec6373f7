//! The TPM CRB device that stock guests use on the dev platform.
//!
//! OVMF and Linux outside SNP do not speak the SVSM's vTPM protocol; they
//! look for a TPM at 0xFED40000 with the CRB interface. On the dev platform
//! that page is absent from the guest's nested page tables, so every access
//! stops the guest with a nested page fault; the platform hands it to
//! [`handle_npf`], which decodes and performs the access on the emulated
//! CRB registers ([`device`]). Each command runs on the same vTPM as
//! protocol 2 (`crate::vtpm`).
//!
//! - [`decode`]: the x86 instruction decoder for MMIO accesses;
//! - [`mmio`]: the emulation (instruction fetch through the guest's page
//!   tables, operand address, register and RIP updates);
//! - [`device`]: the CRB register model;
//! - [`acpi`]: the TPM2 table and the SSDT that let Linux find the device.

pub mod acpi;
pub mod decode;
pub mod device;
pub mod mmio;

use spin::Mutex;

use crate::guest_mem::GuestMemory;
use crate::vtpm::SvsmVtpm;
use device::{CRB_BASE, CRB_SIZE, CrbDevice, CrbStats};
use mmio::{DeviceWindow, GuestCpu, MmioError};

/// The SVSM's CRB device, on its vTPM.
static CRB: Mutex<Option<CrbDevice<SvsmVtpm>>> = Mutex::new(None);

/// Whether `gpa` is in the CRB device's range (the page the platform must
/// leave unmapped and send here).
pub fn contains(gpa: u64) -> bool {
    (CRB_BASE..CRB_BASE + CRB_SIZE).contains(&gpa)
}

/// Emulates the guest access that faulted at `gpa` (in the CRB range),
/// walking the guest's page tables in `tables` and moving MOVS elements
/// through `ram` ([`mmio::emulate`] says what each must be): on success the
/// guest's registers and RIP are updated and it can be re-entered; an error
/// is for the platform to report (the guest cannot go on past an
/// instruction nobody performed).
pub fn handle_npf(
    cpu: &mut dyn GuestCpu,
    tables: &dyn GuestMemory,
    ram: &dyn GuestMemory,
    gpa: u64,
) -> Result<(), MmioError> {
    let mut crb = CRB.lock();
    let device = crb.get_or_insert_with(|| CrbDevice::new(SvsmVtpm));
    let mut window = DeviceWindow { base: CRB_BASE, size: CRB_SIZE, device };
    mmio::emulate(cpu, tables, ram, gpa, &mut window).map(|_| ())
}

/// The CRB device's counters (zero before the first access).
pub fn stats() -> CrbStats {
    CRB.lock().as_ref().map(CrbDevice::stats).unwrap_or_default()
}
