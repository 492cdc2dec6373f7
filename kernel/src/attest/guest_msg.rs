//! SNP guest messages: the AES-256-GCM sealing of a payload under a VMPCK,
//! exactly as the PSP expects it (header as AAD from `algo` on, the sequence
//! number as IV), for both ends: the SVSM's client seals requests and opens
//! responses; the development PSP opens requests and seals responses.
//!
//! What this module guarantees: a message that fails any check (header
//! fields, type, sequence number, tag) is never returned as plaintext.
//! Sequence-number policy (never reuse, wipe the key on failure) is the
//! client's job ([`super::client`]), because only it knows which numbers
//! were used.

use abi::attestation::{
    GUEST_MSG_ALGO_AES_256_GCM, GUEST_MSG_HEADER_SIZE, GUEST_MSG_HEADER_VERSION,
    GUEST_MSG_MAX_PAYLOAD, GUEST_MSG_PAGE_SIZE, GUEST_MSG_TAG_SIZE, GuestMessageHeader, VMPCK_SIZE,
    guest_msg_iv,
};
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zerocopy::{FromBytes, FromZeros, IntoBytes};
use zeroize::Zeroize;

/// One guest-message page (request or response).
pub type MessagePage = [u8; GUEST_MSG_PAGE_SIZE];

/// A VM platform communication key. Wiped when dropped.
pub struct Vmpck {
    key: [u8; VMPCK_SIZE],
    index: u8,
}

impl Vmpck {
    /// The key `key` of VMPCK slot `index` (0-3).
    pub fn new(key: [u8; VMPCK_SIZE], index: u8) -> Vmpck {
        Vmpck { key, index }
    }

    /// The VMPCK slot this key belongs to.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Whether the key is all zeros: wiped, or never provisioned (the PSP
    /// leaves a VMPCK of a VMPL the guest cannot use zero).
    pub fn is_empty(&self) -> bool {
        self.key.iter().all(|&b| b == 0)
    }

    /// Overwrites the key with zeros.
    pub fn wipe(&mut self) {
        self.key.zeroize();
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.key.into())
    }
}

impl Drop for Vmpck {
    fn drop(&mut self) {
        self.wipe();
    }
}

/// What a message carries besides its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageInfo {
    /// Sequence number (and IV).
    pub seqno: u64,
    /// `msg_type`.
    pub msg_type: u8,
    /// `msg_version`.
    pub msg_version: u8,
}

/// Why a message was not sealed or opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageError {
    /// The key is empty (wiped or never provisioned).
    NoKey,
    /// The payload does not fit in a page.
    PayloadTooLarge,
    /// A header field differs from what was expected (algo, versions,
    /// size, VMPCK, type, sequence number).
    BadHeader,
    /// Authentication failed: the message was altered or sealed with
    /// another key.
    BadTag,
}

/// Seals `payload` into `page` under `key`.
pub fn seal(
    key: &Vmpck,
    info: MessageInfo,
    payload: &[u8],
    page: &mut MessagePage,
) -> Result<(), MessageError> {
    if key.is_empty() {
        return Err(MessageError::NoKey);
    }
    if payload.len() > GUEST_MSG_MAX_PAYLOAD {
        return Err(MessageError::PayloadTooLarge);
    }
    let mut header = GuestMessageHeader::new_zeroed();
    header.msg_seqno = info.seqno;
    header.algo = GUEST_MSG_ALGO_AES_256_GCM;
    header.hdr_version = GUEST_MSG_HEADER_VERSION;
    header.hdr_size = GUEST_MSG_HEADER_SIZE as u16;
    header.msg_type = info.msg_type;
    header.msg_version = info.msg_version;
    header.msg_size = payload.len() as u16;
    header.msg_vmpck = key.index;
    page.fill(0);
    let body = &mut page[GUEST_MSG_HEADER_SIZE..GUEST_MSG_HEADER_SIZE + payload.len()];
    body.copy_from_slice(payload);
    let tag = key
        .cipher()
        .encrypt_inout_detached(&Nonce::from(guest_msg_iv(info.seqno)), header.aad(), body.into())
        .map_err(|_| MessageError::PayloadTooLarge)?;
    header.authtag[..GUEST_MSG_TAG_SIZE].copy_from_slice(tag.as_slice());
    page[..GUEST_MSG_HEADER_SIZE].copy_from_slice(header.as_bytes());
    Ok(())
}

/// Opens the message in `page` (which is modified: the payload is
/// decrypted in place) after checking its header against `expected` and
/// `key`; returns the plaintext payload.
pub fn open<'a>(
    key: &Vmpck,
    expected: MessageInfo,
    page: &'a mut MessagePage,
) -> Result<&'a [u8], MessageError> {
    if key.is_empty() {
        return Err(MessageError::NoKey);
    }
    let header = GuestMessageHeader::read_from_bytes(&page[..GUEST_MSG_HEADER_SIZE])
        .expect("slice has the header's size");
    let size = usize::from(header.msg_size);
    if header.algo != GUEST_MSG_ALGO_AES_256_GCM
        || header.hdr_version != GUEST_MSG_HEADER_VERSION
        || usize::from(header.hdr_size) != GUEST_MSG_HEADER_SIZE
        || header.msg_vmpck != key.index
        || header.msg_type != expected.msg_type
        || header.msg_version != expected.msg_version
        || header.msg_seqno != expected.seqno
        || size > GUEST_MSG_MAX_PAYLOAD
        || header.authtag[GUEST_MSG_TAG_SIZE..].iter().any(|&b| b != 0)
    {
        return Err(MessageError::BadHeader);
    }
    let tag = Tag::try_from(&header.authtag[..GUEST_MSG_TAG_SIZE]).expect("tag has 16 bytes");
    let body = &mut page[GUEST_MSG_HEADER_SIZE..GUEST_MSG_HEADER_SIZE + size];
    key.cipher()
        .decrypt_inout_detached(
            &Nonce::from(guest_msg_iv(header.msg_seqno)),
            header.aad(),
            body.into(),
            &tag,
        )
        .map_err(|_| MessageError::BadTag)?;
    Ok(body)
}

