//! The optional SNP ID block: the expected launch digest signed with an
//! ECDSA P-384 ID key, so an SNP host refuses a tampered image at
//! LAUNCH_FINISH ("bad measurement").
//!
//! The firmware checks the signature over the 96-byte ID block
//! (snp-svsm.md §9.4): LD[48], FAMILY_ID[16], IMAGE_ID[16], VERSION u32
//! (= 1), GUEST_SVN u32, POLICY u64. QEMU and our launcher rebuild that
//! block from the IGVM `SnpIdBlock` directive and the guest policy, so the
//! policy signed here must be the file's. Signature components and key
//! coordinates are stored little endian, zero-padded to 72 bytes.

use std::path::Path;

use anyhow::{Context, Result};
use igvm::IgvmDirectiveHeader;
use igvm_defs::{IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY, IGVM_VHS_SNP_ID_BLOCK_SIGNATURE};
use p384::ecdsa::signature::Signer;
use p384::ecdsa::{Signature, SigningKey};
use p384::elliptic_curve::sec1::ToSec1Point;
use p384::pkcs8::DecodePrivateKey;

/// FAMILY_ID of our images (16 bytes, zero-padded ASCII).
pub const FAMILY_ID: [u8; 16] = *b"rust-svsm\0\0\0\0\0\0\0";
/// IMAGE_ID of our images.
pub const IMAGE_ID: [u8; 16] = *b"svsm-igvm\0\0\0\0\0\0\0";
/// ID block VERSION (the only one defined).
pub const ID_BLOCK_VERSION: u32 = 1;
/// The guest SVN of our images.
pub const GUEST_SVN: u32 = 0;
/// ID_KEY_ALGO / AUTHOR_KEY_ALGO value for ECDSA P-384 with SHA-384.
pub const ECDSA_P384_SHA384: u32 = 1;
/// Curve value for P-384 in the public-key structure.
pub const CURVE_P384: u32 = 2;

/// Reads a P-384 private key from a PEM file (PKCS#8 "PRIVATE KEY" or
/// SEC1 "EC PRIVATE KEY", as `openssl genpkey`/`ecparam` write them).
pub fn load_key(path: &Path) -> Result<SigningKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("reading the ID key {}", path.display()))?;
    if let Ok(key) = SigningKey::from_pkcs8_pem(&pem) {
        return Ok(key);
    }
    let secret = p384::SecretKey::from_sec1_pem(&pem).map_err(|_| {
        anyhow::anyhow!(
            "{} is not a P-384 private key in PEM (create one with \
             `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out key.pem`)",
            path.display()
        )
    })?;
    Ok(SigningKey::from(secret))
}

/// The 96-byte ID block the firmware verifies.
pub fn id_block_bytes(ld: &[u8; 48], policy: u64) -> [u8; 96] {
    let mut block = [0u8; 96];
    block[0..48].copy_from_slice(ld);
    block[48..64].copy_from_slice(&FAMILY_ID);
    block[64..80].copy_from_slice(&IMAGE_ID);
    block[80..84].copy_from_slice(&ID_BLOCK_VERSION.to_le_bytes());
    block[84..88].copy_from_slice(&GUEST_SVN.to_le_bytes());
    block[88..96].copy_from_slice(&policy.to_le_bytes());
    block
}

/// A big-endian field element as the firmware's 72-byte little-endian form.
fn little_endian_72(big_endian: &[u8]) -> [u8; 72] {
    let mut out = [0u8; 72];
    for (dst, src) in out.iter_mut().zip(big_endian.iter().rev()) {
        *dst = *src;
    }
    out
}

