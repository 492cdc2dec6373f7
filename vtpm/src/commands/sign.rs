//! Sign and VerifySignature, and the signing helper the attestation commands share.

use subtle::ConstantTimeEq;

use crate::constants::*;
use crate::crypto::ecc;
use crate::crypto::hash::{hash, hmac};
use crate::crypto::rsa::{self, RsaSigScheme};
use crate::dispatch::Cmd;
use crate::marshal::Reader;
use crate::object::Object;
use crate::rc::*;
use crate::state::Tpm;
use crate::types::*;

use super::end;

/// The scheme to sign with: the key's own scheme, or the caller's if the key has none
/// (TPM_RC_SCHEME if they conflict or do not fit the key type).
pub(crate) fn resolve_scheme(key: &Object, requested: Scheme) -> TpmResult<Scheme> {
    let own = key.public.scheme();
    let scheme = match (own.is_null(), requested.is_null()) {
        (true, true) => return Err(TPM_RC_SCHEME),
        (true, false) => requested,
        (false, true) => own,
        // The caller's ECDAA count selects the commit.
        (false, false) if own.same_as(&requested) => requested,
        _ => return Err(TPM_RC_SCHEME),
    };
    let fits = match key.public.kind {
        TPM_ALG_RSA => matches!(scheme.alg, TPM_ALG_RSASSA | TPM_ALG_RSAPSS),
        TPM_ALG_ECC => matches!(scheme.alg, TPM_ALG_ECDSA | TPM_ALG_ECDAA),
        TPM_ALG_KEYEDHASH => scheme.alg == TPM_ALG_HMAC,
        _ => false,
    };
    if fits { Ok(scheme) } else { Err(TPM_RC_SCHEME) }
}

/// Checks that `key` may sign (has its private part and the sign attribute).
pub(crate) fn check_signing_key(key: &Object) -> TpmResult<()> {
    if key.sensitive.is_none()
        || !matches!(key.public.kind, TPM_ALG_RSA | TPM_ALG_ECC | TPM_ALG_KEYEDHASH)
    {
        return Err(TPM_RC_KEY);
    }
    if !key.public.has(OA_SIGN) {
        return Err(TPM_RC_KEY);
    }
    Ok(())
}

impl Tpm {
    /// Signs `digest` with `key` under `scheme` (already resolved).
    pub(crate) fn sign_digest(
        &mut self,
        key: &Object,
        scheme: Scheme,
        digest: &[u8],
    ) -> TpmResult<Signature> {
        let h = scheme.hash.ok_or(TPM_RC_SCHEME)?;
        let secret = &key.sensitive.as_ref().ok_or(TPM_RC_KEY)?.secret;
        Ok(match (scheme.alg, &key.public.params) {
            (TPM_ALG_HMAC, _) => Signature::Hmac { hash: h, digest: hmac(h, secret, &[digest]) },
            (TPM_ALG_ECDSA, PublicParams::Ecc { curve, .. }) => {
                let mut rng = self.rng();
                let (r, s) = ecc::sign(&mut rng, *curve, secret, digest)?;
                Signature::Ecc { scheme: TPM_ALG_ECDSA, hash: h, r, s }
            }
            (TPM_ALG_ECDAA, PublicParams::Ecc { curve, .. }) => {
                let r = self.take_commit(key, *curve, scheme.count)?;
                // Anonymous signature: R = nonceK, S = r + H(nonceK || digest) * d mod n.
                let nonce_k = loop {
                    let candidate = self.random_vec(curve.size());
                    if let Some(k) = ecc::reduce(*curve, &candidate) {
                        break k;
                    }
                };
                let t = hash(h, &[&nonce_k, digest]);
                let s = ecc::ecdaa_s(*curve, secret, &r, &t)?;
                Signature::Ecc { scheme: TPM_ALG_ECDAA, hash: h, r: nonce_k.to_vec(), s }
            }
            (TPM_ALG_RSASSA | TPM_ALG_RSAPSS, PublicParams::Rsa { .. }) => {
                let private = key.rsa_private.as_deref().ok_or(TPM_RC_KEY)?;
                let s = if scheme.alg == TPM_ALG_RSASSA {
                    RsaSigScheme::Rsassa(h)
                } else {
                    RsaSigScheme::Rsapss(h)
                };
                let mut rng = self.rng();
                Signature::Rsa {
                    scheme: scheme.alg,
                    hash: h,
                    sig: rsa::sign(&mut rng, private, s, digest)?,
                }
            }
            _ => return Err(TPM_RC_SCHEME),
        })
    }

