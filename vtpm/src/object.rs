//! Objects: public-area validation, key generation (random, or derived for primaries), names,
//! the sensitive area and its protection under a storage parent (Part 1 §23: symmetric
//! encryption with a KDFa("STORAGE") key and an outer HMAC with a KDFa("INTEGRITY") key).

use alloc::boxed::Box;
use alloc::vec::Vec;
use zeroize::Zeroizing;

use crate::constants::*;
use crate::crypto::drbg::KdfaStream;
use crate::crypto::ecc::{self, Point};
use crate::crypto::hash::{HashAlg, MAX_DIGEST_SIZE, hash, hmac};
use crate::crypto::kdf::kdfa;
use crate::crypto::rsa::{self, RsaPrivateKey, RsaPublicKey};
use crate::crypto::sym::{AES_BLOCK, aes_cfb};
use crate::marshal::{Reader, Writer};
use crate::rc::*;
use crate::types::*;

/// The sensitive area (TPMT_SENSITIVE) of an object.
#[derive(Clone, Default)]
pub struct Sensitive {
    pub auth: Zeroizing<Vec<u8>>,
    pub seed: Zeroizing<Vec<u8>>,
    /// RSA: one prime; ECC: the private scalar; KEYEDHASH: data/HMAC key; SYMCIPHER: key.
    pub secret: Zeroizing<Vec<u8>>,
}

impl Sensitive {
    pub fn write(&self, w: &mut Writer, kind: u16) {
        w.u16(kind).tpm2b(&self.auth).tpm2b(&self.seed).tpm2b(&self.secret);
    }

    /// TPMT_SENSITIVE of type `kind`.
    pub fn parse(r: &mut Reader, kind: u16) -> TpmResult<Sensitive> {
        if r.u16()? != kind {
            return Err(TPM_RC_TYPE);
        }
        let auth = Zeroizing::new(r.tpm2b_vec(MAX_DIGEST_SIZE)?);
        let seed = Zeroizing::new(r.tpm2b_vec(MAX_DIGEST_SIZE)?);
        let max = match kind {
            TPM_ALG_RSA => MAX_RSA_KEY_BYTES / 2,
            TPM_ALG_ECC => MAX_ECC_KEY_BYTES,
            TPM_ALG_KEYEDHASH => MAX_SYM_DATA,
            _ => MAX_SYM_KEY_BYTES,
        };
        let secret = Zeroizing::new(r.tpm2b_vec(max)?);
        Ok(Sensitive { auth, seed, secret })
    }
}

/// A loaded object (key, sealed data, or public-only external key).
pub struct Object {
    pub public: Public,
    pub name: Vec<u8>,
    pub qualified_name: Vec<u8>,
    /// TPM_RH_OWNER / ENDORSEMENT / PLATFORM / NULL.
    pub hierarchy: u32,
    pub sensitive: Option<Sensitive>,
    pub rsa_private: Option<Box<RsaPrivateKey>>,
    pub rsa_public: Option<Box<RsaPublicKey>>,
    /// Loaded with TPM2_LoadExternal (tickets it produces are NULL tickets).
    pub external: bool,
    /// Created by TPM2_CreatePrimary.
    pub primary: bool,
}

impl Object {
    pub fn is_storage_parent(&self) -> bool {
        self.public.has(OA_RESTRICTED)
            && self.public.has(OA_DECRYPT)
            && matches!(self.public.kind, TPM_ALG_RSA | TPM_ALG_ECC | TPM_ALG_SYMCIPHER)
            && self.sensitive.is_some()
    }

    pub fn name_alg(&self) -> TpmResult<HashAlg> {
        self.public.name_alg.ok_or(TPM_RC_HASH)
    }

    /// Builds the in-memory object (crypto keys, name) from its areas.
    pub fn new(
        public: Public,
        sensitive: Option<Sensitive>,
        hierarchy: u32,
        parent_qualified: &[u8],
    ) -> TpmResult<Object> {
        Self::with_rsa_key(public, sensitive, hierarchy, parent_qualified, None)
    }

