//! TPM 2.0 structures (Part 2) used by commands: parsing with the response code each type
//! prescribes for bad values, and canonical marshalling.

use alloc::vec::Vec;

use crate::constants::*;
use crate::crypto::ecc::{Curve, Point};
use crate::crypto::hash::{HashAlg, MAX_DIGEST_SIZE};
use crate::crypto::sym::aes_key_bits_supported;
use crate::marshal::{Reader, Writer};
use crate::rc::*;

/// Largest TPM2B_PUBLIC_KEY_RSA (4096-bit modulus).
pub const MAX_RSA_KEY_BYTES: usize = 512;
/// Largest TPM2B_ECC_PARAMETER (P-384; P-521 would need 66).
pub const MAX_ECC_KEY_BYTES: usize = 48;
/// MAX_SYM_DATA: largest sealed data / TPM2B_SENSITIVE_DATA.
pub const MAX_SYM_DATA: usize = 128;
/// Largest symmetric key.
pub const MAX_SYM_KEY_BYTES: usize = 32;
/// Largest TPM2B_MAX_BUFFER.
pub const MAX_BUFFER: usize = 1024;
/// Largest NV read/write per command.
pub const MAX_NV_BUFFER: usize = 1024;
/// PCR selection octets.
pub const PCR_SELECT_SIZE: usize = 3;
/// Number of PCRs.
pub const PCR_COUNT: usize = 24;

/// TPMI_ALG_HASH: an implemented hash; TPM_ALG_NULL only where `allow_null`.
pub fn parse_hash(r: &mut Reader, allow_null: bool) -> TpmResult<Option<HashAlg>> {
    let alg = r.u16()?;
    if alg == TPM_ALG_NULL && allow_null {
        return Ok(None);
    }
    HashAlg::from_alg(alg).map(Some).ok_or(TPM_RC_HASH)
}

/// TPMI_ALG_HASH without NULL.
pub fn parse_hash_required(r: &mut Reader) -> TpmResult<HashAlg> {
    parse_hash(r, false)?.ok_or(TPM_RC_HASH)
}

pub fn hash_alg_id(h: Option<HashAlg>) -> u16 {
    h.map_or(TPM_ALG_NULL, HashAlg::alg)
}

/// TPMT_SYM_DEF / TPMT_SYM_DEF_OBJECT.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SymDef {
    Null,
    /// AES with key bits, CFB mode (the only mode implemented).
    Aes(u16),
    /// AES with key bits and mode TPM_ALG_NULL: a symmetric cipher key whose mode is chosen
    /// per TPM2_EncryptDecrypt call.
    AesAnyMode(u16),
    /// XOR obfuscation with a hash (sessions only).
    Xor(HashAlg),
}

impl SymDef {
    /// AES key size in octets, if this is an AES definition.
    pub fn aes_key_bytes(&self) -> Option<usize> {
        match self {
            SymDef::Aes(bits) | SymDef::AesAnyMode(bits) => Some(usize::from(bits / 8)),
            _ => None,
        }
    }

    /// TPMT_SYM_DEF_OBJECT (`object`) or TPMT_SYM_DEF (sessions, XOR allowed).
    pub fn parse(r: &mut Reader, object: bool, allow_null: bool) -> TpmResult<SymDef> {
        let alg = r.u16()?;
        match alg {
            TPM_ALG_NULL if allow_null => Ok(SymDef::Null),
            TPM_ALG_AES => {
                let bits = r.u16()?;
                // TPMI_AES_KEY_BITS: #TPM_RC_VALUE (Part 2).
                if !aes_key_bits_supported(bits) {
                    return Err(TPM_RC_VALUE);
                }
                match r.u16()? {
                    TPM_ALG_CFB => Ok(SymDef::Aes(bits)),
                    TPM_ALG_NULL if object => Ok(SymDef::AesAnyMode(bits)),
                    _ => Err(TPM_RC_MODE),
                }
            }
            TPM_ALG_XOR if !object => Ok(SymDef::Xor(parse_hash_required(r)?)),
            _ => Err(TPM_RC_SYMMETRIC),
        }
    }

