//! The client and the development PSP end to end: reports that verify with
//! the VCEK's public key, the sequence-number rules, and every failure
//! path wiping the key.

use abi::attestation::{
    CERT_GUID_ARK, CERT_GUID_VCEK, DEV_PSP_PARAMS_MAGIC, DEV_PSP_PARAMS_VERSION, FirmwareVersion,
    Generation, REPORT_STATUS_INVALID_KEY, TcbVersion, find_certificate, write_cert_table,
};
use p384::ecdsa::signature::Verifier;
use p384::ecdsa::{Signature, VerifyingKey};

use super::*;
use crate::attest::client::{CertsOutcome, GuestRequestClient, RequestError};
use crate::attest::guest_msg::MessageError;

const VMPCK0: [u8; 32] = [0x5A; 32];
const VCEK_SCALAR: [u8; 48] = [
    0x1e, 0x2f, 0x3a, 0x4b, 0x5c, 0x6d, 0x7e, 0x8f, 0x90, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07,
    0x18, 0x29, 0x3a, 0x4b, 0x5c, 0x6d, 0x7e, 0x8f, 0x90, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07,
    0x18, 0x29, 0x3a, 0x4b, 0x5c, 0x6d, 0x7e, 0x8f, 0x90, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07,
];

fn params() -> DevPspParams {
    let tcb = TcbVersion { fmc: 0, bootloader: 9, tee: 0, snp: 23, microcode: 0x48 };
    let mut p = DevPspParams::new_zeroed();
    p.magic = DEV_PSP_PARAMS_MAGIC;
    p.version = DEV_PSP_PARAMS_VERSION;
    p.vmpck0 = VMPCK0;
    p.vcek_private = VCEK_SCALAR;
    p.chip_id = [0xC1; 64];
    p.measurement = [0x3E; 48];
    p.host_data = [0x4D; 32];
    p.policy = 0x30000;
    p.platform_info = 1;
    p.current_tcb = tcb.encode(Generation::Genoa);
    p.reported_tcb = tcb.encode(Generation::Genoa);
    p.committed_tcb = tcb.encode(Generation::Genoa);
    p.launch_tcb = tcb.encode(Generation::Genoa);
    p.cpuid_family = 0x19;
    p.cpuid_model = 0x11;
    p.cpuid_stepping = 1;
    p.current_version = FirmwareVersion { build: 1, minor: 55, major: 1 };
    p.committed_version = FirmwareVersion { build: 1, minor: 55, major: 1 };
    p
}

fn certs() -> Vec<u8> {
    let mut table = vec![0u8; 128];
    let len = write_cert_table(&[(CERT_GUID_ARK, b"ark"), (CERT_GUID_VCEK, b"vcek")], &mut table)
        .unwrap();
    table.truncate(len);
    table
}

fn psp() -> DevPsp {
    DevPsp::new(&params(), &certs(), [0x1D; 32]).unwrap()
}

fn client() -> GuestRequestClient<DevPsp> {
    GuestRequestClient::new(psp(), Vmpck::new(VMPCK0, 0))
}

fn verify(report: &AttestationReport) -> bool {
    let key = SigningKey::from_slice(&VCEK_SCALAR).unwrap();
    let verifying = VerifyingKey::from(&key);
    let Some((r, s)) = report.signature.to_big_endian() else { return false };
    let Ok(signature) = Signature::from_scalars(r, s) else { return false };
    verifying.verify(report.signed_bytes(), &signature).is_ok()
}

#[test]
fn a_report_has_every_field_and_a_valid_signature() {
    let mut client = client();
    let outcome = client.report(&[0xAB; 64], None).unwrap();
    let r = outcome.report;
    assert_eq!(outcome.certs, CertsOutcome::NotRequested);
    assert_eq!(r.version, 3);
    assert_eq!(r.vmpl, 0);
    assert_eq!(r.signature_algo, 1);
    assert_eq!(r.report_data, [0xAB; 64]);
    assert_eq!(r.measurement, [0x3E; 48]);
    assert_eq!(r.host_data, [0x4D; 32]);
    assert_eq!(r.policy, 0x30000);
    assert_eq!(r.chip_id, [0xC1; 64]);
    assert_eq!(r.report_id, [0x1D; 32]);
    assert_eq!(r.report_id_ma, [0xFF; 32]);
    assert_eq!(r.generation(), Some(Generation::Genoa));
    assert_eq!(TcbVersion::decode(r.reported_tcb, Generation::Genoa).snp, 23);
    assert_eq!(r.current_version.minor, 55);
    assert_eq!(r.signing_key(), key_info::SIGNING_KEY_VCEK);
    assert!(verify(&r));
    let mut tampered = r;
    tampered.report_data[0] ^= 1;
    assert!(!verify(&tampered));
}

