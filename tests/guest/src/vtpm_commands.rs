//! The TPM commands the test guest sends through the SVSM's vTPM protocol,
//! and the reading of their responses: plain byte strings (TPM 2.0 Part 3,
//! big-endian), host-tested against the real engine so the guest's
//! expectations are the TPM's.

/// How many cases the guest's vTPM protocol cases record.
pub const VTPM_CASES: u32 = 20;

/// TPM2_Startup(TPM_SU_CLEAR).
pub const STARTUP: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0];
/// TPM2_GetRandom(32).
pub const GET_RANDOM_32: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7B, 0, 32];
/// TPM2_PCR_Read(SHA-256, PCR 16).
pub const PCR_READ_16: [u8; 20] =
    [0x80, 0x01, 0, 0, 0, 20, 0, 0, 0x01, 0x7E, 0, 0, 0, 1, 0, 0x0B, 3, 0, 0, 1];
/// What the guest extends PCR 16 with (SHA-256 bank).
pub const EXTEND_DIGEST: [u8; 32] = [0xAB; 32];
/// PCR 16 after that one extend: SHA-256(0^32 || EXTEND_DIGEST).
pub const PCR_16_EXTENDED: [u8; 32] = [
    0xde, 0xbb, 0x3e, 0x7a, 0xcf, 0xff, 0x6d, 0xd1, 0x8d, 0x50, 0x10, 0x42, 0x27, 0x36, 0x29, 0xf0,
    0xb7, 0x9c, 0xb2, 0x06, 0xbb, 0x8c, 0x24, 0xf5, 0x9f, 0x62, 0xdd, 0xb8, 0x08, 0x49, 0x40, 0x3b,
];
/// The PCR digest a quote of PCR 16 carries then: SHA-256(PCR_16_EXTENDED).
pub const QUOTE_PCR_DIGEST: [u8; 32] = [
    0x2a, 0x93, 0xb8, 0x8e, 0xf3, 0x8a, 0x94, 0x1a, 0xdc, 0xe4, 0xa0, 0x49, 0x0d, 0x6a, 0xa8, 0x38,
    0x80, 0xd2, 0x00, 0x02, 0x68, 0x16, 0x9f, 0xfa, 0xd9, 0xd9, 0x1d, 0x92, 0xd9, 0xb8, 0xc7, 0x95,
];
/// The qualifying data the quote must echo.
pub const QUOTE_NONCE: &[u8; 10] = b"svsm-quote";

/// TPM2_PCR_Extend(16, SHA-256 [`EXTEND_DIGEST`]) with an empty password.
pub const PCR_EXTEND_16: [u8; 65] = {
    let mut c = [0u8; 65];
    let head = [
        0x80, 0x02, 0, 0, 0, 65, 0, 0, 0x01, 0x82, // header
        0, 0, 0, 16, // PCR 16
        0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0, // password session
        0, 0, 0, 1, 0x00, 0x0B, // one SHA-256 digest
    ];
    let mut i = 0;
    while i < head.len() {
        c[i] = head[i];
        i += 1;
    }
    while i < 65 {
        c[i] = 0xAB;
        i += 1;
    }
    c
};

/// TPM2_CreatePrimary(TPM_RH_OWNER) of an ECC P-256 restricted signing key
/// (ECDSA with SHA-256), empty password.
pub const CREATE_SIGNING_KEY: [u8; 65] = [
    0x80, 0x02, 0, 0, 0, 65, 0, 0, 0x01, 0x31, // header
    0x40, 0, 0, 0x01, // TPM_RH_OWNER
    0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0, // password session
    0, 4, 0, 0, 0, 0, // inSensitive: empty auth and data
    0, 24, // inPublic: TPMT_PUBLIC of 24 bytes
    0x00, 0x23, 0x00, 0x0B, // ECC, nameAlg SHA-256
    0x00, 0x05, 0x00,
    0x72, // fixedTPM fixedParent sensitiveDataOrigin userWithAuth restricted sign
    0, 0, // no policy
    0x00, 0x10, 0x00, 0x18, 0x00, 0x0B, 0x00, 0x03, 0x00,
    0x10, // NULL sym, ECDSA SHA-256, P-256, NULL kdf
    0, 0, 0, 0, // unique: empty point
    0, 0, // outsideInfo
    0, 0, 0, 0, // creationPCR: none
];