    pub fn write(&self, w: &mut Writer) {
        match self {
            SymDef::Null => {
                w.u16(TPM_ALG_NULL);
            }
            SymDef::Aes(bits) => {
                w.u16(TPM_ALG_AES).u16(*bits).u16(TPM_ALG_CFB);
            }
            SymDef::AesAnyMode(bits) => {
                w.u16(TPM_ALG_AES).u16(*bits).u16(TPM_ALG_NULL);
            }
            SymDef::Xor(h) => {
                w.u16(TPM_ALG_XOR).u16(h.alg());
            }
        }
    }
}

/// A scheme selector with its hash (TPMT_*_SCHEME, TPMT_KDF_SCHEME, TPMT_SIG_SCHEME, ...).
/// `hash` is `None` for schemes without a hash (NULL, RSAES).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Scheme {
    pub alg: u16,
    pub hash: Option<HashAlg>,
    /// TPMS_SCHEME_XOR's KDF (keyed-hash XOR scheme only).
    pub kdf: u16,
    /// TPMS_SCHEME_ECDAA's commit count (ECDAA only).
    pub count: u16,
}

impl Scheme {
    pub const NULL: Scheme = Scheme { alg: TPM_ALG_NULL, hash: None, kdf: TPM_ALG_NULL, count: 0 };

    pub fn with_hash(alg: u16, hash: HashAlg) -> Scheme {
        Scheme { alg, hash: Some(hash), kdf: TPM_ALG_NULL, count: 0 }
    }

    /// Same algorithm and hash (an ECDAA count is per signature, not part of the identity).
    pub fn same_as(&self, other: &Scheme) -> bool {
        self.alg == other.alg && self.hash == other.hash && self.kdf == other.kdf
    }

    pub fn is_null(&self) -> bool {
        self.alg == TPM_ALG_NULL
    }

    /// Parses a scheme whose selector must be one of `allowed` (else `bad`).
    fn parse_from(r: &mut Reader, allowed: &[u16], bad: Rc) -> TpmResult<Scheme> {
        let alg = r.u16()?;
        if !allowed.contains(&alg) {
            return Err(bad);
        }
        match alg {
            TPM_ALG_NULL | TPM_ALG_RSAES => {
                Ok(Scheme { alg, hash: None, kdf: TPM_ALG_NULL, count: 0 })
            }
            TPM_ALG_XOR => {
                let hash = parse_hash_required(r)?;
                let kdf = r.u16()?;
                if kdf != TPM_ALG_KDF1_SP800_108 {
                    return Err(TPM_RC_KDF);
                }
                Ok(Scheme { alg, hash: Some(hash), kdf, count: 0 })
            }
            TPM_ALG_ECDAA => {
                let hash = parse_hash_required(r)?;
                let count = r.u16()?;
                Ok(Scheme { count, ..Scheme::with_hash(alg, hash) })
            }
            _ => Ok(Scheme::with_hash(alg, parse_hash_required(r)?)),
        }
    }

    /// TPMT_RSA_SCHEME+.
    pub fn parse_rsa(r: &mut Reader) -> TpmResult<Scheme> {
        const OK: &[u16] =
            &[TPM_ALG_NULL, TPM_ALG_RSASSA, TPM_ALG_RSAPSS, TPM_ALG_OAEP, TPM_ALG_RSAES];
        Self::parse_from(r, OK, TPM_RC_VALUE)
    }

    /// TPMT_RSA_DECRYPT+.
    pub fn parse_rsa_decrypt(r: &mut Reader) -> TpmResult<Scheme> {
        Self::parse_from(r, &[TPM_ALG_NULL, TPM_ALG_OAEP, TPM_ALG_RSAES], TPM_RC_VALUE)
    }

    /// TPMT_ECC_SCHEME+.
    pub fn parse_ecc(r: &mut Reader) -> TpmResult<Scheme> {
        Self::parse_from(
            r,
            &[TPM_ALG_NULL, TPM_ALG_ECDSA, TPM_ALG_ECDAA, TPM_ALG_ECDH],
            TPM_RC_SCHEME,
        )
    }

    /// TPMT_KEYEDHASH_SCHEME+.
    pub fn parse_keyedhash(r: &mut Reader) -> TpmResult<Scheme> {
        Self::parse_from(r, &[TPM_ALG_NULL, TPM_ALG_HMAC, TPM_ALG_XOR], TPM_RC_VALUE)
    }