    /// [`Object::new`] for a freshly generated key whose RSA private key is already built
    /// (rebuilding it from the prime costs a modular inversion).
    pub fn with_rsa_key(
        public: Public,
        sensitive: Option<Sensitive>,
        hierarchy: u32,
        parent_qualified: &[u8],
        rsa_key: Option<RsaPrivateKey>,
    ) -> TpmResult<Object> {
        let name = compute_name(&public);
        let qualified_name = match public.name_alg {
            Some(h) => {
                let mut q = h.alg().to_be_bytes().to_vec();
                q.extend_from_slice(&hash(h, &[parent_qualified, &name]));
                q
            }
            None => name.clone(),
        };
        let mut obj = Object {
            public,
            name,
            qualified_name,
            hierarchy,
            sensitive,
            rsa_private: rsa_key.map(Box::new),
            rsa_public: None,
            external: false,
            primary: false,
        };
        obj.load_crypto()?;
        Ok(obj)
    }

    fn load_crypto(&mut self) -> TpmResult<()> {
        if let (PublicParams::Rsa { exponent, .. }, Unique::Rsa(n)) =
            (&self.public.params, &self.public.unique)
        {
            self.rsa_public = Some(Box::new(rsa::public_key(n, *exponent)?));
            if let (Some(s), None) = (&self.sensitive, &self.rsa_private) {
                self.rsa_private =
                    Some(Box::new(rsa::private_from_prime(n, *exponent, &s.secret)?));
            }
        }
        Ok(())
    }

    /// Checks that the sensitive area belongs to the public area (TPM_RC_BINDING).
    pub fn check_binding(&self) -> TpmResult<()> {
        let Some(s) = &self.sensitive else { return Ok(()) };
        let name_alg = self.name_alg()?;
        if s.auth.len() > name_alg.size() {
            return Err(TPM_RC_SIZE);
        }
        match (&self.public.params, &self.public.unique) {
            (PublicParams::Rsa { .. }, _) => Ok(()), // checked when rebuilding the key
            (PublicParams::Ecc { curve, .. }, Unique::Ecc(x, y)) => {
                let q = ecc::public_of(*curve, &s.secret).map_err(|_| TPM_RC_BINDING)?;
                let want = Point {
                    x: ecc::pad(x, curve.size()).ok_or(TPM_RC_BINDING)?,
                    y: ecc::pad(y, curve.size()).ok_or(TPM_RC_BINDING)?,
                };
                if q == want { Ok(()) } else { Err(TPM_RC_BINDING) }
            }
            (
                PublicParams::KeyedHash { .. } | PublicParams::SymCipher { .. },
                Unique::Digest(u),
            ) => {
                if let Some(bytes) = self.public.sym().aes_key_bytes()
                    && s.secret.len() != bytes
                {
                    return Err(TPM_RC_KEY_SIZE);
                }
                if s.seed.len() != name_alg.size() {
                    return Err(TPM_RC_BINDING);
                }
                if hash(name_alg, &[&s.seed, &s.secret]) == *u {
                    Ok(())
                } else {
                    Err(TPM_RC_BINDING)
                }
            }
            _ => Err(TPM_RC_BINDING),
        }
    }

    pub fn memory(&self) -> usize {
        let s = self.sensitive.as_ref().map_or(0, |s| s.auth.len() + s.seed.len() + s.secret.len());
        let rsa = if self.rsa_private.is_some() { 2048 } else { 0 }
            + if self.rsa_public.is_some() { 512 } else { 0 };
        core::mem::size_of::<Object>() + self.name.len() * 2 + 600 + s + rsa
    }
}

/// Name = nameAlg || H_nameAlg(TPMT_PUBLIC); the Empty Buffer if nameAlg is TPM_ALG_NULL.
pub fn compute_name(public: &Public) -> Vec<u8> {
    match public.name_alg {
        Some(h) => {
            let mut name = h.alg().to_be_bytes().to_vec();
            name.extend_from_slice(&hash(h, &[&public.to_bytes()]));
            name
        }
        None => Vec::new(),
    }
}