#[test]
fn id_block_fields_and_the_author_key_flag_are_reported() {
    let mut p = params();
    p.family_id = [0xFA; 16];
    p.image_id = [0x1A; 16];
    p.guest_svn = 7;
    p.id_key_digest = [0x1D; 48];
    let psp = DevPsp::new(&p, &[], [0; 32]).unwrap();
    let request = ReportRequest { report_data: [0; 64], vmpl: 0, key_sel: 1, reserved: [0; 24] };
    let r = psp.signed_report(&request);
    assert_eq!((r.family_id, r.image_id, r.guest_svn), ([0xFA; 16], [0x1A; 16], 7));
    assert_eq!((r.id_key_digest, r.author_key_digest), ([0x1D; 48], [0; 48]));
    assert_eq!(r.key_info & key_info::AUTHOR_KEY_EN, 0, "no author key");
    p.author_key_digest = [0xAA; 48];
    let r = DevPsp::new(&p, &[], [0; 32]).unwrap().signed_report(&request);
    assert_eq!(r.author_key_digest, [0xAA; 48]);
    assert_eq!(r.key_info & key_info::AUTHOR_KEY_EN, key_info::AUTHOR_KEY_EN);
    assert_eq!(r.signing_key(), key_info::SIGNING_KEY_VCEK);
}

/// The SVSM asks for the VCEK explicitly: 0 would let a host with a VLEK
/// installed have the report signed by a key our verifier does not accept.
#[test]
fn the_client_requests_a_vcek_signed_report() {
    let mut client = scripted(Vec::new());
    client.report(&[0x11; 64], None).unwrap();
    let mut sent = client.transport().delivered[0];
    let info = MessageInfo {
        seqno: 1,
        msg_type: msg_type::REPORT_REQ,
        msg_version: abi::attestation::REPORT_REQ_MSG_VERSION,
    };
    let payload = guest_msg::open(&Vmpck::new(VMPCK0, 0), info, &mut sent).unwrap();
    let request = ReportRequest::read_from_bytes(payload).unwrap();
    assert_eq!(request.key_sel, KEY_SEL_VCEK);
    assert_eq!((request.vmpl, request.report_data), (0, [0x11; 64]));
}

#[test]
fn sequence_numbers_advance_by_two_and_never_repeat() {
    let mut client = client();
    assert_eq!(client.last_seqno(), 0);
    for round in 1..=3u64 {
        client.report(&[round as u8; 64], None).unwrap();
        assert_eq!(client.last_seqno(), 2 * round);
    }
}

#[test]
fn an_extended_request_returns_the_certificate_table() {
    let mut client = client();
    let mut buffer = vec![0xEEu8; 8192];
    let outcome = client.report(&[1; 64], Some(&mut buffer)).unwrap();
    assert_eq!(outcome.certs, CertsOutcome::Written(certs().len()));
    assert_eq!(find_certificate(&buffer, CERT_GUID_VCEK), Ok(Some(&b"vcek"[..])));
}

#[test]
fn a_too_small_certificate_buffer_still_consumes_the_sequence_number() {
    let mut client = client();
    let mut small = [0u8; 16];
    let outcome = client.report(&[1; 64], Some(&mut small)).unwrap();
    assert_eq!(outcome.certs, CertsOutcome::TooSmall(4096));
    assert!(verify(&outcome.report));
    assert_eq!(client.last_seqno(), 2);
    // And the PSP agrees: the next request works.
    client.report(&[2; 64], None).unwrap();
}

/// A transport that fails as scripted, then hands requests to the PSP.
struct Scripted {
    psp: DevPsp,
    script: Vec<Result<(), TransportError>>,
    delivered: Vec<MessagePage>,
    corrupt_response: bool,
}

impl GuestRequestTransport for Scripted {
    fn request(
        &mut self,
        request: &MessagePage,
        response: &mut MessagePage,
        certs: Option<&mut [u8]>,
    ) -> Result<(), TransportError> {
        self.delivered.push(*request);
        if !self.script.is_empty() {
            self.script.remove(0)?;
        }
        self.psp.request(request, response, certs)?;
        if self.corrupt_response {
            response[0x70] ^= 1;
        }
        Ok(())
    }
}

fn scripted(script: Vec<Result<(), TransportError>>) -> GuestRequestClient<Scripted> {
    let transport = Scripted { psp: psp(), script, delivered: Vec::new(), corrupt_response: false };
    GuestRequestClient::new(transport, Vmpck::new(VMPCK0, 0))
}

#[test]
fn busy_hosts_get_the_same_message_again() {
    let mut client = scripted(vec![Err(TransportError::Busy), Err(TransportError::Busy)]);
    client.report(&[3; 64], None).unwrap();
    let delivered = &client.transport().delivered;
    assert_eq!(delivered.len(), 3);
    assert!(delivered.iter().all(|page| page == &delivered[0]), "resent byte for byte");
}