    /// TPMT_SIG_SCHEME+.
    pub fn parse_sig(r: &mut Reader) -> TpmResult<Scheme> {
        const OK: &[u16] = &[
            TPM_ALG_NULL,
            TPM_ALG_RSASSA,
            TPM_ALG_RSAPSS,
            TPM_ALG_ECDSA,
            TPM_ALG_ECDAA,
            TPM_ALG_HMAC,
        ];
        Self::parse_from(r, OK, TPM_RC_SCHEME)
    }

    /// TPMT_KDF_SCHEME+.
    pub fn parse_kdf(r: &mut Reader) -> TpmResult<Scheme> {
        const OK: &[u16] =
            &[TPM_ALG_NULL, TPM_ALG_KDF1_SP800_56A, TPM_ALG_KDF1_SP800_108, TPM_ALG_MGF1];
        Self::parse_from(r, OK, TPM_RC_KDF)
    }

    pub fn write(&self, w: &mut Writer) {
        w.u16(self.alg);
        if let Some(h) = self.hash {
            w.u16(h.alg());
        }
        if self.alg == TPM_ALG_XOR {
            w.u16(self.kdf);
        }
        if self.alg == TPM_ALG_ECDAA {
            w.u16(self.count);
        }
    }
}

/// TPMU_PUBLIC_PARMS.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum PublicParams {
    KeyedHash { scheme: Scheme },
    SymCipher { sym: SymDef },
    Rsa { sym: SymDef, scheme: Scheme, key_bits: u16, exponent: u32 },
    Ecc { sym: SymDef, scheme: Scheme, curve: Curve, kdf: Scheme },
}

/// TPMU_PUBLIC_ID.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Unique {
    /// keyedHash / sym: a digest.
    Digest(Vec<u8>),
    Rsa(Vec<u8>),
    Ecc(Vec<u8>, Vec<u8>),
}

/// TPMT_PUBLIC.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Public {
    pub kind: u16,
    pub name_alg: Option<HashAlg>,
    pub attributes: u32,
    pub auth_policy: Vec<u8>,
    pub params: PublicParams,
    pub unique: Unique,
}

impl Public {
    pub fn has(&self, attr: u32) -> bool {
        self.attributes & attr != 0
    }

    /// TPMS_*_PARMS for `kind` (also used by TPM2_TestParms).
    pub fn parse_params(r: &mut Reader, kind: u16) -> TpmResult<PublicParams> {
        Ok(match kind {
            TPM_ALG_KEYEDHASH => PublicParams::KeyedHash { scheme: Scheme::parse_keyedhash(r)? },
            TPM_ALG_SYMCIPHER => PublicParams::SymCipher { sym: SymDef::parse(r, true, false)? },
            TPM_ALG_RSA => {
                let sym = SymDef::parse(r, true, true)?;
                let scheme = Scheme::parse_rsa(r)?;
                let key_bits = r.u16()?;
                // TPMI_RSA_KEY_BITS: #TPM_RC_VALUE (Part 2).
                if !crate::crypto::rsa::key_bits_supported(key_bits) {
                    return Err(TPM_RC_VALUE);
                }
                let exponent = r.u32()?;
                PublicParams::Rsa { sym, scheme, key_bits, exponent }
            }
            TPM_ALG_ECC => {
                let sym = SymDef::parse(r, true, true)?;
                let scheme = Scheme::parse_ecc(r)?;
                let curve = Curve::from_id(r.u16()?).ok_or(TPM_RC_CURVE)?;
                let kdf = Scheme::parse_kdf(r)?;
                PublicParams::Ecc { sym, scheme, curve, kdf }
            }
            _ => return Err(TPM_RC_TYPE),
        })
    }

    pub fn write_params(params: &PublicParams, w: &mut Writer) {
        match params {
            PublicParams::KeyedHash { scheme } => scheme.write(w),
            PublicParams::SymCipher { sym } => sym.write(w),
            PublicParams::Rsa { sym, scheme, key_bits, exponent } => {
                sym.write(w);
                scheme.write(w);
                w.u16(*key_bits).u32(*exponent);
            }
            PublicParams::Ecc { sym, scheme, curve, kdf } => {
                sym.write(w);
                scheme.write(w);
                w.u16(curve.id());
                kdf.write(w);
            }
        }
    }