/// Rules shared by creation and loading (TPMA_OBJECT consistency and parameters).
pub fn validate_public(public: &Public, parent: Option<&Public>) -> TpmResult<()> {
    let a = |bit| public.has(bit);
    let name_alg = public.name_alg.ok_or(TPM_RC_HASH)?;
    if a(OA_FIXED_TPM) && !a(OA_FIXED_PARENT) {
        return Err(TPM_RC_ATTRIBUTES);
    }
    if let Some(parent) = parent {
        if a(OA_FIXED_PARENT) {
            if a(OA_FIXED_TPM) != parent.has(OA_FIXED_TPM) {
                return Err(TPM_RC_ATTRIBUTES);
            }
        } else if a(OA_FIXED_TPM) {
            return Err(TPM_RC_ATTRIBUTES);
        }
    }
    if a(OA_ENCRYPTED_DUPLICATION) && a(OA_FIXED_TPM) {
        return Err(TPM_RC_ATTRIBUTES);
    }
    if !public.auth_policy.is_empty() && public.auth_policy.len() != name_alg.size() {
        return Err(TPM_RC_SIZE);
    }
    let (restricted, decrypt, sign) = (a(OA_RESTRICTED), a(OA_DECRYPT), a(OA_SIGN));
    if restricted && decrypt && sign {
        return Err(TPM_RC_ATTRIBUTES);
    }
    if a(OA_X509SIGN) && (restricted || decrypt) {
        return Err(TPM_RC_ATTRIBUTES);
    }
    match &public.params {
        PublicParams::KeyedHash { scheme } => {
            if restricted && !(sign || decrypt) {
                return Err(TPM_RC_ATTRIBUTES);
            }
            // Sign-only keys need an HMAC scheme, decrypt-only ones XOR, others none.
            let ok = match (sign, decrypt) {
                (true, false) => scheme.alg == TPM_ALG_HMAC,
                (false, true) => scheme.alg == TPM_ALG_XOR,
                _ => scheme.is_null(),
            };
            if !ok {
                return Err(TPM_RC_SCHEME);
            }
            // Derivation parents (restricted decrypt keyed hash) are not implemented.
            if restricted && decrypt {
                return Err(TPM_RC_TYPE);
            }
        }
        PublicParams::SymCipher { sym } => {
            // For a symmetric cipher key, "sign" is the encrypt permission.
            if !(sign || decrypt) || (restricted && sign) {
                return Err(TPM_RC_ATTRIBUTES);
            }
            if restricted && !matches!(sym, SymDef::Aes(_)) {
                return Err(TPM_RC_SYMMETRIC);
            }
        }
        PublicParams::Rsa { sym, scheme, .. } => {
            validate_asym(public, *sym, *scheme, Scheme::NULL)?;
        }
        PublicParams::Ecc { sym, scheme, kdf, .. } => {
            if !kdf.is_null() {
                return Err(TPM_RC_KDF);
            }
            validate_asym(public, *sym, *scheme, *kdf)?;
        }
    }
    if let Some(parent) = parent {
        // A fixedParent storage key must use its parent's nameAlg and symmetric scheme.
        if restricted && decrypt && a(OA_FIXED_PARENT) {
            if public.name_alg != parent.name_alg {
                return Err(TPM_RC_HASH);
            }
            if public.sym() != parent.sym() {
                return Err(TPM_RC_SYMMETRIC);
            }
        }
    }
    Ok(())
}

