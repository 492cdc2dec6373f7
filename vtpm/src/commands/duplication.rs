//! Credential protection (MakeCredential, ActivateCredential) and duplication (Duplicate,
//! Import), Part 1 §23-24: a seed shared with an asymmetric key by RSA-OAEP or ECDH+KDFe, and
//! the storage wrapping of object.rs.

use alloc::vec::Vec;
use zeroize::Zeroizing;

use crate::constants::*;
use crate::crypto::ecc::{self, Point};
use crate::crypto::hash::{HashAlg, hash};
use crate::crypto::kdf::kdfe;
use crate::crypto::rsa::{self, RsaEncScheme};
use crate::crypto::sym::{AES_BLOCK, aes_cfb};
use crate::dispatch::Cmd;
use crate::marshal::{Reader, to_vec};
use crate::object::*;
use crate::rc::*;
use crate::state::Tpm;
use crate::types::*;

use super::end;
use super::session::decrypt_secret;

/// Creates a fresh seed for `key` and its encryption (TPM2B_ENCRYPTED_SECRET contents).
fn encrypt_seed(
    tpm: &mut Tpm,
    key: &Object,
    label: &[u8],
) -> TpmResult<(Zeroizing<Vec<u8>>, Vec<u8>)> {
    let name_alg = key.name_alg()?;
    match &key.public.params {
        PublicParams::Rsa { .. } => {
            let seed = Zeroizing::new(tpm.random_vec(name_alg.size()));
            let public = key.rsa_public.as_deref().ok_or(TPM_RC_KEY)?;
            let mut l = label.to_vec();
            l.push(0);
            let mut rng = tpm.rng();
            let secret = rsa::encrypt(&mut rng, public, RsaEncScheme::Oaep(name_alg), &l, &seed)?;
            Ok((seed, secret))
        }
        PublicParams::Ecc { curve, .. } => {
            let qs = key.public.ecc_point().ok_or(TPM_RC_KEY)?;
            let rng = tpm.rng();
            let (d, qe) = ecc::generate(*curve, |b| rng.0.generate(b));
            let z = ecc::multiply(*curve, &d, &qs)?;
            let sx = ecc::pad(&qs.x, curve.size()).ok_or(TPM_RC_KEY)?;
            let seed = kdfe(name_alg, &z.x, label, &qe.x, &sx, (name_alg.size() * 8) as u32);
            let secret = to_vec(|w| {
                w.tpm2b(&qe.x).tpm2b(&qe.y);
            });
            let _ = Point { x: Vec::new(), y: Vec::new() };
            Ok((seed, secret))
        }
        _ => Err(TPM_RC_KEY),
    }
}

/// A restricted decryption (storage) key with an asymmetric type and AES protection.
fn protector(key: &Object) -> TpmResult<u16> {
    if !matches!(key.public.kind, TPM_ALG_RSA | TPM_ALG_ECC) {
        return Err(TPM_RC_KEY);
    }
    if !key.public.has(OA_RESTRICTED) || !key.public.has(OA_DECRYPT) {
        return Err(TPM_RC_TYPE);
    }
    match key.public.sym() {
        SymDef::Aes(bits) => Ok(bits),
        _ => Err(TPM_RC_TYPE),
    }
}

/// TPM2_MakeCredential.
pub fn make_credential(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let credential = r.tpm2b(64).param(1)?.to_vec();
    let name = r.tpm2b(2 + 64).param(2)?.to_vec();
    end(r)?;
    let key = tpm.object(c.client, c.handles[0])?.shallow_with_keys();
    let bits = protector(&key).handle(1)?;
    let alg = key.name_alg()?;
    if credential.len() > alg.size() {
        return Err(at_param(TPM_RC_SIZE, 1));
    }
    let (seed, secret) = encrypt_seed(tpm, &key, b"IDENTITY")?;
    let blob = wrap(alg, &seed, bits, &name, &credential);
    c.out.tpm2b(&blob).tpm2b(&secret);
    Ok(())
}

/// TPM2_ActivateCredential.
pub fn activate_credential(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let blob = r.tpm2b(u16::MAX as usize).param(1)?.to_vec();
    let secret = r.tpm2b(u16::MAX as usize).param(2)?.to_vec();
    end(r)?;
    let name = tpm.object(c.client, c.handles[0])?.name.clone();
    let key = tpm.object(c.client, c.handles[1])?.shallow_with_keys();
    let bits = protector(&key).handle(2)?;
    let seed = decrypt_secret(tpm, &key, b"IDENTITY", &secret).param(2)?;
    let cred = unwrap(key.name_alg()?, &seed, bits, &name, &blob).param(1)?;
    c.out.tpm2b(&cred);
    Ok(())
}

/// The inner wrapper: CFB(key, 0, TPM2B(H(sensitive || name)) || sensitive).
fn inner_wrap(alg: HashAlg, key: &[u8], name: &[u8], sensitive_2b: &[u8]) -> Vec<u8> {
    let integrity = hash(alg, &[sensitive_2b, name]);
    let mut data = to_vec(|w| {
        w.tpm2b(&integrity).bytes(sensitive_2b);
    });
    aes_cfb(key, &[0u8; AES_BLOCK], &mut data, true);
    data
}