    /// TPMT_PUBLIC.
    pub fn parse(r: &mut Reader) -> TpmResult<Public> {
        let kind = r.u16()?;
        if !matches!(kind, TPM_ALG_RSA | TPM_ALG_KEYEDHASH | TPM_ALG_ECC | TPM_ALG_SYMCIPHER) {
            return Err(TPM_RC_TYPE);
        }
        let name_alg = parse_hash(r, true)?;
        let attributes = r.u32()?;
        if attributes & OA_RESERVED != 0 {
            return Err(TPM_RC_RESERVED_BITS);
        }
        let auth_policy = r.tpm2b_vec(MAX_DIGEST_SIZE)?;
        let params = Self::parse_params(r, kind)?;
        let unique = match &params {
            PublicParams::KeyedHash { .. } | PublicParams::SymCipher { .. } => {
                Unique::Digest(r.tpm2b_vec(MAX_DIGEST_SIZE)?)
            }
            PublicParams::Rsa { .. } => Unique::Rsa(r.tpm2b_vec(MAX_RSA_KEY_BYTES)?),
            PublicParams::Ecc { .. } => {
                let x = r.tpm2b_vec(MAX_ECC_KEY_BYTES)?;
                let y = r.tpm2b_vec(MAX_ECC_KEY_BYTES)?;
                Unique::Ecc(x, y)
            }
        };
        Ok(Public { kind, name_alg, attributes, auth_policy, params, unique })
    }

    /// TPM2B_PUBLIC: the size must match the contents exactly and must not be zero.
    pub fn parse_2b(r: &mut Reader) -> TpmResult<(Public, Vec<u8>)> {
        let bytes = r.tpm2b(u16::MAX as usize)?;
        if bytes.is_empty() {
            return Err(TPM_RC_SIZE);
        }
        let mut inner = Reader::new(bytes);
        let public = Public::parse(&mut inner)?;
        if !inner.is_empty() {
            return Err(TPM_RC_SIZE);
        }
        Ok((public, bytes.to_vec()))
    }