fn validate_asym(public: &Public, sym: SymDef, scheme: Scheme, _kdf: Scheme) -> TpmResult<()> {
    let (restricted, decrypt, sign) =
        (public.has(OA_RESTRICTED), public.has(OA_DECRYPT), public.has(OA_SIGN));
    if !decrypt && !sign {
        return Err(TPM_RC_ATTRIBUTES);
    }
    if restricted && decrypt {
        // Storage keys protect their children with AES-CFB.
        if !matches!(sym, SymDef::Aes(_)) {
            return Err(TPM_RC_SYMMETRIC);
        }
        if !scheme.is_null() {
            return Err(TPM_RC_SCHEME);
        }
        return Ok(());
    }
    if sym != SymDef::Null {
        return Err(TPM_RC_SYMMETRIC);
    }
    let signing =
        matches!(scheme.alg, TPM_ALG_RSASSA | TPM_ALG_RSAPSS | TPM_ALG_ECDSA | TPM_ALG_ECDAA);
    let encrypting = matches!(scheme.alg, TPM_ALG_OAEP | TPM_ALG_RSAES | TPM_ALG_ECDH);
    match (sign, decrypt) {
        (true, true) if !scheme.is_null() => Err(TPM_RC_SCHEME),
        (true, false) if restricted && !signing => Err(TPM_RC_SCHEME),
        (true, false) if !scheme.is_null() && !signing => Err(TPM_RC_SCHEME),
        (false, true) if !scheme.is_null() && !encrypting => Err(TPM_RC_SCHEME),
        _ => Ok(()),
    }
}

/// Source of key material: the TPM RNG (ordinary objects) or a derivation stream (primaries).
pub trait KeySource {
    fn draw(&mut self, out: &mut [u8]);
    fn rsa(&mut self, bits: u16, exponent: u32) -> TpmResult<RsaPrivateKey>;
}

impl KeySource for KdfaStream {
    fn draw(&mut self, out: &mut [u8]) {
        self.fill(out);
    }
    fn rsa(&mut self, bits: u16, exponent: u32) -> TpmResult<RsaPrivateKey> {
        rsa::generate(self, bits, exponent)
    }
}

/// The key checks of loading that creation does not make (the reference's CryptValidateKeys):
/// an RSA exponent other than 0 must be at least 7.
pub fn validate_loaded_key(public: &Public) -> TpmResult<()> {
    match public.params {
        PublicParams::Rsa { exponent, .. } if !rsa::exponent_loadable(exponent) => {
            Err(TPM_RC_VALUE)
        }
        _ => Ok(()),
    }
}

/// Creates the sensitive area and fills `public.unique` (TPM2_Create / CreatePrimary rules).
/// Errors come numbered (inSensitive is parameter 1) except TPM_RC_RANGE for an RSA exponent
/// key generation refuses, which the reference answers unnumbered.
pub fn generate(
    public: &mut Public,
    user_auth: &[u8],
    data: &[u8],
    src: &mut dyn KeySource,
) -> TpmResult<(Sensitive, Option<RsaPrivateKey>)> {
    let name_alg = public.name_alg.ok_or(at_param(TPM_RC_HASH, 2))?;
    if user_auth.len() > name_alg.size() {
        return Err(at_param(TPM_RC_SIZE, 1));
    }
    let origin = public.has(OA_SENSITIVE_DATA_ORIGIN);
    let mut s =
        Sensitive { auth: Zeroizing::new(trim_auth(user_auth).to_vec()), ..Sensitive::default() };
    let mut rsa_key = None;
    let storage = public.has(OA_RESTRICTED) && public.has(OA_DECRYPT);
    // The obfuscation/storage seed is drawn first so that a derived primary's seed does not
    // depend on how much the key generation consumed (which the RSA cache skips).
    if storage || matches!(public.kind, TPM_ALG_KEYEDHASH | TPM_ALG_SYMCIPHER) {
        let mut seed = Zeroizing::new(alloc::vec![0u8; name_alg.size()]);
        src.draw(&mut seed);
        s.seed = seed;
    }
    match public.params.clone() {
        PublicParams::Rsa { key_bits, exponent, .. } => {
            if !data.is_empty() {
                return Err(at_param(TPM_RC_VALUE, 1));
            }
            if !rsa::exponent_generatable(exponent) {
                return Err(TPM_RC_RANGE);
            }
            let key = src.rsa(key_bits, exponent)?;
            public.unique = Unique::Rsa(rsa::modulus_bytes(key.as_public_key()));
            s.secret = rsa::prime_bytes(&key);
            rsa_key = Some(key);
        }
        PublicParams::Ecc { curve, .. } => {
            if !data.is_empty() {
                return Err(at_param(TPM_RC_VALUE, 1));
            }
            let (d, q) = ecc::generate(curve, |b| src.draw(b));
            public.unique = Unique::Ecc(q.x, q.y);
            s.secret = d;
        }
        PublicParams::KeyedHash { .. } => {
            let sealed = !public.has(OA_SIGN) && !public.has(OA_DECRYPT);
            if origin != data.is_empty() || (sealed && data.is_empty()) {
                return Err(at_param(TPM_RC_ATTRIBUTES, 1));
            }
            s.secret = Zeroizing::new(if data.is_empty() {
                let mut k = alloc::vec![0u8; name_alg.size()];
                src.draw(&mut k);
                k
            } else {
                data.to_vec()
            });
        }
        PublicParams::SymCipher { sym } => {
            let bytes = match sym {
                SymDef::Aes(bits) | SymDef::AesAnyMode(bits) => usize::from(bits / 8),
                _ => return Err(at_param(TPM_RC_SYMMETRIC, 1)),
            };
            if origin != data.is_empty() {
                return Err(at_param(TPM_RC_ATTRIBUTES, 1));
            }
            if data.len() > bytes {
                return Err(at_param(TPM_RC_SIZE, 1));
            }
            let mut k = Zeroizing::new(alloc::vec![0u8; bytes]);
            if data.is_empty() {
                src.draw(&mut k);
            } else {
                k[bytes - data.len()..].copy_from_slice(data);
            }
            s.secret = k;
        }
    }
    if matches!(public.kind, TPM_ALG_KEYEDHASH | TPM_ALG_SYMCIPHER) {
        public.unique = Unique::Digest(hash(name_alg, &[&s.seed, &s.secret]));
    }
    Ok((s, rsa_key))
}

