//! The SVSM's side of SNP guest requests: MSG_REPORT_REQ at VMPL0 under
//! VMPCK0, plain or extended (with the host's certificate table), for a
//! report signed by the VCEK (KEY_SEL = 1, never the VLEK: the verifier
//! checks ARK -> ASK -> VCEK chains only).
//!
//! AES-GCM fails badly if an IV is used twice with different plaintext, and
//! the IV is the sequence number, so the client follows the rules the PSP
//! and the GHCB spec set:
//! - each request uses the last sequence number + 1, the response must
//!   carry request + 1, and the counter then moves past both; a number is
//!   never sealed twice;
//! - when the host says busy, or that the certificate buffer is too small,
//!   the *same* sealed message is sent again (a too-small certificate
//!   buffer: again as a plain request, so the number is consumed);
//! - any other failure after sealing (the host or PSP refused it, the
//!   response does not authenticate, carries the wrong number) is fatal for
//!   the key: it is wiped and every later request fails with
//!   [`RequestError::KeyDisabled`]. The guest's attestation then fails
//!   loudly instead of ever risking an IV reuse.

use abi::attestation::{
    GUEST_MSG_PAGE_SIZE, KEY_SEL_VCEK, REPORT_REQ_MSG_VERSION, REPORT_SIZE, REPORT_STATUS_SUCCESS,
    ReportRequest, ReportResponse, cert_table_extent, msg_type,
};
use zerocopy::{FromBytes, IntoBytes};

use super::guest_msg::{self, MessageError, MessageInfo, MessagePage, Vmpck};

/// How often a request the host answered "busy" is sent again before the
/// client gives up (and wipes the key, since the message may still be
/// delivered later).
pub const MAX_BUSY_RETRIES: usize = 16;

/// How a guest request reaches the PSP: on SNP the GHCB (NAE 0x8000_0011,
/// extended 0x8000_0012) with shared pages; on the dev platform a direct
/// call into the development PSP.
pub trait GuestRequestTransport {
    /// Delivers `request` and fills `response`. With `certs`, an extended
    /// request: the host writes its certificate table there.
    fn request(
        &mut self,
        request: &MessagePage,
        response: &mut MessagePage,
        certs: Option<&mut [u8]>,
    ) -> Result<(), TransportError>;
}

/// Why the transport did not deliver a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// The host is busy; the request was not forwarded.
    Busy,
    /// The certificate buffer is too small (`needed` bytes); the request was
    /// not forwarded.
    CertsTooSmall {
        /// Bytes the certificate table needs.
        needed: usize,
    },
    /// The host or the PSP rejected the request (the code it reported).
    Failed(u64),
}

/// Why a report request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// VMPCK0 is gone: wiped after an earlier failure, or never provisioned.
    KeyDisabled,
    /// The transport failed (the key was wiped).
    Transport(TransportError),
    /// The response did not authenticate or had the wrong header (the key
    /// was wiped).
    Message(MessageError),
    /// The PSP processed the request and refused it with this status.
    Firmware(u32),
    /// The PSP's authenticated response is malformed (wrong report size).
    BadResponse,
    /// The sequence numbers are exhausted.
    SequenceExhausted,
}

/// What an extended request did with the certificate buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertsOutcome {
    /// Plain request: no certificates asked for.
    NotRequested,
    /// The certificate table, this many bytes long, is in the buffer.
    Written(usize),
    /// The buffer was too small; the table needs this many bytes.
    TooSmall(usize),
}

/// A report and what happened to the certificates.
#[derive(Clone, Copy, Debug)]
pub struct ReportOutcome {
    /// The signed report.
    pub report: abi::attestation::AttestationReport,
    /// The certificate table's fate.
    pub certs: CertsOutcome,
}

/// Issues guest requests with one VMPCK.
pub struct GuestRequestClient<T> {
    transport: T,
    key: Vmpck,
    last_seqno: u64,
}

impl<T: GuestRequestTransport> GuestRequestClient<T> {
    /// A client that has sent nothing yet with `key` (the PSP's counter for
    /// it is at 0 after launch).
    pub fn new(transport: T, key: Vmpck) -> Self {
        GuestRequestClient { transport, key, last_seqno: 0 }
    }

    /// Whether the key is gone and no request can be made.
    pub fn is_disabled(&self) -> bool {
        self.key.is_empty()
    }

