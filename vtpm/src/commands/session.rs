//! TPM2_StartAuthSession: unsalted, RSA-OAEP- or ECDH-salted, bound or unbound HMAC, policy and
//! trial sessions (Part 1 §19.6).

use alloc::boxed::Box;
use alloc::vec::Vec;
use zeroize::Zeroizing;

use crate::constants::*;
use crate::crypto::ecc::{self, Point};
use crate::crypto::kdf::{kdfa, kdfe};
use crate::crypto::rsa::{self, RsaEncScheme};
use crate::dispatch::Cmd;
use crate::marshal::Reader;
use crate::object::{Object, trim_auth};
use crate::rc::*;
use crate::session::{Session, SessionKind, SessionSlot};
use crate::state::{MAX_ACTIVE_SESSIONS, MAX_LOADED_SESSIONS, Tpm};
use crate::types::*;

use super::end;

/// Recovers a secret sent to `key` (salt, credential seed, import seed): RSA-OAEP with the
/// key's nameAlg and `label`, or ECDH + KDFe(`label`) with an ephemeral point.
pub(crate) fn decrypt_secret(
    tpm: &mut Tpm,
    key: &Object,
    label: &[u8],
    secret: &[u8],
) -> TpmResult<Zeroizing<Vec<u8>>> {
    let name_alg = key.name_alg()?;
    if !key.public.has(OA_DECRYPT) {
        return Err(TPM_RC_ATTRIBUTES);
    }
    match &key.public.params {
        PublicParams::Rsa { .. } => {
            let private = key.rsa_private.as_deref().ok_or(TPM_RC_KEY)?;
            let mut l = label.to_vec();
            if l.last() != Some(&0) {
                l.push(0);
            }
            let mut rng = tpm.rng();
            rsa::decrypt(&mut rng, private, RsaEncScheme::Oaep(name_alg), &l, secret).map_err(
                |rc| {
                    if rc == TPM_RC_SIZE { TPM_RC_SIZE } else { TPM_RC_VALUE }
                },
            )
        }
        PublicParams::Ecc { curve, .. } => {
            let mut r = Reader::new(secret);
            let x = r.tpm2b(MAX_ECC_KEY_BYTES).map_err(|_| TPM_RC_SIZE)?;
            let y = r.tpm2b(MAX_ECC_KEY_BYTES).map_err(|_| TPM_RC_SIZE)?;
            if !r.is_empty() {
                return Err(TPM_RC_SIZE);
            }
            let qe = Point { x: x.to_vec(), y: y.to_vec() };
            let d = &key.sensitive.as_ref().ok_or(TPM_RC_KEY)?.secret;
            let z = ecc::multiply(*curve, d, &qe)?;
            let qs = key.public.ecc_point().ok_or(TPM_RC_KEY)?;
            let size = curve.size();
            let ex = ecc::pad(&qe.x, size).ok_or(TPM_RC_ECC_POINT)?;
            let sx = ecc::pad(&qs.x, size).ok_or(TPM_RC_KEY)?;
            Ok(kdfe(name_alg, &z.x, label, &ex, &sx, (name_alg.size() * 8) as u32))
        }
        _ => Err(TPM_RC_KEY),
    }
}

/// TPM2_StartAuthSession.
pub fn start_auth_session(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let nonce_caller = r.tpm2b(64).param(1)?.to_vec();
    let salt_secret = r.tpm2b(u16::MAX as usize).param(2)?.to_vec();
    let kind = match r.u8().param(3)? {
        TPM_SE_HMAC => SessionKind::Hmac,
        TPM_SE_POLICY => SessionKind::Policy,
        TPM_SE_TRIAL => SessionKind::Trial,
        _ => return Err(at_param(TPM_RC_VALUE, 3)),
    };
    let symmetric = SymDef::parse(r, false, true).param(4)?;
    let auth_hash = parse_hash_required(r).param(5)?;
    end(r)?;
    if nonce_caller.len() < 16 || nonce_caller.len() > auth_hash.size() {
        return Err(at_param(TPM_RC_SIZE, 1));
    }
    let (tpm_key, bind) = (c.handles[0], c.handles[1]);
    let salt = if tpm_key == TPM_RH_NULL {
        if !salt_secret.is_empty() {
            return Err(at_param(TPM_RC_VALUE, 2));
        }
        Zeroizing::new(Vec::new())
    } else {
        let key = tpm.object(c.client, tpm_key).handle(1)?.shallow_with_keys();
        if key.sensitive.is_none() {
            return Err(at_handle(TPM_RC_KEY, 1));
        }
        decrypt_secret(tpm, &key, b"SECRET", &salt_secret).map_err(|rc| match rc {
            TPM_RC_ATTRIBUTES | TPM_RC_KEY => at_handle(rc, 1),
            rc => at_param(rc, 2),
        })?
    };
    let bind_info = if bind == TPM_RH_NULL {
        None
    } else {
        let e = tpm.entity_auth(c.client, bind).handle(2)?;
        Some((e.name.clone(), Zeroizing::new(trim_auth(&e.auth).to_vec())))
    };
    if tpm.loaded_sessions_of(c.client) >= MAX_LOADED_SESSIONS {
        return Err(TPM_RC_SESSION_MEMORY);
    }
    if tpm.sessions.len() >= MAX_ACTIVE_SESSIONS {
        return Err(TPM_RC_SESSION_HANDLES);
    }
    let mut session = Session::new(kind, auth_hash);
    session.nonce_tpm = tpm.random_vec(auth_hash.size());
    session.symmetric = symmetric;
    session.start_time = tpm.clock.time;
    let mut key_input =
        Zeroizing::new(bind_info.as_ref().map(|(_, a)| a.to_vec()).unwrap_or_default());
    key_input.extend_from_slice(&salt);
    if !key_input.is_empty() {
        session.session_key = kdfa(
            auth_hash,
            &key_input,
            b"ATH",
            &session.nonce_tpm,
            &nonce_caller,
            (auth_hash.size() * 8) as u32,
        );
    }
    session.bind = bind_info;
    let handle = tpm.new_session_handle(kind != SessionKind::Hmac);
    let nonce = session.nonce_tpm.clone();
    tpm.sessions
        .insert(handle, SessionSlot::Loaded { owner: c.client, session: Box::new(session) });
    c.out_handle = Some(handle);
    c.out.tpm2b(&nonce);
    Ok(())
}

impl Object {
    /// A copy including the cached RSA keys (for use while `tpm` is borrowed mutably).
    pub(crate) fn shallow_with_keys(&self) -> Object {
        let mut o = self.shallow();
        o.rsa_private = self.rsa_private.clone();
        o.rsa_public = self.rsa_public.clone();
        o
    }
}