/// The header of a sealed message, unchecked (for the development PSP,
/// which learns the type and sequence number from the request).
pub fn peek_header(page: &MessagePage) -> GuestMessageHeader {
    GuestMessageHeader::read_from_bytes(&page[..GUEST_MSG_HEADER_SIZE])
        .expect("slice has the header's size")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [0x42; 32];

    fn info(seqno: u64) -> MessageInfo {
        MessageInfo { seqno, msg_type: 5, msg_version: 1 }
    }

    #[test]
    fn seal_then_open_round_trips() {
        let key = Vmpck::new(KEY, 0);
        let mut page = [0u8; GUEST_MSG_PAGE_SIZE];
        seal(&key, info(7), b"attest me", &mut page).unwrap();
        assert_ne!(&page[0x60..0x69], b"attest me", "the payload is encrypted");
        assert_eq!(page[0x20], 7, "sequence number in the header");
        assert_eq!(&page[0x30..0x37], &[1, 1, 0x60, 0, 5, 1, 9]);
        assert_eq!(open(&key, info(7), &mut page).unwrap(), b"attest me");
    }

    /// A known answer computed independently (Python `cryptography`,
    /// AESGCM(key=0x42*32).encrypt(nonce=07 00.., data=b"attest me",
    /// aad=header[0x30:0x60])); pins the IV and AAD conventions.
    #[test]
    fn sealing_matches_an_independent_aes_gcm() {
        let key = Vmpck::new(KEY, 0);
        let mut page = [0u8; GUEST_MSG_PAGE_SIZE];
        seal(&key, info(7), b"attest me", &mut page).unwrap();
        let expected_ciphertext = [0x5b, 0x54, 0xb6, 0x13, 0x87, 0xa3, 0xbe, 0x26, 0xe0];
        let expected_tag = [
            0xf4, 0xa0, 0x8e, 0x1a, 0xc3, 0x4f, 0x2a, 0x5b, 0x1d, 0x9a, 0x53, 0xa9, 0x23, 0x79,
            0x4b, 0x18,
        ];
        assert_eq!(&page[0x60..0x69], &expected_ciphertext);
        assert_eq!(&page[..16], &expected_tag);
    }

    #[test]
    fn every_tampered_byte_is_detected() {
        let key = Vmpck::new(KEY, 0);
        let mut sealed = [0u8; GUEST_MSG_PAGE_SIZE];
        seal(&key, info(9), b"0123456789", &mut sealed).unwrap();
        for at in (0..0x60 + 10).filter(|&at| !(0x28..0x30).contains(&at)) {
            let mut page = sealed;
            page[at] ^= 0x01;
            assert!(open(&key, info(9), &mut page).is_err(), "flip at {at:#x} went unnoticed");
        }
    }

    #[test]
    fn wrong_key_type_or_sequence_number_is_rejected() {
        let key = Vmpck::new(KEY, 0);
        let mut sealed = [0u8; GUEST_MSG_PAGE_SIZE];
        seal(&key, info(3), b"x", &mut sealed).unwrap();
        let mut page = sealed;
        assert_eq!(open(&Vmpck::new([1; 32], 0), info(3), &mut page), Err(MessageError::BadTag));
        let mut page = sealed;
        assert_eq!(open(&key, info(5), &mut page), Err(MessageError::BadHeader));
        let mut page = sealed;
        let other_type = MessageInfo { msg_type: 6, ..info(3) };
        assert_eq!(open(&key, other_type, &mut page), Err(MessageError::BadHeader));
        let mut page = sealed;
        assert_eq!(open(&Vmpck::new(KEY, 1), info(3), &mut page), Err(MessageError::BadHeader));
    }

    #[test]
    fn hostile_sizes_and_empty_keys_are_refused() {
        let key = Vmpck::new(KEY, 0);
        let mut page = [0u8; GUEST_MSG_PAGE_SIZE];
        assert_eq!(
            seal(&key, info(1), &[0; GUEST_MSG_MAX_PAYLOAD + 1], &mut page),
            Err(MessageError::PayloadTooLarge)
        );
        seal(&key, info(1), b"abc", &mut page).unwrap();
        page[0x36..0x38].copy_from_slice(&0xFFFFu16.to_le_bytes());
        assert_eq!(open(&key, info(1), &mut page), Err(MessageError::BadHeader));
        let mut wiped = Vmpck::new(KEY, 0);
        wiped.wipe();
        assert!(wiped.is_empty());
        assert_eq!(seal(&wiped, info(1), b"abc", &mut page), Err(MessageError::NoKey));
    }
}
