//! The endorsement key's command for the attestation test:
//! TPM2_CreatePrimary of the EK from the TCG default EK template L-1 (RSA 2048; TCG EK Credential Profile for TPM Family 2.0,
//! rev 2.5, §B.3.3), the key whose public area the SVSM lists as the vTPM's
//! entry in the services manifest. Plain big-endian bytes (TPM 2.0 Part 2
//! and 3), built at compile time from the profile's fields; the xtask's
//! tests compare them with the kernel's own EK code. The other TPM commands
//! (Startup, FlushContext) are in [`crate::vtpm_commands`].

/// TPM_ST_SESSIONS.
const TPM_ST_SESSIONS: u16 = 0x8002;
/// TPM_CC_CreatePrimary.
const TPM_CC_CREATE_PRIMARY: u32 = 0x0000_0131;
/// TPM_RH_ENDORSEMENT.
const TPM_RH_ENDORSEMENT: u32 = 0x4000_000B;
/// TPM_RS_PW: the password session.
const TPM_RS_PW: u32 = 0x4000_0009;

/// Size of the marshalled template L-1 (a TPMT_PUBLIC with a 256-byte
/// zero `unique`); the EK's public area has the same size.
pub const EK_TEMPLATE_SIZE: usize = 314;

/// Template L-1 as a marshalled TPMT_PUBLIC.
pub const EK_TEMPLATE: [u8; EK_TEMPLATE_SIZE] = {
    let mut t = [0u8; EK_TEMPLATE_SIZE];
    let fields: [u8; 58] = [
        0x00, 0x01, // type: TPM_ALG_RSA
        0x00, 0x0B, // nameAlg: SHA-256
        // objectAttributes: fixedTPM, fixedParent, sensitiveDataOrigin,
        // adminWithPolicy, restricted, decrypt.
        0x00, 0x03, 0x00, 0xB2, //
        0x00, 0x20, // authPolicy: PolicySecret(TPM_RH_ENDORSEMENT)
        0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7,
        0x24, 0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14,
        0x69, 0xAA, //
        0x00, 0x06, 0x00, 0x80, 0x00, 0x43, // symmetric: AES-128-CFB
        0x00, 0x10, // scheme: TPM_ALG_NULL
        0x08, 0x00, // keyBits: 2048
        0x00, 0x00, 0x00, 0x00, // exponent: the default
        0x01, 0x00, // unique: 256 bytes, zero
    ];
    copy(&mut t, 0, &fields);
    t
};

/// Size of [`CREATE_EK`]: header, handle, password session, inSensitive,
/// inPublic, outsideInfo, creationPCR.
pub const CREATE_EK_SIZE: usize = 10 + 4 + 13 + 6 + 2 + EK_TEMPLATE_SIZE + 2 + 4;

/// TPM2_CreatePrimary(TPM_RH_ENDORSEMENT, template L-1) with an empty
/// password (the endorsement hierarchy's authorization after Startup).
pub const CREATE_EK: [u8; CREATE_EK_SIZE] = {
    let mut c = [0u8; CREATE_EK_SIZE];
    header(&mut c, TPM_ST_SESSIONS, TPM_CC_CREATE_PRIMARY);
    copy(&mut c, 10, &TPM_RH_ENDORSEMENT.to_be_bytes());
    // Authorization area: 9 bytes, one password session with an empty
    // nonce, no attributes, an empty password.
    copy(&mut c, 14, &9u32.to_be_bytes());
    copy(&mut c, 18, &TPM_RS_PW.to_be_bytes());
    // inSensitive: TPM2B_SENSITIVE_CREATE of 4 bytes, empty userAuth and data.
    copy(&mut c, 27, &[0, 4, 0, 0, 0, 0]);
    copy(&mut c, 33, &(EK_TEMPLATE_SIZE as u16).to_be_bytes());
    copy(&mut c, 35, &EK_TEMPLATE);
    // outsideInfo (empty) and creationPCR (count 0) stay zero.
    c
};

/// Writes the 10-byte command header (tag, size = the whole array, code).
const fn header(command: &mut [u8], tag: u16, code: u32) {
    copy(command, 0, &tag.to_be_bytes());
    copy(command, 2, &(command.len() as u32).to_be_bytes());
    copy(command, 6, &code.to_be_bytes());
}

const fn copy(out: &mut [u8], at: usize, bytes: &[u8]) {
    let mut i = 0;
    while i < bytes.len() {
        out[at + i] = bytes[i];
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_ek_carries_its_size_code_session_and_template() {
        assert_eq!(&CREATE_EK[..6], &[0x80, 0x02, 0, 0, 0x01, 0x63]);
        assert_eq!(CREATE_EK_SIZE, 0x163);
        assert_eq!(&CREATE_EK[6..14], &[0, 0, 0x01, 0x31, 0x40, 0, 0, 0x0B]);
        assert_eq!(
            &CREATE_EK[14..35],
            &[0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0x01, 0x3A]
        );
        assert_eq!(&CREATE_EK[35..35 + EK_TEMPLATE_SIZE], &EK_TEMPLATE);
        assert_eq!(&CREATE_EK[35 + EK_TEMPLATE_SIZE..], &[0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn template_ends_with_a_zero_unique_field() {
        assert_eq!(&EK_TEMPLATE[56..58], &[0x01, 0x00]);
        assert!(EK_TEMPLATE[58..].iter().all(|&b| b == 0));
    }
}