    /// Signs an attestation structure: the message is hashed with the scheme's hash.
    pub(crate) fn sign_message(
        &mut self,
        key: &Object,
        scheme: Scheme,
        message: &[u8],
    ) -> TpmResult<Signature> {
        let h = scheme.hash.ok_or(TPM_RC_SCHEME)?;
        let digest = hash(h, &[message]);
        self.sign_digest(key, scheme, &digest)
    }
}

/// Verifies `sig` over `digest` with `key`'s public part.
pub(crate) fn verify(key: &Object, digest: &[u8], sig: &Signature) -> TpmResult<bool> {
    Ok(match (sig, &key.public.params) {
        (Signature::Rsa { scheme, hash, sig }, PublicParams::Rsa { .. }) => {
            let public = key.rsa_public.as_deref().ok_or(TPM_RC_KEY)?;
            let s = if *scheme == TPM_ALG_RSASSA {
                RsaSigScheme::Rsassa(*hash)
            } else {
                RsaSigScheme::Rsapss(*hash)
            };
            digest.len() == hash.size() && rsa::verify(public, s, digest, sig)
        }
        (Signature::Ecc { scheme: TPM_ALG_ECDSA, r, s, .. }, PublicParams::Ecc { curve, .. }) => {
            let q = key.public.ecc_point().ok_or(TPM_RC_KEY)?;
            ecc::verify(*curve, &q, digest, r, s)
        }
        (Signature::Hmac { hash, digest: mac }, PublicParams::KeyedHash { .. }) => {
            let secret = &key.sensitive.as_ref().ok_or(TPM_RC_KEY)?.secret;
            bool::from(hmac(*hash, secret, &[digest]).ct_eq(mac))
        }
        _ => return Err(TPM_RC_SCHEME),
    })
}

/// TPM2_Sign.
pub fn sign(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let digest = r.tpm2b(64).param(1)?.to_vec();
    let requested = Scheme::parse_sig(r).param(2)?;
    let ticket = Ticket::parse(r, &[TPM_ST_HASHCHECK]).param(3)?;
    end(r)?;
    let key = tpm.object(c.client, c.handles[0])?.shallow_with_keys();
    check_signing_key(&key).handle(1)?;
    let scheme = resolve_scheme(&key, requested).param(2)?;
    let h = scheme.hash.ok_or(at_param(TPM_RC_SCHEME, 2))?;
    if digest.len() != h.size() {
        return Err(at_param(TPM_RC_SIZE, 1));
    }
    if key.public.has(OA_RESTRICTED) {
        let expect = tpm.hash_ticket(ticket.hierarchy, h, &digest, true);
        if ticket.hierarchy == TPM_RH_NULL || !bool::from(expect.digest.ct_eq(&ticket.digest)) {
            return Err(at_param(TPM_RC_TICKET, 3));
        }
    }
    let sig = tpm.sign_digest(&key, scheme, &digest)?;
    sig.write(&mut c.out);
    Ok(())
}

/// TPM2_VerifySignature.
pub fn verify_signature(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let digest = r.tpm2b(64).param(1)?.to_vec();
    let sig = Signature::parse(r).param(2)?;
    end(r)?;
    let key = tpm.object(c.client, c.handles[0])?;
    if !key.public.has(OA_SIGN) {
        return Err(at_handle(TPM_RC_ATTRIBUTES, 1));
    }
    if !verify(key, &digest, &sig).param(2)? {
        return Err(at_param(TPM_RC_SIGNATURE, 2));
    }
    let ticket = match key.public.name_alg {
        Some(alg) if key.hierarchy != TPM_RH_NULL => Ticket {
            tag: TPM_ST_VERIFIED,
            hierarchy: key.hierarchy,
            digest: hmac(
                alg,
                tpm.proof(key.hierarchy),
                &[&TPM_ST_VERIFIED.to_be_bytes(), &digest, &key.name],
            ),
        },
        _ => Ticket::null(TPM_ST_VERIFIED),
    };
    ticket.write(&mut c.out);
    Ok(())
}
