//! RSA_Encrypt, RSA_Decrypt, ECDH_KeyGen, ECDH_ZGen, ECC_Parameters.

use alloc::vec::Vec;

use crate::constants::*;
use crate::crypto::ecc::{self, Curve, Point};
use crate::crypto::rsa::{self, RsaEncScheme};
use crate::dispatch::Cmd;
use crate::marshal::Reader;
use crate::object::Object;
use crate::rc::*;
use crate::state::Tpm;
use crate::types::*;

use super::end;

/// An unrestricted RSA decryption key and the encryption scheme to use with it.
fn rsa_scheme(key: &Object, requested: Scheme) -> TpmResult<RsaEncScheme> {
    if key.public.kind != TPM_ALG_RSA {
        return Err(at_handle(TPM_RC_KEY, 1));
    }
    if !key.public.has(OA_DECRYPT) || key.public.has(OA_RESTRICTED) {
        return Err(at_handle(TPM_RC_ATTRIBUTES, 1));
    }
    let own = key.public.scheme();
    let scheme = match (own.is_null(), requested.is_null()) {
        (false, false) if own != requested => return Err(at_param(TPM_RC_SCHEME, 2)),
        (false, _) => own,
        (true, _) => requested,
    };
    Ok(match (scheme.alg, scheme.hash) {
        (TPM_ALG_OAEP, Some(h)) => RsaEncScheme::Oaep(h),
        (TPM_ALG_RSAES, _) => RsaEncScheme::Rsaes,
        (TPM_ALG_NULL, _) => RsaEncScheme::Raw,
        _ => return Err(at_param(TPM_RC_SCHEME, 2)),
    })
}

fn parse_label(r: &mut Reader) -> TpmResult<Vec<u8>> {
    let label = r.tpm2b(64).param(3)?.to_vec();
    if !label.is_empty() && label.last() != Some(&0) {
        return Err(at_param(TPM_RC_VALUE, 3));
    }
    Ok(label)
}

/// TPM2_RSA_Encrypt.
pub fn rsa_encrypt(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let msg = r.tpm2b(MAX_RSA_KEY_BYTES).param(1)?.to_vec();
    let requested = Scheme::parse_rsa_decrypt(r).param(2)?;
    let label = parse_label(r)?;
    end(r)?;
    let key = tpm.object(c.client, c.handles[0])?.shallow_with_keys();
    let scheme = rsa_scheme(&key, requested)?;
    let public = key.rsa_public.as_deref().ok_or(at_handle(TPM_RC_KEY, 1))?;
    let mut rng = tpm.rng();
    let out = rsa::encrypt(&mut rng, public, scheme, &label, &msg).param(1)?;
    c.out.tpm2b(&out);
    Ok(())
}

/// TPM2_RSA_Decrypt.
pub fn rsa_decrypt(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let ct = r.tpm2b(MAX_RSA_KEY_BYTES).param(1)?.to_vec();
    let requested = Scheme::parse_rsa_decrypt(r).param(2)?;
    let label = parse_label(r)?;
    end(r)?;
    let key = tpm.object(c.client, c.handles[0])?.shallow_with_keys();
    let scheme = rsa_scheme(&key, requested)?;
    let private = key.rsa_private.as_deref().ok_or(at_handle(TPM_RC_KEY, 1))?;
    let mut rng = tpm.rng();
    let out = rsa::decrypt(&mut rng, private, scheme, &label, &ct).param(1)?;
    c.out.tpm2b(&out);
    Ok(())
}

fn ecc_key(key: &Object) -> TpmResult<Curve> {
    match &key.public.params {
        PublicParams::Ecc { curve, .. } => Ok(*curve),
        _ => Err(at_handle(TPM_RC_KEY, 1)),
    }
}

/// TPM2_ECDH_KeyGen: an ephemeral key pair and the shared point with `keyHandle`'s public key.
pub fn ecdh_keygen(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    let key = tpm.object(c.client, c.handles[0])?;
    let curve = ecc_key(key)?;
    if !key.public.has(OA_DECRYPT) {
        return Err(at_handle(TPM_RC_KEY, 1));
    }
    let q = key.public.ecc_point().ok_or(at_handle(TPM_RC_KEY, 1))?;
    let rng = tpm.rng();
    let (d, qe) = ecc::generate(curve, |b| rng.0.generate(b));
    let z = ecc::multiply(curve, &d, &q).handle(1)?;
    write_ecc_point_2b(&mut c.out, &z);
    write_ecc_point_2b(&mut c.out, &qe);
    Ok(())
}

/// TPM2_ECDH_ZGen.
pub fn ecdh_zgen(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let p = parse_ecc_point_2b(r).param(1)?;
    end(r)?;
    let key = tpm.object(c.client, c.handles[0])?;
    let curve = ecc_key(key)?;
    if !key.public.has(OA_DECRYPT) || key.public.has(OA_RESTRICTED) {
        return Err(at_handle(TPM_RC_ATTRIBUTES, 1));
    }
    let scheme = key.public.scheme();
    if !scheme.is_null() && scheme.alg != TPM_ALG_ECDH {
        return Err(at_handle(TPM_RC_SCHEME, 1));
    }
    let d = &key.sensitive.as_ref().ok_or(at_handle(TPM_RC_KEY, 1))?.secret;
    let z = ecc::multiply(curve, d, &Point { x: p.x, y: p.y }).param(1)?;
    write_ecc_point_2b(&mut c.out, &z);
    Ok(())
}

/// TPM2_ECC_Parameters.
pub fn ecc_parameters(_tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let curve = Curve::from_id(r.u16().param(1)?).ok_or(at_param(TPM_RC_CURVE, 1))?;
    end(r)?;
    c.out.u16(curve.id()).u16(curve.key_bits());
    Scheme::NULL.write(&mut c.out);
    Scheme::NULL.write(&mut c.out);
    for v in ecc::parameters(curve) {
        let bytes: Vec<u8> = (0..v.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&v[i..i + 2], 16).expect("constant hex"))
            .collect();
        c.out.tpm2b(&bytes);
    }
    Ok(())
}
