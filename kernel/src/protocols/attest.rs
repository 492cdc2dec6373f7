//! The attestation protocol (SVSM protocol 1, spec §7): the guest asks for
//! an SNP attestation report that covers the SVSM's services.
//!
//! - ATTEST_SERVICES: REPORT_DATA = SHA-512(nonce ‖ services manifest);
//!   the guest receives the report, the manifest and (if it gave a buffer)
//!   the certificate table.
//! - ATTEST_SINGLE_SERVICE: the same over one service's manifest data
//!   (manifest version 0 only).
//!
//! Outputs: RCX = manifest length, RDX = certificate table length, R8 =
//! report length, on success and also with SVSM_ERR_INVALID_PARAMETER when a
//! guest buffer is too small, so the guest can retry with bigger ones.
//! Everything the guest passes is hostile: every GPA goes through the
//! checked [`GuestMemory`], and every buffer is checked (alignment, size,
//! address) before a report is requested, so a bad call costs no report.

use alloc::vec;
use alloc::vec::Vec;

use abi::attestation::{
    ATTEST_SERVICES, ATTEST_SINGLE_SERVICE, AttestServicesOp, AttestSingleServiceOp,
    AttestationReport, Guid, REPORT_SIZE, SERVICE_MANIFEST_VERSION,
};
use abi::layout::PAGE_SIZE;
use abi::svsm::{
    ProtocolVersions, SVSM_ERR_INVALID_ADDRESS, SVSM_ERR_INVALID_PARAMETER,
    SVSM_ERR_INVALID_REQUEST, SVSM_ERR_UNSUPPORTED_CALL, SVSM_ERR_UNSUPPORTED_PROTOCOL,
    SVSM_SUCCESS,
};
use sha2::{Digest, Sha512};
use zerocopy::{FromBytes, IntoBytes};

use crate::attest::client::{
    CertsOutcome, GuestRequestClient, GuestRequestTransport, RequestError,
};
use crate::attest::services::ServiceRegistry;
use crate::guest_mem::GuestMemory;
use crate::protocols::CallRegisters;

/// The attestation protocol versions this SVSM serves.
pub const VERSIONS: ProtocolVersions = ProtocolVersions { min: 1, max: 1 };

/// Largest nonce the SVSM accepts (one page).
pub const MAX_NONCE_SIZE: usize = PAGE_SIZE as usize;
/// Largest certificate table the SVSM fetches for a guest (the Linux and
/// COCONUT limit of an extended report's certificate blob).
pub const MAX_CERTS_SIZE: usize = 0x4000;

/// Where reports come from: the guest-request client on every platform.
pub trait ReportSource {
    /// A VMPL0 report with `report_data`; with `certs`, also the
    /// certificate table.
    fn report(
        &mut self,
        report_data: &[u8; 64],
        certs: Option<&mut [u8]>,
    ) -> Result<(AttestationReport, CertsOutcome), RequestError>;
}

impl<T: GuestRequestTransport> ReportSource for GuestRequestClient<T> {
    fn report(
        &mut self,
        report_data: &[u8; 64],
        certs: Option<&mut [u8]>,
    ) -> Result<(AttestationReport, CertsOutcome), RequestError> {
        let outcome = GuestRequestClient::report(self, report_data, certs)?;
        Ok((outcome.report, outcome.certs))
    }
}

/// What the SVSM needs to serve the protocol.
pub struct AttestContext<'a> {
    /// The services and their manifest data.
    pub services: &'a ServiceRegistry,
    /// The report source.
    pub reports: &'a mut dyn ReportSource,
}

/// The versions served: none until the platform installed a report source.
pub fn versions() -> Option<ProtocolVersions> {
    crate::attest::REPORTS.lock().is_some().then_some(VERSIONS)
}

/// The dispatcher's entry: call `call` of protocol 1 with the SVSM's
/// services and report source.
pub fn handle_call(call: u32, regs: &mut CallRegisters, memory: &dyn GuestMemory) -> u32 {
    let services = crate::attest::SERVICES.lock();
    let mut reports = crate::attest::REPORTS.lock();
    let Some(reports) = reports.as_mut() else {
        return SVSM_ERR_UNSUPPORTED_PROTOCOL;
    };
    let mut context = AttestContext { services: &services, reports: reports.as_mut() };
    handle(call, regs, memory, &mut context)
}

/// Handles call `call` of protocol 1; returns the result code for RAX.
pub fn handle(
    call: u32,
    regs: &mut CallRegisters,
    memory: &dyn GuestMemory,
    context: &mut AttestContext<'_>,
) -> u32 {
    let result = match call {
        ATTEST_SERVICES => attest_services(regs, memory, context),
        ATTEST_SINGLE_SERVICE => attest_single_service(regs, memory, context),
        _ => Err(SVSM_ERR_UNSUPPORTED_CALL),
    };
    match result {
        Ok(()) => SVSM_SUCCESS,
        Err(code) => code,
    }
}

