//! Cryptographic primitives the engine uses, wrapped in TPM terms (algorithm IDs, TPM_RC
//! errors). All of it is RustCrypto (0.11 generation) except the TPM KDFs, the DRBGs and the
//! BN_P256 curve (on crypto-bigint).

pub mod bn_p256;
pub mod drbg;
pub mod ecc;
pub mod hash;
pub mod kdf;
pub mod rsa;
pub mod sym;