/// Removes trailing zero octets (authValues are compared and used without them).
pub fn trim_auth(auth: &[u8]) -> &[u8] {
    let end = auth.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &auth[..end]
}

/// The symmetric key and HMAC key that protect a child under a parent with `seed`.
fn protection_keys(
    name_alg: HashAlg,
    seed: &[u8],
    key_bits: u16,
    name: &[u8],
) -> (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>) {
    let sym = kdfa(name_alg, seed, b"STORAGE", name, &[], u32::from(key_bits));
    let hmac_key = kdfa(name_alg, seed, b"INTEGRITY", &[], &[], (name_alg.size() * 8) as u32);
    (sym, hmac_key)
}

/// Encrypts `plain` with AES-CFB (zero IV) under KDFa(seed, "STORAGE", name) and prefixes an
/// outer HMAC (KDFa(seed, "INTEGRITY")) over ciphertext || name: the protection of Part 1 §23
/// shared by TPM2B_PRIVATE, credential blobs and duplication's outer wrapper.
pub fn wrap_raw(
    name_alg: HashAlg,
    seed: &[u8],
    key_bits: u16,
    name: &[u8],
    plain: &[u8],
) -> Vec<u8> {
    let (sym, hmac_key) = protection_keys(name_alg, seed, key_bits, name);
    let mut enc = Zeroizing::new(plain.to_vec());
    aes_cfb(&sym, &[0u8; AES_BLOCK], &mut enc, true);
    let integrity = hmac(name_alg, &hmac_key, &[&enc, name]);
    crate::marshal::to_vec(|w| {
        w.tpm2b(&integrity).bytes(&enc);
    })
}

/// Checks and decrypts a blob made by [`wrap_raw`].
pub fn unwrap_raw(
    name_alg: HashAlg,
    seed: &[u8],
    key_bits: u16,
    name: &[u8],
    blob: &[u8],
) -> TpmResult<Zeroizing<Vec<u8>>> {
    let mut r = Reader::new(blob);
    let integrity = r.tpm2b(MAX_DIGEST_SIZE).map_err(|_| TPM_RC_SIZE)?;
    if integrity.len() != name_alg.size() {
        return Err(TPM_RC_SIZE);
    }
    let enc = r.rest();
    let (sym, hmac_key) = protection_keys(name_alg, seed, key_bits, name);
    let expect = hmac(name_alg, &hmac_key, &[enc, name]);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&expect[..], integrity)) {
        return Err(TPM_RC_INTEGRITY);
    }
    let mut plain = Zeroizing::new(enc.to_vec());
    aes_cfb(&sym, &[0u8; AES_BLOCK], &mut plain, false);
    Ok(plain)
}