    pub fn write(&self, w: &mut Writer) {
        w.u16(self.kind)
            .u16(hash_alg_id(self.name_alg))
            .u32(self.attributes)
            .tpm2b(&self.auth_policy);
        Self::write_params(&self.params, w);
        match &self.unique {
            Unique::Digest(d) | Unique::Rsa(d) => {
                w.tpm2b(d);
            }
            Unique::Ecc(x, y) => {
                w.tpm2b(x).tpm2b(y);
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        crate::marshal::to_vec(|w| self.write(w))
    }

    /// The object's symmetric definition (for storage keys), if any.
    pub fn sym(&self) -> SymDef {
        match &self.params {
            PublicParams::Rsa { sym, .. } | PublicParams::Ecc { sym, .. } => *sym,
            PublicParams::SymCipher { sym } => *sym,
            PublicParams::KeyedHash { .. } => SymDef::Null,
        }
    }

    pub fn scheme(&self) -> Scheme {
        match &self.params {
            PublicParams::Rsa { scheme, .. }
            | PublicParams::Ecc { scheme, .. }
            | PublicParams::KeyedHash { scheme } => *scheme,
            PublicParams::SymCipher { .. } => Scheme::NULL,
        }
    }

    pub fn ecc_point(&self) -> Option<Point> {
        match &self.unique {
            Unique::Ecc(x, y) => Some(Point { x: x.clone(), y: y.clone() }),
            _ => None,
        }
    }
}

/// TPMS_PCR_SELECTION list (TPML_PCR_SELECTION) as (hash, bitmap).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct PcrSelection(pub Vec<(HashAlg, [u8; PCR_SELECT_SIZE])>);

impl PcrSelection {
    pub fn parse(r: &mut Reader) -> TpmResult<PcrSelection> {
        let count = r.u32()?;
        if count as usize > crate::crypto::hash::ALL_HASHES.len() {
            return Err(TPM_RC_SIZE);
        }
        let mut out = Vec::new();
        for _ in 0..count {
            let hash = parse_hash_required(r)?;
            let size = r.u8()? as usize;
            if size != PCR_SELECT_SIZE {
                return Err(TPM_RC_VALUE);
            }
            let mut bits = [0u8; PCR_SELECT_SIZE];
            bits.copy_from_slice(r.bytes(size)?);
            out.push((hash, bits));
        }
        Ok(PcrSelection(out))
    }

    pub fn write(&self, w: &mut Writer) {
        w.u32(self.0.len() as u32);
        for (h, bits) in &self.0 {
            w.u16(h.alg()).u8(PCR_SELECT_SIZE as u8).bytes(bits);
        }
    }

    /// Selected PCR indices of one entry, ascending.
    pub fn indices(bits: &[u8; PCR_SELECT_SIZE]) -> impl Iterator<Item = usize> + '_ {
        (0..PCR_COUNT).filter(move |i| bits[i / 8] & (1 << (i % 8)) != 0)
    }
}

/// TPMT_HA with a digest of the algorithm's size.
pub fn parse_tpmt_ha(r: &mut Reader, allow_null: bool) -> TpmResult<(Option<HashAlg>, Vec<u8>)> {
    let h = parse_hash(r, allow_null)?;
    let size = h.map_or(0, HashAlg::size);
    Ok((h, r.bytes(size)?.to_vec()))
}

/// TPML_DIGEST_VALUES.
pub fn parse_digest_values(r: &mut Reader) -> TpmResult<Vec<(HashAlg, Vec<u8>)>> {
    let count = r.u32()?;
    if count as usize > crate::crypto::hash::ALL_HASHES.len() {
        return Err(TPM_RC_SIZE);
    }
    let mut out = Vec::new();
    for _ in 0..count {
        let (h, d) = parse_tpmt_ha(r, false)?;
        out.push((h.expect("NULL not allowed"), d));
    }
    Ok(out)
}

/// TPML_DIGEST (at most 8 entries).
pub fn parse_digest_list(r: &mut Reader) -> TpmResult<Vec<Vec<u8>>> {
    let count = r.u32()?;
    if count > 8 {
        return Err(TPM_RC_SIZE);
    }
    (0..count).map(|_| r.tpm2b_vec(MAX_DIGEST_SIZE)).collect()
}

/// TPMT_SIGNATURE.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Signature {
    Null,
    Rsa {
        scheme: u16,
        hash: HashAlg,
        sig: Vec<u8>,
    },
    /// ECDSA or ECDAA (same shape: hash, r, s).
    Ecc {
        scheme: u16,
        hash: HashAlg,
        r: Vec<u8>,
        s: Vec<u8>,
    },
    Hmac {
        hash: HashAlg,
        digest: Vec<u8>,
    },
}

impl Signature {
    pub fn parse(r: &mut Reader) -> TpmResult<Signature> {
        let alg = r.u16()?;
        Ok(match alg {
            TPM_ALG_NULL => Signature::Null,
            TPM_ALG_RSASSA | TPM_ALG_RSAPSS => Signature::Rsa {
                scheme: alg,
                hash: parse_hash_required(r)?,
                sig: r.tpm2b_vec(MAX_RSA_KEY_BYTES)?,
            },
            TPM_ALG_ECDSA | TPM_ALG_ECDAA => Signature::Ecc {
                scheme: alg,
                hash: parse_hash_required(r)?,
                r: r.tpm2b_vec(MAX_ECC_KEY_BYTES)?,
                s: r.tpm2b_vec(MAX_ECC_KEY_BYTES)?,
            },
            TPM_ALG_HMAC => {
                let (h, d) = parse_tpmt_ha(r, false)?;
                Signature::Hmac { hash: h.expect("NULL not allowed"), digest: d }
            }
            _ => return Err(TPM_RC_SCHEME),
        })
    }

    pub fn write(&self, w: &mut Writer) {
        match self {
            Signature::Null => {
                w.u16(TPM_ALG_NULL);
            }
            Signature::Rsa { scheme, hash, sig } => {
                w.u16(*scheme).u16(hash.alg()).tpm2b(sig);
            }
            Signature::Ecc { scheme, hash, r, s } => {
                w.u16(*scheme).u16(hash.alg()).tpm2b(r).tpm2b(s);
            }
            Signature::Hmac { hash, digest } => {
                w.u16(TPM_ALG_HMAC).u16(hash.alg()).bytes(digest);
            }
        }
    }
}