/// The signed `SnpIdBlock` directive for launch digest `ld`.
pub fn directive(
    key: &SigningKey,
    ld: &[u8; 48],
    policy: u64,
    snp_mask: u32,
) -> IgvmDirectiveHeader {
    let signature: Signature = key.sign(&id_block_bytes(ld, policy));
    let (r, s) = signature.split_bytes();
    let point = key.verifying_key().as_affine().to_sec1_point(false);
    let x = point.x().expect("an uncompressed point has x");
    let y = point.y().expect("an uncompressed point has y");
    IgvmDirectiveHeader::SnpIdBlock {
        compatibility_mask: snp_mask,
        author_key_enabled: 0,
        reserved: [0; 3],
        ld: *ld,
        family_id: FAMILY_ID,
        image_id: IMAGE_ID,
        version: ID_BLOCK_VERSION,
        guest_svn: GUEST_SVN,
        id_key_algorithm: ECDSA_P384_SHA384,
        author_key_algorithm: 0,
        id_key_signature: Box::new(IGVM_VHS_SNP_ID_BLOCK_SIGNATURE {
            r_comp: little_endian_72(&r),
            s_comp: little_endian_72(&s),
        }),
        id_public_key: Box::new(IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY {
            curve: CURVE_P384,
            reserved: 0,
            qx: little_endian_72(x),
            qy: little_endian_72(y),
        }),
        author_key_signature: Box::new(IGVM_VHS_SNP_ID_BLOCK_SIGNATURE {
            r_comp: [0; 72],
            s_comp: [0; 72],
        }),
        author_public_key: Box::new(IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY {
            curve: 0,
            reserved: 0,
            qx: [0; 72],
            qy: [0; 72],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p384::ecdsa::VerifyingKey;
    use p384::ecdsa::signature::Verifier;

    /// A fixed test key (the scalar 1..48), so the test is deterministic.
    pub fn test_key() -> SigningKey {
        let scalar: Vec<u8> = (1..=48).collect();
        SigningKey::from_slice(&scalar).unwrap()
    }

    #[test]
    fn id_block_layout() {
        let block = id_block_bytes(&[0xAA; 48], 0x30000);
        assert!(block[..48].iter().all(|&b| b == 0xAA));
        assert_eq!(&block[48..57], b"rust-svsm");
        assert_eq!(&block[80..96], &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn little_endian_padding() {
        let out = little_endian_72(&[1, 2, 3]);
        assert_eq!(&out[..4], &[3, 2, 1, 0]);
        assert!(out[3..].iter().all(|&b| b == 0));
    }

    /// The stored signature and key, turned back into big-endian form,
    /// verify over the ID block; a changed digest does not.
    #[test]
    fn signature_verifies_from_the_stored_form() {
        let key = test_key();
        let ld = [0x42; 48];
        let IgvmDirectiveHeader::SnpIdBlock { id_key_signature, id_public_key, .. } =
            directive(&key, &ld, 0x30000, 1)
        else {
            panic!("not an ID block")
        };
        let big = |le: &[u8; 72]| -> Vec<u8> { le[..48].iter().rev().copied().collect() };
        assert!(id_key_signature.r_comp[48..].iter().all(|&b| b == 0));
        let mut sig = big(&id_key_signature.r_comp);
        sig.extend(big(&id_key_signature.s_comp));
        let signature = Signature::from_slice(&sig).unwrap();
        let mut point = vec![4u8];
        point.extend(big(&id_public_key.qx));
        point.extend(big(&id_public_key.qy));
        let verifying = VerifyingKey::from_sec1_bytes(&point).unwrap();
        assert_eq!(&verifying, key.verifying_key());
        assert_eq!(id_public_key.curve, 2);
        verifying.verify(&id_block_bytes(&ld, 0x30000), &signature).unwrap();
        assert!(verifying.verify(&id_block_bytes(&[0x43; 48], 0x30000), &signature).is_err());
    }

    #[test]
    fn loads_pem_keys_and_names_bad_ones() {
        let dir = std::env::temp_dir().join(format!("xtask-idkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("key.pem");
        let pem =
            p384::pkcs8::EncodePrivateKey::to_pkcs8_pem(&test_key(), Default::default()).unwrap();
        std::fs::write(&good, pem.as_bytes()).unwrap();
        assert_eq!(load_key(&good).unwrap(), test_key());
        let bad = dir.join("bad.pem");
        std::fs::write(&bad, "not a key").unwrap();
        assert!(load_key(&bad).unwrap_err().to_string().contains("not a P-384 private key"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