/// TPM2_Quote(`key`, [`QUOTE_NONCE`], the key's scheme, SHA-256 PCR 16).
pub fn quote(key: u32) -> [u8; 51] {
    let k = key.to_be_bytes();
    [
        0x80, 0x02, 0, 0, 0, 51, 0, 0, 0x01, 0x58, // header
        k[0], k[1], k[2], k[3], // signHandle
        0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0, // password session
        0, 10, b's', b'v', b's', b'm', b'-', b'q', b'u', b'o', b't', b'e', // qualifyingData
        0x00, 0x10, // inScheme: NULL (the key's)
        0, 0, 0, 1, 0x00, 0x0B, 3, 0, 0, 1, // PCR 16, SHA-256
    ]
}

/// TPM2_FlushContext(`handle`).
pub fn flush_context(handle: u32) -> [u8; 14] {
    let h = handle.to_be_bytes();
    [0x80, 0x01, 0, 0, 0, 14, 0, 0, 0x01, 0x65, h[0], h[1], h[2], h[3]]
}

/// The response code of a TPM response.
pub fn response_code(response: &[u8]) -> Option<u32> {
    let b = response.get(6..10)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// A big-endian reader over a response.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn tpm2b(&mut self) -> Option<&'a [u8]> {
        let size = usize::from(self.u16()?);
        self.take(size)
    }
}

/// What a quote attests.
#[derive(Debug, PartialEq, Eq)]
pub struct QuoteInfo<'a> {
    /// The signed TPMS_ATTEST bytes.
    pub attest: &'a [u8],
    /// TPMS_ATTEST.magic (TPM_GENERATED_VALUE, 0xFF544347).
    pub magic: u32,
    /// TPMS_ATTEST.type (TPM_ST_ATTEST_QUOTE, 0x8018).
    pub kind: u16,
    /// The qualifying data echoed.
    pub extra_data: &'a [u8],
    /// The digest of the selected PCRs.
    pub pcr_digest: &'a [u8],
    /// The ECDSA signature (r, s), if the quote carries one.
    pub ecdsa: Option<(&'a [u8], &'a [u8])>,
}

const TPM_ALG_ECC: u16 = 0x0023;
const TPM_ALG_ECDSA: u16 = 0x0018;
const TPM_ALG_NULL: u16 = 0x0010;

/// Reads a TPM2_Quote response (sessions tag: parameter size first).
pub fn parse_quote(response: &[u8]) -> Option<QuoteInfo<'_>> {
    let mut r = Reader { bytes: response, at: 10 };
    let _parameter_size = r.u32()?;
    let attest = r.tpm2b()?;
    let ecdsa = match r.u16()? {
        TPM_ALG_ECDSA => {
            let _hash = r.u16()?;
            Some((r.tpm2b()?, r.tpm2b()?))
        }
        _ => None,
    };
    let mut a = Reader { bytes: attest, at: 0 };
    let magic = a.u32()?;
    let kind = a.u16()?;
    let _signer = a.tpm2b()?;
    let extra_data = a.tpm2b()?;
    a.take(17 + 8)?; // clockInfo, firmwareVersion
    let selections = a.u32()?;
    for _ in 0..selections {
        a.u16()?;
        let size = usize::from(a.take(1)?[0]);
        a.take(size)?;
    }
    let pcr_digest = a.tpm2b()?;
    Some(QuoteInfo { attest, magic, kind, extra_data, pcr_digest, ecdsa })
}

/// The public point (x, y) of the ECDSA key a TPM2_CreatePrimary response
/// returns (TPMT_PUBLIC with a NULL symmetric and NULL KDF, as
/// [`CREATE_SIGNING_KEY`] asks).
pub fn created_ecc_point(response: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut r = Reader { bytes: response, at: 14 };
    let _parameter_size = r.u32()?;
    let mut public = Reader { bytes: r.tpm2b()?, at: 0 };
    let expect = |value: Option<u16>, wanted: u16| (value? == wanted).then_some(());
    expect(public.u16(), TPM_ALG_ECC)?;
    public.take(2 + 4)?; // nameAlg, objectAttributes
    public.tpm2b()?; // authPolicy
    expect(public.u16(), TPM_ALG_NULL)?; // symmetric
    expect(public.u16(), TPM_ALG_ECDSA)?;
    public.take(2 + 2)?; // the scheme's hash, curveID
    expect(public.u16(), TPM_ALG_NULL)?; // kdf
    Some((public.tpm2b()?, public.tpm2b()?))
}

