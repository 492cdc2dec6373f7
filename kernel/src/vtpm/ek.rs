//! The endorsement key: created at manufacture from the TCG default EK
//! template L-1 (RSA 2048; TCG EK Credential Profile for TPM Family 2.0,
//! rev 2.5, §B.3.3), as every EK-aware client (tpm2_createek, Keylime,
//! COCONUT's manifest) recreates it. Its public area, a marshalled
//! TPMT_PUBLIC, is the vTPM's entry in the attestation services manifest
//! (SVSM spec §8.3).
//!
//! The key is derived from the endorsement seed, so creating it again with
//! the same template gives the same key: the vTPM creates it once at boot
//! to publish its public area and flushes it.

use alloc::vec::Vec;

/// TPM_ALG_* and other numbers used here (TPM 2.0 Part 2).
const TPM_ALG_RSA: u16 = 0x0001;
const TPM_ALG_SHA256: u16 = 0x000B;
const TPM_ALG_AES: u16 = 0x0006;
const TPM_ALG_CFB: u16 = 0x0043;
const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ST_NO_SESSIONS: u16 = 0x8001;
const TPM_ST_SESSIONS: u16 = 0x8002;
const TPM_CC_CREATE_PRIMARY: u32 = 0x0000_0131;
const TPM_CC_FLUSH_CONTEXT: u32 = 0x0000_0165;
const TPM_RH_ENDORSEMENT: u32 = 0x4000_000B;
const TPM_RS_PW: u32 = 0x4000_0009;

/// objectAttributes of template L-1: fixedTPM, fixedParent,
/// sensitiveDataOrigin, adminWithPolicy, restricted, decrypt.
pub const EK_ATTRIBUTES: u32 = 0x0003_00B2;

/// authPolicy of the low-range EK templates: PolicySecret(TPM_RH_ENDORSEMENT).
pub const EK_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
    0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
];

/// Size of the marshalled template (the profile's 314 bytes).
pub const EK_TEMPLATE_SIZE: usize = 314;

/// The RSA-2048 EK template L-1 as a marshalled TPMT_PUBLIC: the
/// unique field is 256 zero bytes.
pub fn template() -> Vec<u8> {
    let mut t = Vec::with_capacity(EK_TEMPLATE_SIZE);
    t.extend_from_slice(&TPM_ALG_RSA.to_be_bytes());
    t.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    t.extend_from_slice(&EK_ATTRIBUTES.to_be_bytes());
    t.extend_from_slice(&(EK_POLICY.len() as u16).to_be_bytes());
    t.extend_from_slice(&EK_POLICY);
    // TPMS_RSA_PARMS: symmetric AES-128-CFB, scheme NULL, 2048 bits,
    // default exponent.
    t.extend_from_slice(&TPM_ALG_AES.to_be_bytes());
    t.extend_from_slice(&128u16.to_be_bytes());
    t.extend_from_slice(&TPM_ALG_CFB.to_be_bytes());
    t.extend_from_slice(&TPM_ALG_NULL.to_be_bytes());
    t.extend_from_slice(&2048u16.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&256u16.to_be_bytes());
    t.resize(t.len() + 256, 0);
    t
}

/// TPM2_CreatePrimary(TPM_RH_ENDORSEMENT, template L-1) with an empty
/// password session (the endorsement hierarchy's auth is empty at boot).
pub fn create_primary_command() -> Vec<u8> {
    let template = template();
    let mut body = Vec::new();
    body.extend_from_slice(&TPM_RH_ENDORSEMENT.to_be_bytes());
    // Authorization area: one password session, empty nonce and password.
    body.extend_from_slice(&9u32.to_be_bytes());
    body.extend_from_slice(&TPM_RS_PW.to_be_bytes());
    body.extend_from_slice(&[0, 0, 0, 0, 0]);
    // inSensitive: TPM2B_SENSITIVE_CREATE with empty userAuth and data.
    body.extend_from_slice(&[0, 4, 0, 0, 0, 0]);
    body.extend_from_slice(&(template.len() as u16).to_be_bytes());
    body.extend_from_slice(&template);
    // outsideInfo (empty), creationPCR (no selection).
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    command(TPM_ST_SESSIONS, TPM_CC_CREATE_PRIMARY, &body)
}

/// TPM2_FlushContext(`handle`).
pub fn flush_context_command(handle: u32) -> Vec<u8> {
    command(TPM_ST_NO_SESSIONS, TPM_CC_FLUSH_CONTEXT, &handle.to_be_bytes())
}