/// [`wrap_raw`] of TPM2B(payload).
pub fn wrap(name_alg: HashAlg, seed: &[u8], key_bits: u16, name: &[u8], payload: &[u8]) -> Vec<u8> {
    let plain = Zeroizing::new(crate::marshal::to_vec(|w| {
        w.tpm2b(payload);
    }));
    wrap_raw(name_alg, seed, key_bits, name, &plain)
}

/// Inverse of [`wrap`]: the payload inside the TPM2B.
pub fn unwrap(
    name_alg: HashAlg,
    seed: &[u8],
    key_bits: u16,
    name: &[u8],
    blob: &[u8],
) -> TpmResult<Zeroizing<Vec<u8>>> {
    let plain = unwrap_raw(name_alg, seed, key_bits, name, blob)?;
    untpm2b(&plain)
}

/// The contents of a buffer that must be exactly one TPM2B.
pub fn untpm2b(plain: &[u8]) -> TpmResult<Zeroizing<Vec<u8>>> {
    let mut pr = Reader::new(plain);
    let inner = pr.tpm2b(plain.len()).map_err(|_| TPM_RC_SENSITIVE)?;
    if !pr.is_empty() {
        return Err(TPM_RC_SENSITIVE);
    }
    Ok(Zeroizing::new(inner.to_vec()))
}

/// Protection parameters of a storage parent: (nameAlg, seed, AES key bits).
pub fn parent_protection(parent: &Object) -> TpmResult<(HashAlg, &[u8], u16)> {
    let bits = match parent.public.sym() {
        SymDef::Aes(bits) => bits,
        _ => return Err(TPM_RC_TYPE),
    };
    let seed = parent.sensitive.as_ref().map(|s| &s.seed[..]).ok_or(TPM_RC_TYPE)?;
    Ok((parent.name_alg()?, seed, bits))
}

/// TPM2B_PRIVATE contents for a child of `parent`.
pub fn protect(parent: &Object, name: &[u8], kind: u16, s: &Sensitive) -> TpmResult<Vec<u8>> {
    let (alg, seed, bits) = parent_protection(parent)?;
    let payload = Zeroizing::new(crate::marshal::to_vec(|w| s.write(w, kind)));
    Ok(wrap(alg, seed, bits, name, &payload))
}

/// Recovers a child's sensitive area from its TPM2B_PRIVATE contents.
pub fn unprotect(parent: &Object, name: &[u8], kind: u16, private: &[u8]) -> TpmResult<Sensitive> {
    let (alg, seed, bits) = parent_protection(parent)?;
    let payload = unwrap(alg, seed, bits, name, private)?;
    let mut r = Reader::new(&payload);
    let s = Sensitive::parse(&mut r, kind).map_err(|_| TPM_RC_SENSITIVE)?;
    if !r.is_empty() {
        return Err(TPM_RC_SENSITIVE);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_round_trip_and_integrity() {
        let blob = wrap(HashAlg::Sha256, b"seed", 128, b"name", b"payload");
        assert_eq!(&unwrap(HashAlg::Sha256, b"seed", 128, b"name", &blob).unwrap()[..], b"payload");
        assert_eq!(
            unwrap(HashAlg::Sha256, b"seed", 128, b"other", &blob).err(),
            Some(TPM_RC_INTEGRITY)
        );
        let mut bad = blob.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(
            unwrap(HashAlg::Sha256, b"seed", 128, b"name", &bad).err(),
            Some(TPM_RC_INTEGRITY)
        );
        assert_eq!(trim_auth(&[1, 0, 2, 0, 0]), &[1, 0, 2]);
    }
}
