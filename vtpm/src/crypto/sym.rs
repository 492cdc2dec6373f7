//! AES in CFB-128 mode (the TPM's parameter encryption, storage protection and
//! TPM2_EncryptDecrypt mode) on the `aes` and `cfb-mode` crates.

use aes::cipher::{BlockCipherEncrypt, KeyInit, KeyIvInit};
use cfb_mode::{BufDecryptor, BufEncryptor};

/// AES block size in octets (also the CFB IV size).
pub const AES_BLOCK: usize = 16;

/// Whether `bits` is an AES key size we implement.
pub fn aes_key_bits_supported(bits: u16) -> bool {
    matches!(bits, 128 | 192 | 256)
}

fn cfb<C: BlockCipherEncrypt + KeyInit>(
    key: &[u8],
    iv: &[u8; AES_BLOCK],
    data: &mut [u8],
    encrypt: bool,
) -> [u8; AES_BLOCK] {
    let mut iv_out = [0u8; AES_BLOCK];
    let state = if encrypt {
        let mut enc = BufEncryptor::<C>::new_from_slices(key, iv).expect("key size checked");
        enc.encrypt(data);
        enc.get_state().0.to_vec()
    } else {
        let ciphertext_tail = data[data.len().saturating_sub(AES_BLOCK)..].to_vec();
        let mut dec = BufDecryptor::<C>::new_from_slices(key, iv).expect("key size checked");
        dec.decrypt(data);
        if data.len().is_multiple_of(AES_BLOCK) && !data.is_empty() {
            iv_out.copy_from_slice(&ciphertext_tail);
            return iv_out;
        }
        dec.get_state().0.to_vec()
    };
    // Chaining value as the reference TPM reports it: the last ciphertext block, or for a
    // partial last block its ciphertext followed by the rest of the encrypted IV.
    if data.is_empty() {
        iv_out = *iv;
    } else if encrypt && data.len().is_multiple_of(AES_BLOCK) {
        iv_out.copy_from_slice(&data[data.len() - AES_BLOCK..]);
    } else {
        iv_out.copy_from_slice(&state);
    }
    iv_out
}

/// Encrypts or decrypts `data` in place with AES-CFB; returns the chaining value (ivOut).
/// `key` must be 16, 24 or 32 octets (checked by the callers' key size validation).
pub fn aes_cfb(
    key: &[u8],
    iv: &[u8; AES_BLOCK],
    data: &mut [u8],
    encrypt: bool,
) -> [u8; AES_BLOCK] {
    match key.len() {
        16 => cfb::<aes::Aes128>(key, iv, data, encrypt),
        24 => cfb::<aes::Aes192>(key, iv, data, encrypt),
        _ => cfb::<aes::Aes256>(key, iv, data, encrypt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> alloc::vec::Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    // NIST SP800-38A F.3.13 CFB128-AES128.Encrypt, first two blocks.
    #[test]
    fn cfb128_nist_vector() {
        let key = hex("2b7e151628aed2a6abf7158809cf4f3c");
        let iv: [u8; 16] = hex("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
        let mut data = hex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
        let iv_out = aes_cfb(&key, &iv, &mut data, true);
        let ct = hex("3b3fd92eb72dad20333449f8e83cfb4ac8a64537a0b3a93fcde3cdad9f1ce58b");
        assert_eq!(data, ct);
        assert_eq!(iv_out[..], ct[16..]);
        let iv_back = aes_cfb(&key, &iv, &mut data, false);
        assert_eq!(iv_back, iv_out);
        assert_eq!(data, hex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"));
    }

    #[test]
    fn partial_block_chaining_continues_the_stream() {
        let key = [7u8; 32];
        let iv = [1u8; 16];
        let mut whole = [0x5Au8; 40];
        aes_cfb(&key, &iv, &mut whole, true);
        // Encrypting the first 16 octets then the rest with ivOut gives the same stream.
        let mut first = [0x5Au8; 16];
        let iv2 = aes_cfb(&key, &iv, &mut first, true);
        let mut rest = [0x5Au8; 24];
        aes_cfb(&key, &iv2, &mut rest, true);
        assert_eq!(first[..], whole[..16]);
        assert_eq!(rest[..], whole[16..]);
    }
}