fn attest_services(
    regs: &mut CallRegisters,
    memory: &dyn GuestMemory,
    context: &mut AttestContext<'_>,
) -> Result<(), u32> {
    let op: AttestServicesOp = read_op(memory, regs.rcx)?;
    let manifest = context.services.manifest();
    attest(&op, &manifest, regs, memory, context)
}

fn attest_single_service(
    regs: &mut CallRegisters,
    memory: &dyn GuestMemory,
    context: &mut AttestContext<'_>,
) -> Result<(), u32> {
    let op: AttestSingleServiceOp = read_op(memory, regs.rcx)?;
    if op.reserved != 0 || op.manifest_version != SERVICE_MANIFEST_VERSION {
        return Err(SVSM_ERR_INVALID_PARAMETER);
    }
    let guid = Guid::from_uefi_bytes(op.service_guid);
    let data = context.services.data(guid).ok_or(SVSM_ERR_UNSUPPORTED_PROTOCOL)?;
    attest(&op.services, &data, regs, memory, context)
}

/// Reads an operation structure from guest memory.
fn read_op<T: FromBytes + IntoBytes>(memory: &dyn GuestMemory, gpa: u64) -> Result<T, u32> {
    let mut op = T::new_zeroed();
    memory.read(gpa, op.as_mut_bytes()).map_err(|_| SVSM_ERR_INVALID_ADDRESS)?;
    Ok(op)
}

/// The common part: check the buffers, request the report over
/// SHA-512(nonce ‖ manifest), hand everything to the guest.
fn attest(
    op: &AttestServicesOp,
    manifest: &[u8],
    regs: &mut CallRegisters,
    memory: &dyn GuestMemory,
    context: &mut AttestContext<'_>,
) -> Result<(), u32> {
    if !op.reserved_clear() {
        return Err(SVSM_ERR_INVALID_PARAMETER);
    }
    let wants_certs = op.certs_size != 0;
    let aligned = |gpa: u64| gpa.is_multiple_of(PAGE_SIZE);
    if !aligned(op.report_gpa)
        || !aligned(op.manifest_gpa)
        || (wants_certs && !aligned(op.certs_gpa))
    {
        return Err(SVSM_ERR_INVALID_PARAMETER);
    }
    let nonce_size = usize::from(op.nonce_size);
    if nonce_size > MAX_NONCE_SIZE {
        return Err(SVSM_ERR_INVALID_PARAMETER);
    }
    let mut nonce = vec![0u8; nonce_size];
    memory.read(op.nonce_gpa, &mut nonce).map_err(|_| SVSM_ERR_INVALID_ADDRESS)?;

    // Sizes first: a too-small buffer costs no report.
    regs.rcx = manifest.len() as u64;
    regs.rdx = 0;
    regs.r8 = REPORT_SIZE as u64;
    if (op.manifest_size as usize) < manifest.len() || (op.report_size as usize) < REPORT_SIZE {
        return Err(SVSM_ERR_INVALID_PARAMETER);
    }

    // Every output buffer must be writable before a report is spent on it.
    let check = |gpa: u64, len: u64| memory.check(gpa, len).map_err(|_| SVSM_ERR_INVALID_ADDRESS);
    check(op.report_gpa, REPORT_SIZE as u64)?;
    check(op.manifest_gpa, manifest.len() as u64)?;
    if wants_certs {
        check(op.certs_gpa, u64::from(op.certs_size))?;
    }

    let report_data: [u8; 64] =
        Sha512::new().chain_update(&nonce).chain_update(manifest).finalize().into();
    let mut certs: Vec<u8> = if wants_certs {
        vec![0; (op.certs_size as usize).min(MAX_CERTS_SIZE)]
    } else {
        Vec::new()
    };
    let (report, certs_outcome) = context
        .reports
        .report(&report_data, wants_certs.then_some(certs.as_mut_slice()))
        .map_err(request_error_code)?;
    let certs_len = match certs_outcome {
        CertsOutcome::NotRequested => 0,
        CertsOutcome::Written(len) => len,
        CertsOutcome::TooSmall(needed) => {
            regs.rdx = needed as u64;
            return Err(SVSM_ERR_INVALID_PARAMETER);
        }
    };
    regs.rdx = certs_len as u64;

    let write = |gpa, data: &[u8]| memory.write(gpa, data).map_err(|_| SVSM_ERR_INVALID_ADDRESS);
    write(op.report_gpa, report.as_bytes())?;
    write(op.manifest_gpa, manifest)?;
    if certs_len != 0 {
        write(op.certs_gpa, &certs[..certs_len])?;
    }
    Ok(())
}

/// The result code for a failed report request.
fn request_error_code(error: RequestError) -> u32 {
    // Every failure but a firmware status has cost the key (see
    // `attest::client`); none is worth retrying.
    log::warn!("attestation report request failed: {error:?}");
    SVSM_ERR_INVALID_REQUEST
}

#[cfg(test)]
mod tests;
