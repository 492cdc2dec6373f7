//! Random number generation: the TPM's own HMAC_DRBG (SP800-90A, SHA-256) seeded from the
//! platform entropy source, and a deterministic KDFa-based stream that drives key generation
//! for primary objects so that the same seed and template always give the same key.

use alloc::vec::Vec;
use core::convert::Infallible;
use rand_core::{TryCryptoRng, TryRng};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::hash::{HashAlg, hmac};

/// HMAC_DRBG with SHA-256 (SP800-90A §10.1.2).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct HmacDrbg {
    k: [u8; 32],
    v: [u8; 32],
}

impl HmacDrbg {
    pub fn new(seed_material: &[u8]) -> HmacDrbg {
        let mut drbg = HmacDrbg { k: [0; 32], v: [1; 32] };
        drbg.update(&[seed_material]);
        drbg
    }

    fn update(&mut self, provided: &[&[u8]]) {
        for round in [0u8, 1u8] {
            let mut parts: Vec<&[u8]> = Vec::with_capacity(provided.len() + 2);
            let v = self.v;
            parts.push(&v);
            let sep = [round];
            parts.push(&sep);
            parts.extend_from_slice(provided);
            let k = Zeroizing::new(hmac(HashAlg::Sha256, &self.k, &parts));
            self.k.copy_from_slice(&k);
            let v = Zeroizing::new(hmac(HashAlg::Sha256, &self.k, &[&self.v]));
            self.v.copy_from_slice(&v);
            if provided.iter().all(|p| p.is_empty()) {
                break;
            }
        }
    }

    /// Mixes in additional input (reseed or TPM2_StirRandom).
    pub fn reseed(&mut self, input: &[u8]) {
        self.update(&[input]);
    }

    pub fn generate(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(32) {
            let v = Zeroizing::new(hmac(HashAlg::Sha256, &self.k, &[&self.v]));
            self.v.copy_from_slice(&v);
            chunk.copy_from_slice(&self.v[..chunk.len()]);
        }
        self.update(&[]);
    }
}

/// A deterministic byte stream: block i = `HMAC(seed, [i]32 || label || 0x00 || context)`, i.e.
/// KDFa in counter mode without a fixed output length. Used only for deriving primary keys.
pub struct KdfaStream {
    alg: HashAlg,
    seed: Zeroizing<Vec<u8>>,
    label: &'static [u8],
    context: Vec<u8>,
    counter: u32,
    buffer: Zeroizing<Vec<u8>>,
}

impl KdfaStream {
    pub fn new(alg: HashAlg, seed: &[u8], label: &'static [u8], context: Vec<u8>) -> KdfaStream {
        KdfaStream {
            alg,
            seed: Zeroizing::new(seed.to_vec()),
            label,
            context,
            counter: 0,
            buffer: Zeroizing::new(Vec::new()),
        }
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            if self.buffer.is_empty() {
                self.counter = self.counter.wrapping_add(1);
                let block = hmac(
                    self.alg,
                    &self.seed,
                    &[&self.counter.to_be_bytes(), self.label, &[0], &self.context],
                );
                *self.buffer = block;
            }
            let n = (out.len() - done).min(self.buffer.len());
            out[done..done + n].copy_from_slice(&self.buffer[..n]);
            self.buffer.drain(..n);
            done += n;
        }
    }
}

impl TryRng for KdfaStream {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.fill(dst);
        Ok(())
    }
}

impl TryCryptoRng for KdfaStream {}

/// Adapter that lets the RustCrypto APIs draw from the TPM's DRBG.
pub struct DrbgRng<'a>(pub &'a mut HmacDrbg);

impl TryRng for DrbgRng<'_> {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.0.generate(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.0.generate(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.generate(dst);
        Ok(())
    }
}

impl TryCryptoRng for DrbgRng<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdfa_stream_is_deterministic_and_chunking_independent() {
        let mut a = KdfaStream::new(HashAlg::Sha256, b"seed", b"test", b"ctx".to_vec());
        let mut b = KdfaStream::new(HashAlg::Sha256, b"seed", b"test", b"ctx".to_vec());
        let mut whole = [0u8; 100];
        a.fill(&mut whole);
        let mut parts = [0u8; 100];
        b.fill(&mut parts[..7]);
        b.fill(&mut parts[7..50]);
        b.fill(&mut parts[50..]);
        assert_eq!(whole, parts);
        // The first block is KDFa-shaped: HMAC(seed, [1] || label || 0 || context).
        assert_eq!(
            whole[..32],
            hmac(HashAlg::Sha256, b"seed", &[&[0, 0, 0, 1], b"test", &[0], b"ctx"])[..]
        );
    }

    // SP800-90A HMAC_DRBG (SHA-256, no reseed, no additional input) CAVP vector, count 0:
    // EntropyInput ca851911349384bffe89de1cbdc46e6831e44d34a4fb935ee285dd14b71a7488,
    // Nonce 659ba96c601dc69fc902940805ec0ca8, two generate calls of 1024 bits.
    #[test]
    fn hmac_drbg_cavp_vector() {
        let seed = hexv(
            "ca851911349384bffe89de1cbdc46e6831e44d34a4fb935ee285dd14b71a7488\
             659ba96c601dc69fc902940805ec0ca8",
        );
        let mut d = HmacDrbg::new(&seed);
        let mut out = [0u8; 128];
        d.generate(&mut out);
        d.generate(&mut out);
        assert_eq!(
            out[..],
            hexv(
                "e528e9abf2dece54d47c7e75e5fe302149f817ea9fb4bee6f4199697d04d5b89\
                 d54fbb978a15b5c443c9ec21036d2460b6f73ebad0dc2aba6e624abf07745bc1\
                 07694bb7547bb0995f70de25d6b29e2d3011bb19d27676c07162c8b5ccde0668\
                 961df86803482cb37ed6d5c0bb8d50cf1f50d476aa0458bdaba806f48be9dcb8"
            )[..]
        );
    }

    fn hexv(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }
}