/// A ticket (TPMT_TK_CREATION / VERIFIED / AUTH / HASHCHECK).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Ticket {
    pub tag: u16,
    pub hierarchy: u32,
    pub digest: Vec<u8>,
}

impl Ticket {
    pub fn parse(r: &mut Reader, expected_tag: &[u16]) -> TpmResult<Ticket> {
        let tag = r.u16()?;
        if !expected_tag.contains(&tag) {
            return Err(TPM_RC_TAG);
        }
        let hierarchy = r.u32()?;
        if !matches!(hierarchy, TPM_RH_OWNER | TPM_RH_ENDORSEMENT | TPM_RH_PLATFORM | TPM_RH_NULL) {
            return Err(TPM_RC_VALUE);
        }
        let digest = r.tpm2b_vec(MAX_DIGEST_SIZE)?;
        Ok(Ticket { tag, hierarchy, digest })
    }

    pub fn write(&self, w: &mut Writer) {
        w.u16(self.tag).u32(self.hierarchy).tpm2b(&self.digest);
    }

    pub fn null(tag: u16) -> Ticket {
        Ticket { tag, hierarchy: TPM_RH_NULL, digest: Vec::new() }
    }
}

/// TPMS_SENSITIVE_CREATE inside TPM2B_SENSITIVE_CREATE: (userAuth, data).
pub fn parse_sensitive_create(r: &mut Reader) -> TpmResult<(Vec<u8>, Vec<u8>)> {
    let bytes = r.tpm2b(u16::MAX as usize)?;
    let mut inner = Reader::new(bytes);
    let auth = inner.tpm2b_vec(MAX_DIGEST_SIZE)?;
    let data = inner.tpm2b_vec(MAX_SYM_DATA.max(MAX_ECC_KEY_BYTES))?;
    if !inner.is_empty() {
        return Err(TPM_RC_SIZE);
    }
    Ok((auth, data))
}

/// TPMS_ECC_POINT inside a TPM2B_ECC_POINT.
pub fn parse_ecc_point_2b(r: &mut Reader) -> TpmResult<Point> {
    let bytes = r.tpm2b(u16::MAX as usize)?;
    let mut inner = Reader::new(bytes);
    let x = inner.tpm2b_vec(MAX_ECC_KEY_BYTES)?;
    let y = inner.tpm2b_vec(MAX_ECC_KEY_BYTES)?;
    if !inner.is_empty() || bytes.is_empty() {
        return Err(TPM_RC_SIZE);
    }
    Ok(Point { x, y })
}

pub fn write_ecc_point_2b(w: &mut Writer, p: &Point) {
    w.sized(|w| {
        w.tpm2b(&p.x).tpm2b(&p.y);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_round_trips_and_rejects_reserved_bits() {
        // An ECC P-256 storage key template (the "SRK ECC" shape).
        let public = Public {
            kind: TPM_ALG_ECC,
            name_alg: Some(HashAlg::Sha256),
            attributes: 0x0003_0072,
            auth_policy: Vec::new(),
            params: PublicParams::Ecc {
                sym: SymDef::Aes(128),
                scheme: Scheme::NULL,
                curve: Curve::P256,
                kdf: Scheme::NULL,
            },
            unique: Unique::Ecc(Vec::new(), Vec::new()),
        };
        let bytes = public.to_bytes();
        assert_eq!(
            bytes,
            [
                0x00, 0x23, 0x00, 0x0B, 0x00, 0x03, 0x00, 0x72, 0x00, 0x00, 0x00, 0x06, 0x00, 0x80,
                0x00, 0x43, 0x00, 0x10, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00
            ]
        );
        assert_eq!(Public::parse(&mut Reader::new(&bytes)), Ok(public));
        let mut bad = bytes.clone();
        bad[7] |= 0x01;
        assert_eq!(Public::parse(&mut Reader::new(&bad)), Err(TPM_RC_RESERVED_BITS));
        let mut bad = bytes.clone();
        bad[19] = 0x99;
        assert_eq!(Public::parse(&mut Reader::new(&bad)), Err(TPM_RC_CURVE));
        assert_eq!(Public::parse(&mut Reader::new(&bytes[..20])), Err(TPM_RC_INSUFFICIENT));
    }
}