/// TPM2_Duplicate.
pub fn duplicate(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let key_in = r.tpm2b(32).param(1)?.to_vec();
    let sym = SymDef::parse(r, true, true).param(2)?;
    end(r)?;
    let obj = tpm.object(c.client, c.handles[0])?.shallow();
    if obj.public.has(OA_FIXED_PARENT) {
        return Err(at_handle(TPM_RC_ATTRIBUTES, 1));
    }
    let new_parent = c.handles[1];
    if obj.public.has(OA_ENCRYPTED_DUPLICATION) {
        if new_parent == TPM_RH_NULL {
            return Err(at_handle(TPM_RC_HIERARCHY, 2));
        }
        if sym == SymDef::Null {
            return Err(at_param(TPM_RC_SYMMETRIC, 2));
        }
    }
    let alg = obj.name_alg()?;
    let s = obj.sensitive.as_ref().ok_or(at_handle(TPM_RC_KEY, 1))?;
    let sensitive_2b = Zeroizing::new(to_vec(|w| {
        w.sized(|w| s.write(w, obj.public.kind));
    }));
    let mut key_out = Vec::new();
    let dup_sensitive = match sym {
        SymDef::Aes(bits) => {
            let kb = usize::from(bits / 8);
            let key = if key_in.is_empty() {
                key_out = tpm.random_vec(kb);
                key_out.clone()
            } else if key_in.len() == kb {
                key_in
            } else {
                return Err(at_param(TPM_RC_SIZE, 1));
            };
            inner_wrap(alg, &key, &obj.name, &sensitive_2b)
        }
        _ => sensitive_2b.to_vec(),
    };
    let (dup, seed_out) = if new_parent == TPM_RH_NULL {
        (dup_sensitive, Vec::new())
    } else {
        let parent = tpm.object(c.client, new_parent)?.shallow_with_keys();
        let bits = protector(&parent).handle(2)?;
        let (seed, secret) = encrypt_seed(tpm, &parent, b"DUPLICATE")?;
        (wrap_raw(parent.name_alg()?, &seed, bits, &obj.name, &dup_sensitive), secret)
    };
    c.out.tpm2b(&key_out).tpm2b(&dup).tpm2b(&seed_out);
    Ok(())
}

/// TPM2_Import.
pub fn import(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let key = r.tpm2b(32).param(1)?.to_vec();
    let (public, _) = Public::parse_2b(r).param(2)?;
    let dup = r.tpm2b(u16::MAX as usize).param(3)?.to_vec();
    let seed_secret = r.tpm2b(u16::MAX as usize).param(4)?.to_vec();
    let sym = SymDef::parse(r, true, true).param(5)?;
    end(r)?;
    let parent = tpm.object(c.client, c.handles[0])?.shallow_with_keys();
    if !parent.is_storage_parent() {
        return Err(at_handle(TPM_RC_TYPE, 1));
    }
    if public.has(OA_FIXED_TPM) || public.has(OA_FIXED_PARENT) {
        return Err(at_param(TPM_RC_ATTRIBUTES, 2));
    }
    validate_public(&public, Some(&parent.public)).param(2)?;
    validate_loaded_key(&public).param(2)?;
    let alg = public.name_alg.ok_or(at_param(TPM_RC_HASH, 2))?;
    let name = compute_name(&public);
    if public.has(OA_ENCRYPTED_DUPLICATION) && (seed_secret.is_empty() || sym == SymDef::Null) {
        return Err(at_param(TPM_RC_ATTRIBUTES, 2));
    }
    let dup_sensitive = if seed_secret.is_empty() {
        Zeroizing::new(dup)
    } else {
        let bits = protector(&parent).handle(1)?;
        let seed = decrypt_secret(tpm, &parent, b"DUPLICATE", &seed_secret).param(4)?;
        unwrap_raw(parent.name_alg()?, &seed, bits, &name, &dup).param(3)?
    };
    let sensitive_2b = match sym {
        SymDef::Aes(bits) => {
            if key.len() != usize::from(bits / 8) {
                return Err(at_param(TPM_RC_SIZE, 1));
            }
            let mut plain = dup_sensitive.to_vec();
            aes_cfb(&key, &[0u8; AES_BLOCK], &mut plain, false);
            let mut pr = Reader::new(&plain);
            let integrity = pr.tpm2b(64).map_err(|_| at_param(TPM_RC_INTEGRITY, 3))?.to_vec();
            let rest = pr.rest().to_vec();
            if hash(alg, &[&rest, &name]) != integrity {
                return Err(at_param(TPM_RC_INTEGRITY, 3));
            }
            Zeroizing::new(rest)
        }
        _ => dup_sensitive,
    };
    let sensitive_bytes = untpm2b(&sensitive_2b).param(3)?;
    let mut sr = Reader::new(&sensitive_bytes);
    let sensitive =
        Sensitive::parse(&mut sr, public.kind).map_err(|_| at_param(TPM_RC_SENSITIVE, 3))?;
    let obj = Object::new(
        public.clone(),
        Some(sensitive.clone()),
        parent.hierarchy,
        &parent.qualified_name,
    )
    .param(3)?;
    obj.check_binding().param(3)?;
    let private = protect(&parent, &name, public.kind, &sensitive)?;
    c.out.tpm2b(&private);
    Ok(())
}
