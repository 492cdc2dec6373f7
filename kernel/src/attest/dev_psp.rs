//! The development PSP of the dev platform: what the AMD Secure Processor
//! does for guest requests, so the SVSM's attestation path runs end to end
//! without SNP hardware. It keeps the development VMPCK0, checks and
//! decrypts MSG_REPORT_REQ like the firmware (header, sequence number,
//! tag), builds a version-3 ATTESTATION_REPORT with every field the real one
//! has, signs it with the development VCEK (ECDSA P-384/SHA-384, R and S
//! little-endian) and seals the response.
//!
//! Its keys come from the xtask's per-build-folder development chain
//! through [`abi::attestation::DevPspParams`], which the boot image carries
//! as page data of the IGVM's native platform at a fixed GPA (not an IGVM
//! parameter area: the keys are a build-time input no loader knows about;
//! see [`super::dev_handover`]). Nothing it signs proves anything outside
//! development:
//! - its MEASUREMENT is the image's SNP launch digest, which covers the SNP
//!   platform's kernel (built without this module), not the native kernel
//!   that actually runs on the dev platform; it is reported so that a
//!   development report is checked against the same expected value as a
//!   real report of the same image;
//! - the ID-block fields (FAMILY_ID, IMAGE_ID, GUEST_SVN, ID_KEY_DIGEST,
//!   AUTHOR_KEY_DIGEST with KEY_INFO's AUTHOR_KEY_EN) and HOST_DATA are
//!   what the xtask computed a real PSP would report for the image.
//!
//! Kernel feature `dev-psp`, native platform's kernel only: the SNP
//! platform's kernel does not contain it (`cargo xtask test` checks the
//! built ELFs).

use alloc::vec::Vec;

use abi::attestation::{
    AttestationReport, DevPspParams, GUEST_MSG_PAGE_SIZE, KEY_SEL_ANY, KEY_SEL_VCEK,
    REPORT_STATUS_INVALID_KEY, REPORT_STATUS_INVALID_PARAM, REPORT_STATUS_SUCCESS,
    REPORT_VERSION_DEV, ReportRequest, ReportResponse, ReportSignature,
    SIGNATURE_ALGO_ECDSA_P384_SHA384, key_info, msg_type,
};
use p384::ecdsa::signature::Signer;
use p384::ecdsa::{Signature, SigningKey};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use super::client::{GuestRequestTransport, TransportError};
use super::guest_msg::{self, MessageInfo, MessagePage, Vmpck};

/// Firmware failure codes the development PSP reports through the
/// transport (the real firmware's SNP_GUEST_REQUEST statuses).
pub mod failure {
    /// A header field is invalid (algorithm, versions, VMPCK, type).
    pub const INVALID_HEADER: u64 = 0x16;
    /// The sequence number is not the next one.
    pub const BAD_SEQUENCE: u64 = 0x1C;
    /// The message does not authenticate.
    pub const AUTH_FAILED: u64 = 0x1B;
}

/// Why the development PSP could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevPspError {
    /// The hand-over's VCEK scalar is not a valid P-384 private key.
    BadVcekKey,
    /// The hand-over's VMPCK0 is all zero.
    NoVmpck,
}

/// The development PSP.
pub struct DevPsp {
    vmpck0: Vmpck,
    vcek: SigningKey,
    params: DevPspParams,
    certs: Vec<u8>,
    report_id: [u8; 32],
    next_seqno: u64,
}

impl DevPsp {
    /// The PSP with the keys and platform facts of `params`, the
    /// certificate table `certs`, and this launch's REPORT_ID.
    pub fn new(
        params: &DevPspParams,
        certs: &[u8],
        report_id: [u8; 32],
    ) -> Result<DevPsp, DevPspError> {
        let vmpck0 = Vmpck::new(params.vmpck0, 0);
        if vmpck0.is_empty() {
            return Err(DevPspError::NoVmpck);
        }
        let vcek =
            SigningKey::from_slice(&params.vcek_private).map_err(|_| DevPspError::BadVcekKey)?;
        let mut params = *params;
        params.vmpck0 = [0; 32];
        params.vcek_private = [0; 48];
        Ok(DevPsp { vmpck0, vcek, params, certs: certs.to_vec(), report_id, next_seqno: 1 })
    }

    /// Answers one guest request page.
    fn handle(&mut self, request: &MessagePage, response: &mut MessagePage) -> Result<(), u64> {
        let header = guest_msg::peek_header(request);
        if header.msg_vmpck != 0 || header.msg_type != msg_type::REPORT_REQ {
            return Err(failure::INVALID_HEADER);
        }
        if header.msg_seqno != self.next_seqno {
            return Err(failure::BAD_SEQUENCE);
        }
        let info = MessageInfo {
            seqno: header.msg_seqno,
            msg_type: header.msg_type,
            msg_version: header.msg_version,
        };
        let mut page = *request;
        let payload = guest_msg::open(&self.vmpck0, info, &mut page).map_err(|e| match e {
            guest_msg::MessageError::BadTag => failure::AUTH_FAILED,
            _ => failure::INVALID_HEADER,
        })?;
        let answer = self.answer(payload);
        let reply = MessageInfo {
            seqno: header.msg_seqno + 1,
            msg_type: msg_type::REPORT_RSP,
            msg_version: header.msg_version,
        };
        guest_msg::seal(&self.vmpck0, reply, answer.as_bytes(), response)
            .map_err(|_| failure::INVALID_HEADER)?;
        self.next_seqno += 2;
        Ok(())
    }