#[test]
fn a_host_that_stays_busy_costs_the_key() {
    let busy = vec![Err(TransportError::Busy); crate::attest::client::MAX_BUSY_RETRIES + 1];
    let mut client = scripted(busy);
    assert_eq!(
        client.report(&[3; 64], None).unwrap_err(),
        RequestError::Transport(TransportError::Busy)
    );
    assert!(client.is_disabled());
    assert_eq!(client.report(&[3; 64], None).unwrap_err(), RequestError::KeyDisabled);
}

#[test]
fn a_failed_request_wipes_the_key_for_good() {
    let mut client = scripted(vec![Err(TransportError::Failed(0x1B))]);
    assert_eq!(
        client.report(&[4; 64], None).unwrap_err(),
        RequestError::Transport(TransportError::Failed(0x1B))
    );
    assert!(client.is_disabled());
    assert_eq!(client.report(&[4; 64], None).unwrap_err(), RequestError::KeyDisabled);
    assert_eq!(client.transport().delivered.len(), 1, "nothing sealed after the failure");
}

#[test]
fn a_response_that_does_not_authenticate_wipes_the_key() {
    let mut client = scripted(Vec::new());
    client.transport().corrupt_response = true;
    assert_eq!(
        client.report(&[5; 64], None).unwrap_err(),
        RequestError::Message(MessageError::BadTag)
    );
    assert!(client.is_disabled());
}

#[test]
fn the_psp_rejects_replays_tampering_and_wrong_keys() {
    let mut client = scripted(Vec::new());
    client.report(&[6; 64], None).unwrap();
    let first = client.transport().delivered[0];
    let mut psp = psp();
    let mut response = [0u8; GUEST_MSG_PAGE_SIZE];
    psp.request(&first, &mut response, None).unwrap();
    // A replay of an old message.
    assert_eq!(
        psp.request(&first, &mut response, None),
        Err(TransportError::Failed(failure::BAD_SEQUENCE))
    );
    // A flipped ciphertext bit in a message with the right number.
    let mut next = scripted(Vec::new());
    next.report(&[7; 64], None).unwrap();
    next.report(&[7; 64], None).unwrap();
    let mut third = next.transport().delivered[1];
    third[0x61] ^= 0x80;
    assert_eq!(
        psp.request(&third, &mut response, None),
        Err(TransportError::Failed(failure::AUTH_FAILED))
    );
    // Sealed with another key.
    let mut stranger = GuestRequestClient::new(
        Scripted {
            psp: psp_with_key([9; 32]),
            script: Vec::new(),
            delivered: Vec::new(),
            corrupt_response: false,
        },
        Vmpck::new([9; 32], 0),
    );
    stranger.report(&[8; 64], None).unwrap();
    let foreign = stranger.transport().delivered[0];
    assert_eq!(
        super::DevPsp::request(&mut self::psp(), &foreign, &mut response, None),
        Err(TransportError::Failed(failure::AUTH_FAILED))
    );
}

fn psp_with_key(key: [u8; 32]) -> DevPsp {
    let mut p = params();
    p.vmpck0 = key;
    DevPsp::new(&p, &[], [0; 32]).unwrap()
}

#[test]
fn invalid_report_requests_get_a_firmware_status_and_keep_the_key() {
    let psp = psp();
    let mut request =
        ReportRequest { report_data: [0; 64], vmpl: 0, key_sel: 2, reserved: [0; 24] };
    assert_eq!(psp.answer(request.as_bytes()).header.status, REPORT_STATUS_INVALID_KEY);
    request.key_sel = KEY_SEL_VCEK;
    assert_eq!(psp.answer(request.as_bytes()).header.status, REPORT_STATUS_SUCCESS);
    request.key_sel = 0;
    assert_eq!(psp.answer(request.as_bytes()).header.status, REPORT_STATUS_SUCCESS);
    request.vmpl = 4;
    assert_eq!(psp.answer(request.as_bytes()).header.status, REPORT_STATUS_INVALID_PARAM);
    request.vmpl = 3;
    request.reserved[3] = 1;
    assert_eq!(psp.answer(request.as_bytes()).header.status, REPORT_STATUS_INVALID_PARAM);
    assert_eq!(psp.answer(&[0; 10]).header.status, REPORT_STATUS_INVALID_PARAM);
    request.reserved[3] = 0;
    let answer = psp.answer(request.as_bytes());
    assert_eq!(answer.header.status, REPORT_STATUS_SUCCESS);
    assert_eq!(answer.report.vmpl, 3);
}

#[test]
fn bad_hand_overs_are_refused() {
    let mut p = params();
    p.vcek_private = [0; 48];
    assert_eq!(DevPsp::new(&p, &[], [0; 32]).err(), Some(DevPspError::BadVcekKey));
    let mut p = params();
    p.vmpck0 = [0; 32];
    assert_eq!(DevPsp::new(&p, &[], [0; 32]).err(), Some(DevPspError::NoVmpck));
}
