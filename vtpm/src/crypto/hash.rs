//! Hash algorithms (SHA-1/256/384/512) behind one enum, HMAC, and hash/HMAC states that can be
//! serialized (hash and HMAC sequences must survive TPM2_ContextSave).

use alloc::vec::Vec;
use digest::common::hazmat::SerializableState;
use digest::{Digest, KeyInit, Mac};
use hmac::Hmac;
use zeroize::Zeroizing;

use crate::constants::*;

/// A hash algorithm the TPM implements.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

/// Every implemented hash, in TPM_ALG_ID order.
pub const ALL_HASHES: [HashAlg; 4] =
    [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512];

/// The largest digest we produce.
pub const MAX_DIGEST_SIZE: usize = 64;

impl HashAlg {
    pub fn from_alg(alg: u16) -> Option<HashAlg> {
        match alg {
            TPM_ALG_SHA1 => Some(HashAlg::Sha1),
            TPM_ALG_SHA256 => Some(HashAlg::Sha256),
            TPM_ALG_SHA384 => Some(HashAlg::Sha384),
            TPM_ALG_SHA512 => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    pub fn alg(self) -> u16 {
        match self {
            HashAlg::Sha1 => TPM_ALG_SHA1,
            HashAlg::Sha256 => TPM_ALG_SHA256,
            HashAlg::Sha384 => TPM_ALG_SHA384,
            HashAlg::Sha512 => TPM_ALG_SHA512,
        }
    }

    pub fn size(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    pub fn block_size(self) -> usize {
        match self {
            HashAlg::Sha1 | HashAlg::Sha256 => 64,
            HashAlg::Sha384 | HashAlg::Sha512 => 128,
        }
    }
}

/// An in-progress hash.
#[derive(Clone)]
pub enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

macro_rules! each_hasher {
    ($self:expr, $h:ident => $body:expr) => {
        match $self {
            Hasher::Sha1($h) => $body,
            Hasher::Sha256($h) => $body,
            Hasher::Sha384($h) => $body,
            Hasher::Sha512($h) => $body,
        }
    };
}

impl Hasher {
    pub fn new(alg: HashAlg) -> Hasher {
        match alg {
            HashAlg::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            HashAlg::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            HashAlg::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            HashAlg::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn alg(&self) -> HashAlg {
        match self {
            Hasher::Sha1(_) => HashAlg::Sha1,
            Hasher::Sha256(_) => HashAlg::Sha256,
            Hasher::Sha384(_) => HashAlg::Sha384,
            Hasher::Sha512(_) => HashAlg::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        each_hasher!(self, h => Digest::update(h, data));
        self
    }

    pub fn finish(self) -> Vec<u8> {
        each_hasher!(self, h => h.finalize().to_vec())
    }

    /// The internal state (for context save), excluding the algorithm.
    pub fn serialize(&self) -> Vec<u8> {
        each_hasher!(self, h => h.serialize().to_vec())
    }

    /// Restores a state produced by [`Hasher::serialize`]; `None` if malformed.
    pub fn deserialize(alg: HashAlg, state: &[u8]) -> Option<Hasher> {
        fn restore<H: SerializableState>(state: &[u8]) -> Option<H> {
            let array = state.try_into().ok()?;
            H::deserialize(array).ok()
        }
        Some(match alg {
            HashAlg::Sha1 => Hasher::Sha1(restore(state)?),
            HashAlg::Sha256 => Hasher::Sha256(restore(state)?),
            HashAlg::Sha384 => Hasher::Sha384(restore(state)?),
            HashAlg::Sha512 => Hasher::Sha512(restore(state)?),
        })
    }
}

/// Hash of the concatenation of `parts`.
pub fn hash(alg: HashAlg, parts: &[&[u8]]) -> Vec<u8> {
    let mut h = Hasher::new(alg);
    for p in parts {
        h.update(p);
    }
    h.finish()
}

fn hmac_with<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// HMAC of the concatenation of `parts`.
pub fn hmac(alg: HashAlg, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match alg {
        HashAlg::Sha1 => hmac_with::<Hmac<sha1::Sha1>>(key, parts),
        HashAlg::Sha256 => hmac_with::<Hmac<sha2::Sha256>>(key, parts),
        HashAlg::Sha384 => hmac_with::<Hmac<sha2::Sha384>>(key, parts),
        HashAlg::Sha512 => hmac_with::<Hmac<sha2::Sha512>>(key, parts),
    }
}

/// An HMAC in progress that can be saved and restored: RFC 2104 over a serializable
/// [`Hasher`] (the `hmac` crate's state cannot be serialized).
#[derive(Clone)]
pub struct HmacState {
    inner: Hasher,
    key: Zeroizing<Vec<u8>>,
}

impl HmacState {
    pub fn new(alg: HashAlg, key: &[u8]) -> HmacState {
        let key = Zeroizing::new(if key.len() > alg.block_size() {
            hash(alg, &[key])
        } else {
            key.to_vec()
        });
        let mut inner = Hasher::new(alg);
        inner.update(&Self::pad(alg, &key, 0x36));
        HmacState { inner, key }
    }

    fn pad(alg: HashAlg, key: &[u8], byte: u8) -> Zeroizing<Vec<u8>> {
        let mut pad = Zeroizing::new(alloc::vec![byte; alg.block_size()]);
        for (p, k) in pad.iter_mut().zip(key) {
            *p ^= k;
        }
        pad
    }

    pub fn alg(&self) -> HashAlg {
        self.inner.alg()
    }

    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }

    pub fn finish(self) -> Vec<u8> {
        let alg = self.alg();
        let inner = self.inner.finish();
        hash(alg, &[&Self::pad(alg, &self.key, 0x5C), &inner])
    }

    /// (inner hash state, processed key) for context save.
    pub fn parts(&self) -> (Vec<u8>, &[u8]) {
        (self.inner.serialize(), &self.key)
    }

    pub fn from_parts(alg: HashAlg, state: &[u8], key: &[u8]) -> Option<HmacState> {
        if key.len() > alg.block_size() {
            return None;
        }
        Some(HmacState {
            inner: Hasher::deserialize(alg, state)?,
            key: Zeroizing::new(key.to_vec()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn sha256_abc() {
        assert_eq!(
            hash(HashAlg::Sha256, &[b"a", b"bc"]),
            hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
    }

    #[test]
    fn hmac_rfc4231_case2() {
        let expect = hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert_eq!(hmac(HashAlg::Sha256, b"Jefe", &[b"what do ya want ", b"for nothing?"]), expect);
        // The serializable state gives the same answer, also after a save/restore.
        let mut s = HmacState::new(HashAlg::Sha256, b"Jefe");
        s.update(b"what do ya want ");
        let (state, key) = s.parts();
        let mut s = HmacState::from_parts(HashAlg::Sha256, &state, key).unwrap();
        s.update(b"for nothing?");
        assert_eq!(s.finish(), expect);
    }

    #[test]
    fn hmac_long_key_is_hashed() {
        let key = [0xAAu8; 131];
        let msg = b"Test Using Larger Than Block-Size Key - Hash Key First";
        let expect = hex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
        assert_eq!(hmac(HashAlg::Sha256, &key, &[msg]), expect);
        let mut s = HmacState::new(HashAlg::Sha256, &key);
        s.update(msg);
        assert_eq!(s.finish(), expect);
    }
}