    /// The MSG_REPORT_RSP payload for a decrypted MSG_REPORT_REQ payload.
    fn answer(&self, payload: &[u8]) -> ReportResponse {
        let mut response = ReportResponse::new_zeroed();
        let status = match ReportRequest::read_from_bytes(payload) {
            Err(_) => REPORT_STATUS_INVALID_PARAM,
            Ok(request) if request.vmpl > 3 || request.reserved != [0; 24] => {
                REPORT_STATUS_INVALID_PARAM
            }
            Ok(request) if request.key_sel & !0x3 != 0 || request.key_sel == 3 => {
                REPORT_STATUS_INVALID_PARAM
            }
            // No VLEK is installed on the development platform.
            Ok(request) if !matches!(request.key_sel, KEY_SEL_ANY | KEY_SEL_VCEK) => {
                REPORT_STATUS_INVALID_KEY
            }
            Ok(request) => {
                response.report = self.signed_report(&request);
                response.header.report_size = core::mem::size_of::<AttestationReport>() as u32;
                REPORT_STATUS_SUCCESS
            }
        };
        response.header.status = status;
        response
    }

    /// The report for `request`, signed by the development VCEK.
    pub fn signed_report(&self, request: &ReportRequest) -> AttestationReport {
        let p = &self.params;
        let mut report = AttestationReport::new_zeroed();
        report.version = REPORT_VERSION_DEV;
        report.guest_svn = p.guest_svn;
        report.policy = p.policy;
        report.family_id = p.family_id;
        report.image_id = p.image_id;
        report.vmpl = request.vmpl;
        report.signature_algo = SIGNATURE_ALGO_ECDSA_P384_SHA384;
        report.current_tcb = p.current_tcb;
        report.platform_info = p.platform_info;
        report.key_info = key_info::SIGNING_KEY_VCEK << key_info::SIGNING_KEY_SHIFT;
        if p.author_key_digest != [0; 48] {
            // The firmware sets AUTHOR_KEY_EN when the ID block was signed
            // with an author key, whose digest it then reports.
            report.key_info |= key_info::AUTHOR_KEY_EN;
        }
        report.report_data = request.report_data;
        report.measurement = p.measurement;
        report.host_data = p.host_data;
        report.id_key_digest = p.id_key_digest;
        report.author_key_digest = p.author_key_digest;
        report.report_id = self.report_id;
        report.report_id_ma = [0xFF; 32];
        report.reported_tcb = p.reported_tcb;
        report.cpuid_family = p.cpuid_family;
        report.cpuid_model = p.cpuid_model;
        report.cpuid_stepping = p.cpuid_stepping;
        report.chip_id = p.chip_id;
        report.committed_tcb = p.committed_tcb;
        report.current_version = p.current_version;
        report.committed_version = p.committed_version;
        report.launch_tcb = p.launch_tcb;
        let signature: Signature = self.vcek.sign(report.signed_bytes());
        let (r, s) = signature.split_bytes();
        let r: [u8; 48] = r.as_slice().try_into().expect("P-384 scalars have 48 bytes");
        let s: [u8; 48] = s.as_slice().try_into().expect("P-384 scalars have 48 bytes");
        report.signature = ReportSignature::from_big_endian(&r, &s);
        report
    }
}

/// Rounds a certificate-table length up to whole pages, as a host reports
/// the size it needs.
fn pages_for(len: usize) -> usize {
    len.div_ceil(GUEST_MSG_PAGE_SIZE) * GUEST_MSG_PAGE_SIZE
}

impl GuestRequestTransport for DevPsp {
    fn request(
        &mut self,
        request: &MessagePage,
        response: &mut MessagePage,
        certs: Option<&mut [u8]>,
    ) -> Result<(), TransportError> {
        if let Some(buffer) = certs {
            // The host's part of an extended request: the table first, and
            // nothing forwarded if it does not fit.
            let table: &[u8] = if self.certs.is_empty() { &[0; 24] } else { &self.certs };
            if buffer.len() < table.len() {
                return Err(TransportError::CertsTooSmall { needed: pages_for(table.len()) });
            }
            buffer.fill(0);
            buffer[..table.len()].copy_from_slice(table);
        }
        self.handle(request, response).map_err(TransportError::Failed)
    }
}

#[cfg(test)]
mod tests;