/// Whether (r, s) is a valid ECDSA P-256 / SHA-256 signature of `message`
/// by the key at (x, y) (coordinates and scalars big-endian, at most 32
/// bytes each).
pub fn ecdsa_p256_valid(point: (&[u8], &[u8]), message: &[u8], signature: (&[u8], &[u8])) -> bool {
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::{Signature, VerifyingKey};
    let (Some(x), Some(y), Some(r), Some(s)) =
        (field(point.0), field(point.1), field(signature.0), field(signature.1))
    else {
        return false;
    };
    let mut sec1 = [0x04; 65];
    sec1[1..33].copy_from_slice(&x);
    sec1[33..].copy_from_slice(&y);
    let mut scalars = [0u8; 64];
    scalars[..32].copy_from_slice(&r);
    scalars[32..].copy_from_slice(&s);
    let (Ok(key), Ok(signature)) =
        (VerifyingKey::from_sec1_bytes(&sec1), Signature::from_slice(&scalars))
    else {
        return false;
    };
    key.verify(message, &signature).is_ok()
}

/// A big-endian value of at most 32 bytes as a 32-byte field element.
fn field(value: &[u8]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    out.get_mut(32usize.checked_sub(value.len())?..)?.copy_from_slice(value);
    Some(out)
}

/// The handle a CreatePrimary response returns.
pub fn created_handle(response: &[u8]) -> Option<u32> {
    let b = response.get(10..14)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};
    use vtpm::{ClientId, OsEntropy, Tpm};

    use super::*;

    fn tpm() -> Tpm {
        let mut tpm = Tpm::manufacture(Box::new(OsEntropy)).unwrap();
        tpm.power_on();
        tpm
    }

    fn run(tpm: &mut Tpm, command: &[u8]) -> Vec<u8> {
        assert_eq!(u32::from_be_bytes(command[2..6].try_into().unwrap()) as usize, command.len());
        tpm.execute(ClientId(0), 0, command)
    }

    #[test]
    fn constants_are_the_hashes_they_claim() {
        let pcr: [u8; 32] =
            Sha256::new().chain_update([0u8; 32]).chain_update(EXTEND_DIGEST).finalize().into();
        assert_eq!(pcr, PCR_16_EXTENDED);
        assert_eq!(<[u8; 32]>::from(Sha256::digest(pcr)), QUOTE_PCR_DIGEST);
    }

    #[test]
    fn the_engine_answers_the_guests_commands_as_the_guest_expects() {
        let mut tpm = tpm();
        assert_eq!(response_code(&run(&mut tpm, &STARTUP)), Some(0));
        assert_eq!(response_code(&run(&mut tpm, &STARTUP)), Some(0x100));
        assert_eq!(response_code(&run(&mut tpm, &PCR_EXTEND_16)), Some(0));
        assert!(run(&mut tpm, &PCR_READ_16).ends_with(&PCR_16_EXTENDED));
        let random = run(&mut tpm, &GET_RANDOM_32);
        assert_eq!((response_code(&random), random.len()), (Some(0), 10 + 2 + 32));
        let created = run(&mut tpm, &CREATE_SIGNING_KEY);
        assert_eq!(response_code(&created), Some(0));
        let key = created_handle(&created).unwrap();
        let quoted = run(&mut tpm, &quote(key));
        assert_eq!(response_code(&quoted), Some(0));
        let info = parse_quote(&quoted).unwrap();
        assert_eq!(info.magic, 0xFF54_4347);
        assert_eq!(info.kind, 0x8018);
        assert_eq!(info.extra_data, QUOTE_NONCE);
        assert_eq!(info.pcr_digest, QUOTE_PCR_DIGEST);
        let point = created_ecc_point(&created).unwrap();
        let signature = info.ecdsa.unwrap();
        assert!(ecdsa_p256_valid(point, info.attest, signature));
        // The check can fail: another message, a changed s, another key.
        let mut altered = info.attest.to_vec();
        altered[20] ^= 1;
        assert!(!ecdsa_p256_valid(point, &altered, signature));
        let mut s = signature.1.to_vec();
        s[31] ^= 1;
        assert!(!ecdsa_p256_valid(point, info.attest, (signature.0, &s)));
        // The same template under the endorsement hierarchy: another key.
        let mut endorsement_key = CREATE_SIGNING_KEY;
        endorsement_key[13] = 0x0B;
        let other = run(&mut tpm, &endorsement_key);
        let other_point = created_ecc_point(&other).unwrap();
        assert!(!ecdsa_p256_valid(other_point, info.attest, signature));
        assert_eq!(response_code(&run(&mut tpm, &flush_context(key))), Some(0));
    }
}