fn command(tag: u16, code: u32, body: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(10 + body.len());
    c.extend_from_slice(&tag.to_be_bytes());
    c.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
    c.extend_from_slice(&code.to_be_bytes());
    c.extend_from_slice(body);
    c
}

/// What a CreatePrimary response gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedPrimary {
    /// The transient handle (to flush).
    pub handle: u32,
    /// The public area as a TPMT_PUBLIC (the TPM2B_PUBLIC minus its size).
    pub public: Vec<u8>,
}

/// Why the EK could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EkError {
    /// The TPM answered with this response code.
    Tpm(u32),
    /// The response does not parse.
    Malformed,
}

/// Reads a CreatePrimary response: handle, then (sessions tag) the
/// parameter size, then outPublic.
pub fn parse_create_primary(response: &[u8]) -> Result<CreatedPrimary, EkError> {
    let u16_at = |at: usize| -> Result<u16, EkError> {
        let bytes = response.get(at..at + 2).ok_or(EkError::Malformed)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    };
    let u32_at = |at: usize| -> Result<u32, EkError> {
        let bytes = response.get(at..at + 4).ok_or(EkError::Malformed)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    };
    let rc = u32_at(6)?;
    if rc != 0 {
        return Err(EkError::Tpm(rc));
    }
    if u32_at(2)? as usize != response.len() || u16_at(0)? != TPM_ST_SESSIONS {
        return Err(EkError::Malformed);
    }
    let handle = u32_at(10)?;
    // 14: parameterSize, 18: outPublic.size, 20: TPMT_PUBLIC.
    let public_size = usize::from(u16_at(18)?);
    let public = response.get(20..20 + public_size).ok_or(EkError::Malformed)?.to_vec();
    Ok(CreatedPrimary { handle, public })
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    #[test]
    fn template_has_the_profiles_size_and_fields() {
        let t = template();
        assert_eq!(t.len(), EK_TEMPLATE_SIZE);
        // type RSA, nameAlg SHA-256, attributes 0x000300B2, 32-byte policy.
        assert_eq!(&t[..10], &[0x00, 0x01, 0x00, 0x0B, 0x00, 0x03, 0x00, 0xB2, 0x00, 0x20]);
        // AES 128 CFB, NULL scheme, 2048 bits, exponent 0, unique size 256.
        assert_eq!(
            &t[42..58],
            &[0x00, 0x06, 0x00, 0x80, 0x00, 0x43, 0x00, 0x10, 0x08, 0x00, 0, 0, 0, 0, 0x01, 0x00]
        );
        assert!(t[58..].iter().all(|&b| b == 0));
    }

    #[test]
    fn policy_is_policy_secret_of_the_endorsement_hierarchy() {
        // PolicySecret: PolicyUpdate(TPM_CC_PolicySecret, name(TPM_RH_ENDORSEMENT), policyRef = empty):
        // digest = H(H(0^32 || cc || name) || policyRef).
        let first = Sha256::new()
            .chain_update([0u8; 32])
            .chain_update(0x0000_0151u32.to_be_bytes())
            .chain_update(TPM_RH_ENDORSEMENT.to_be_bytes())
            .finalize();
        let digest = Sha256::digest(first);
        assert_eq!(digest.as_slice(), &EK_POLICY);
    }

    #[test]
    fn create_primary_command_is_well_formed() {
        let c = create_primary_command();
        assert_eq!(u32::from_be_bytes(c[2..6].try_into().unwrap()) as usize, c.len());
        assert_eq!(&c[0..2], &[0x80, 0x02]);
        assert_eq!(&c[6..14], &[0x00, 0x00, 0x01, 0x31, 0x40, 0x00, 0x00, 0x0B]);
        // header 10 + handle 4 + auth 13 + sensitive 6 + public 2 + 314 + 6.
        assert_eq!(c.len(), 10 + 4 + 13 + 6 + 2 + EK_TEMPLATE_SIZE + 6);
    }

    #[test]
    fn parse_rejects_errors_and_truncation() {
        let error = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x09, 0x02];
        assert_eq!(parse_create_primary(&error), Err(EkError::Tpm(0x902)));
        let truncated =
            [0x80, 0x02, 0, 0, 0, 22, 0, 0, 0, 0, 0x80, 0xff, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
        assert_eq!(parse_create_primary(&truncated), Err(EkError::Malformed));
        assert_eq!(parse_create_primary(&[]), Err(EkError::Malformed));
    }
}