    /// The last sequence number used (request or response).
    pub fn last_seqno(&self) -> u64 {
        self.last_seqno
    }

    /// The transport (tests inspect their doubles through it).
    pub fn transport(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Requests a VMPL0 report signed by the VCEK with `report_data`; with
    /// `certs`, an extended request that also fetches the certificate table.
    pub fn report(
        &mut self,
        report_data: &[u8; 64],
        certs: Option<&mut [u8]>,
    ) -> Result<ReportOutcome, RequestError> {
        let request = ReportRequest {
            report_data: *report_data,
            vmpl: 0,
            // The VCEK, explicitly: 0 would mean "the VLEK if the host
            // installed one", and a VLEK-signed report chains to AMD's ASVK,
            // which our verifier (`cargo xtask verify`) does not accept.
            // Firmware older than KEY_SEL (before VLEKs existed) has these
            // bits reserved; if such a firmware refuses the value,
            // the request fails with the firmware's status and the key is
            // kept (RequestError::Firmware).
            key_sel: KEY_SEL_VCEK,
            reserved: [0; 24],
        };
        let mut response = [0u8; GUEST_MSG_PAGE_SIZE];
        let (payload, certs) = self.exchange(
            msg_type::REPORT_REQ,
            REPORT_REQ_MSG_VERSION,
            request.as_bytes(),
            &mut response,
            certs,
        )?;
        let parsed = ReportResponse::read_from_prefix(payload).map(|(r, _)| r);
        let parsed = parsed.map_err(|_| RequestError::BadResponse)?;
        if parsed.header.status != REPORT_STATUS_SUCCESS {
            return Err(RequestError::Firmware(parsed.header.status));
        }
        if parsed.header.report_size as usize != REPORT_SIZE {
            return Err(RequestError::BadResponse);
        }
        Ok(ReportOutcome { report: parsed.report, certs })
    }

    /// Seals `payload`, delivers it and opens the response; returns the
    /// response's plaintext (inside `response`).
    fn exchange<'r>(
        &mut self,
        request_type: u8,
        version: u8,
        payload: &[u8],
        response: &'r mut MessagePage,
        mut certs: Option<&mut [u8]>,
    ) -> Result<(&'r [u8], CertsOutcome), RequestError> {
        if self.key.is_empty() {
            return Err(RequestError::KeyDisabled);
        }
        let seqno = self.last_seqno.checked_add(1).ok_or(RequestError::SequenceExhausted)?;
        let response_seqno = seqno.checked_add(1).ok_or(RequestError::SequenceExhausted)?;
        let mut request = [0u8; GUEST_MSG_PAGE_SIZE];
        let info = MessageInfo { seqno, msg_type: request_type, msg_version: version };
        guest_msg::seal(&self.key, info, payload, &mut request).map_err(RequestError::Message)?;
        // From here on the number is spent, whatever happens.
        self.last_seqno = response_seqno;
        let mut outcome =
            if certs.is_some() { CertsOutcome::Written(0) } else { CertsOutcome::NotRequested };
        let mut attempts = 0;
        loop {
            match self.transport.request(&request, response, certs.as_deref_mut()) {
                Ok(()) => break,
                Err(TransportError::Busy) if attempts < MAX_BUSY_RETRIES => attempts += 1,
                Err(TransportError::CertsTooSmall { needed }) if certs.is_some() => {
                    outcome = CertsOutcome::TooSmall(needed);
                    certs = None;
                }
                Err(error) => return Err(self.fail(RequestError::Transport(error))),
            }
        }
        let expected =
            MessageInfo { seqno: response_seqno, msg_type: request_type + 1, msg_version: version };
        let plaintext = match guest_msg::open(&self.key, expected, response) {
            Ok(plaintext) => plaintext,
            Err(error) => return Err(self.fail(RequestError::Message(error))),
        };
        if let (CertsOutcome::Written(_), Some(buffer)) = (outcome, certs) {
            // A table the host wrote malformed counts as empty.
            outcome = CertsOutcome::Written(cert_table_extent(buffer).unwrap_or(0));
        }
        Ok((plaintext, outcome))
    }

    fn fail(&mut self, error: RequestError) -> RequestError {
        log::error!("guest request failed ({error:?}): VMPCK{} wiped", self.key.index());
        self.key.wipe();
        error
    }
}
