//! The authorization area: session parsing and consistency (Part 3 §5.5), authorization checks
//! with passwords, HMAC and policy sessions including dictionary-attack accounting (§5.6),
//! parameter decryption (§5.7), and the response's session area with response HMACs and
//! parameter encryption (Part 1 §19-21).

use alloc::vec::Vec;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::ClientId;
use crate::constants::*;
use crate::crypto::hash::{HashAlg, MAX_DIGEST_SIZE, hash, hmac};
use crate::crypto::kdf::kdfa;
use crate::crypto::sym::aes_cfb;
use crate::dispatch::{Cmd, NvAccess, Spec};
use crate::entity::{EntityAuth, EntityKind};
use crate::marshal::{Reader, Writer};
use crate::object::trim_auth;
use crate::rc::*;
use crate::session::{Session, SessionKind, SessionSlot};
use crate::state::Tpm;
use crate::types::SymDef;

/// Authorization role a command requires for a handle (Part 3 "@" decoration and Auth Role).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    NoAuth,
    User,
    Admin,
    Dup,
}

/// One session of the command's authorization area.
pub struct AuthEntry {
    pub handle: u32,
    pub nonce_caller: Vec<u8>,
    pub attrs: u8,
    pub hmac: Zeroizing<Vec<u8>>,
}

#[derive(Default)]
pub struct AuthArea {
    pub sessions: Vec<AuthEntry>,
}

/// Per-session state carried from authorization to the response.
struct SessionUse {
    handle: u32,
    attrs: u8,
    nonce_caller: Vec<u8>,
    /// The entity this session authorized, if any.
    entity: Option<u32>,
    /// sessionKey || authValue as used for the command (fallback for the response).
    key: Zeroizing<Vec<u8>>,
    policy: bool,
    /// The command's HMAC was empty (allowed with an empty HMAC key).
    empty_hmac: bool,
}

pub struct AuthState {
    uses: Vec<SessionUse>,
    decrypt: Option<usize>,
    encrypt: Option<usize>,
    cp_hashes: Vec<(HashAlg, Vec<u8>)>,
}

impl Tpm {
    pub(crate) fn session_loaded(&self, client: ClientId, h: u32) -> bool {
        matches!(self.sessions.get(&h), Some(SessionSlot::Loaded { owner, .. }) if *owner == client)
    }

    pub(crate) fn session(&self, client: ClientId, h: u32) -> TpmResult<&Session> {
        match self.sessions.get(&h) {
            Some(SessionSlot::Loaded { owner, session }) if *owner == client => Ok(session),
            _ => Err(TPM_RC_HANDLE),
        }
    }

    pub(crate) fn session_mut(&mut self, client: ClientId, h: u32) -> TpmResult<&mut Session> {
        match self.sessions.get_mut(&h) {
            Some(SessionSlot::Loaded { owner, session }) if *owner == client => Ok(session),
            _ => Err(TPM_RC_HANDLE),
        }
    }
}

impl AuthArea {
    pub fn parse(tpm: &Tpm, client: ClientId, area: &[u8]) -> TpmResult<AuthArea> {
        let mut r = Reader::new(area);
        let mut sessions: Vec<AuthEntry> = Vec::new();
        let (mut dec, mut enc, mut audit) = (false, false, false);
        while !r.is_empty() {
            if sessions.len() == 3 {
                return Err(TPM_RC_AUTHSIZE);
            }
            let n = sessions.len() as u32 + 1;
            let handle = r.u32().map_err(|_| TPM_RC_AUTHSIZE)?;
            let nonce_caller = r.tpm2b_vec(MAX_DIGEST_SIZE).map_err(|rc| at_session(rc, n))?;
            let attrs = r.u8().map_err(|_| TPM_RC_AUTHSIZE)?;
            let hmac =
                Zeroizing::new(r.tpm2b_vec(MAX_DIGEST_SIZE).map_err(|rc| at_session(rc, n))?);
            if attrs & SA_RESERVED != 0 {
                return Err(at_session(TPM_RC_RESERVED_BITS, n));
            }
            if handle == TPM_RS_PW {
                if !nonce_caller.is_empty() {
                    return Err(at_session(TPM_RC_NONCE, n));
                }
                if attrs & !SA_CONTINUE_SESSION != 0 {
                    return Err(at_session(TPM_RC_ATTRIBUTES, n));
                }
            } else {
                let ty = handle_type(handle);
                if ty != TPM_HT_HMAC_SESSION && ty != TPM_HT_POLICY_SESSION {
                    return Err(at_session(TPM_RC_HANDLE, n));
                }
                if !tpm.session_loaded(client, handle) {
                    return Err(TPM_RC_REFERENCE_S0 + n - 1);
                }
                if sessions.iter().any(|s| s.handle == handle) {
                    return Err(at_session(TPM_RC_HANDLE, n));
                }
            }
            for (bit, seen) in
                [(SA_DECRYPT, &mut dec), (SA_ENCRYPT, &mut enc), (SA_AUDIT, &mut audit)]
            {
                if attrs & bit != 0 {
                    if *seen {
                        return Err(at_session(TPM_RC_ATTRIBUTES, n));
                    }
                    *seen = true;
                }
            }
            if attrs & (SA_AUDIT_EXCLUSIVE | SA_AUDIT_RESET) != 0 && attrs & SA_AUDIT == 0 {
                return Err(at_session(TPM_RC_ATTRIBUTES, n));
            }
            sessions.push(AuthEntry { handle, nonce_caller, attrs, hmac });
        }
        Ok(AuthArea { sessions })
    }

    /// Checks every authorization, then decrypts the first parameter in `params`.
    pub fn authorize(
        &self,
        tpm: &mut Tpm,
        spec: &Spec,
        cmd: &Cmd,
        params: &mut [u8],
    ) -> TpmResult<AuthState> {
        let auth_handles: Vec<(usize, crate::auth::Role)> = spec
            .handles
            .iter()
            .enumerate()
            .filter(|(_, (_, role))| *role != Role::NoAuth)
            .map(|(i, (_, role))| (i, *role))
            .collect();
        let mut state =
            AuthState { uses: Vec::new(), decrypt: None, encrypt: None, cp_hashes: Vec::new() };
        // Names of all handles, for cpHash.
        let mut names = Vec::new();
        if self.sessions.iter().any(|s| s.handle != TPM_RS_PW) {
            for &h in &cmd.handles {
                names.push(tpm.name_of(cmd.client, h)?);
            }
        }
        let cp_hash = |alg: HashAlg| {
            let mut parts: Vec<&[u8]> = Vec::new();
            let cc = cmd.cc.to_be_bytes();
            parts.push(&cc);
            for n in &names {
                parts.push(n);
            }
            parts.push(params);
            hash(alg, &parts)
        };
        for (i, entry) in self.sessions.iter().enumerate() {
            let n = i as u32 + 1;
            if entry.attrs & SA_DECRYPT != 0 {
                if !spec.decrypt {
                    return Err(at_session(TPM_RC_ATTRIBUTES, n));
                }
                state.decrypt = Some(i);
            }
            if entry.attrs & SA_ENCRYPT != 0 {
                if !spec.encrypt {
                    return Err(at_session(TPM_RC_ATTRIBUTES, n));
                }
                state.encrypt = Some(i);
            }
            if entry.handle != TPM_RS_PW {
                let s = tpm.session(cmd.client, entry.handle)?;
                if entry.attrs & (SA_DECRYPT | SA_ENCRYPT) != 0 && s.symmetric == SymDef::Null {
                    return Err(at_session(TPM_RC_SYMMETRIC, n));
                }
                if !state.cp_hashes.iter().any(|(a, _)| *a == s.hash) {
                    state.cp_hashes.push((s.hash, cp_hash(s.hash)));
                }
            }
        }
        for (i, entry) in self.sessions.iter().enumerate() {
            let n = i as u32 + 1;
            let authorized = auth_handles.get(i).copied();
            let Some((hi, role)) = authorized else {
                // Not an authorization: must be for encryption or audit.
                if entry.handle == TPM_RS_PW
                    || entry.attrs & (SA_DECRYPT | SA_ENCRYPT | SA_AUDIT) == 0
                {
                    return Err(at_session(TPM_RC_ATTRIBUTES, n));
                }
                let key = tpm.session(cmd.client, entry.handle)?.session_key.clone();
                state.uses.push(SessionUse {
                    handle: entry.handle,
                    attrs: entry.attrs,
                    nonce_caller: entry.nonce_caller.clone(),
                    entity: None,
                    key,
                    policy: false,
                    empty_hmac: entry.hmac.is_empty(),
                });
                continue;
            };
            let handle = cmd.handles[hi];
            let entity = tpm.entity_auth(cmd.client, handle)?;
            let cp = state.cp_hashes.clone();
            let used = self
                .check_one(tpm, spec, cmd, i, entry, handle, role, &entity, &cp)
                .map_err(|rc| at_session(rc, n))?;
            state.uses.push(used);
        }
        // Parameter decryption (§5.7).
        if let Some(d) = state.decrypt {
            let entry = &self.sessions[d];
            let size = params
                .get(..2)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                .ok_or(at_param(TPM_RC_INSUFFICIENT, 1))?;
            if size + 2 > params.len() {
                return Err(at_param(TPM_RC_SIZE, 1));
            }
            let s = tpm.session(cmd.client, entry.handle)?;
            let key = state.uses[d].key.clone();
            let data = &mut params[2..2 + size];
            crypt_param(s, &key, &entry.nonce_caller, &s.nonce_tpm.clone(), data, false);
        }
        Ok(state)
    }

    #[allow(clippy::too_many_arguments)]
    fn check_one(
        &self,
        tpm: &mut Tpm,
        spec: &Spec,
        cmd: &Cmd,
        index: usize,
        entry: &AuthEntry,
        handle: u32,
        role: Role,
        entity: &EntityAuth,
        cp_hashes: &[(HashAlg, Vec<u8>)],
    ) -> TpmResult<SessionUse> {
        let session = if entry.handle == TPM_RS_PW {
            None
        } else {
            Some(tpm.session(cmd.client, entry.handle)?.clone())
        };
        let policy = session.as_ref().is_some_and(Session::is_policy);
        if !entity.available {
            return Err(TPM_RC_AUTH_UNAVAILABLE);
        }
        if handle == TPM_RH_PLATFORM && tpm.pp_commands.contains(&cmd.cc) && !tpm.pp_asserted {
            return Err(TPM_RC_PP);
        }
        // Role checks (§5.6 items 4-7).
        match role {
            Role::Dup if !policy => return Err(TPM_RC_AUTH_TYPE),
            Role::Admin => {
                let needs_policy = match entity.kind {
                    EntityKind::Object { admin_with_policy, .. } => admin_with_policy,
                    EntityKind::Nv { .. } => true,
                    _ => false,
                };
                if needs_policy && !policy {
                    return Err(TPM_RC_AUTH_TYPE);
                }
            }
            Role::User => {
                if let EntityKind::Object { user_with_auth: false, .. } = entity.kind
                    && !policy
                {
                    return Err(TPM_RC_POLICY_FAIL);
                }
            }
            _ => {}
        }
        // An NV index authorizing its own access needs the matching AUTH/POLICY attribute.
        if let EntityKind::Nv { attributes } = entity.kind {
            let ok = match (spec.nv_access, policy) {
                (NvAccess::Write, true) => attributes & NV_POLICYWRITE != 0,
                (NvAccess::Read, true) => attributes & NV_POLICYREAD != 0,
                (NvAccess::Write, false) => attributes & NV_AUTHWRITE != 0,
                (NvAccess::Read, false) => attributes & NV_AUTHREAD != 0,
                (NvAccess::None, _) => true,
            };
            if !ok {
                return Err(TPM_RC_AUTH_UNAVAILABLE);
            }
        }
        if let (Some(s), Role::Admin | Role::Dup) = (&session, role)
            && s.is_policy()
            && s.policy.command_code != Some(cmd.cc)
        {
            return Err(TPM_RC_POLICY_FAIL);
        }
        // Policy checks (§5.6 item 8).
        if let Some(s) = session.as_ref().filter(|s| s.is_policy()) {
            // A hierarchy or NV index without an authPolicy cannot be authorized by policy
            // (the reference's IsAuthPolicyAvailable); an object always can.
            let policy_settable = matches!(
                entity.kind,
                EntityKind::Hierarchy | EntityKind::Lockout | EntityKind::Nv { .. }
            );
            if policy_settable && entity.policy.is_empty() {
                return Err(TPM_RC_AUTH_UNAVAILABLE);
            }
            if s.kind == SessionKind::Trial {
                return Err(TPM_RC_POLICY_FAIL);
            }
            let p = &s.policy;
            if p.timeout.is_some_and(|t| tpm.clock.time > t) {
                return Err(TPM_RC_EXPIRED);
            }
            if let Some(cp) = &p.cp_hash {
                let mine = cp_hashes.iter().find(|(a, _)| *a == s.hash).map(|(_, h)| h);
                if mine != Some(cp) {
                    return Err(TPM_RC_POLICY_FAIL);
                }
            }
            if p.command_code.is_some_and(|c| c != cmd.cc) {
                return Err(TPM_RC_POLICY_CC);
            }
            if entity.policy_alg != Some(s.hash) || !bool::from(p.digest.ct_eq(&entity.policy)) {
                return Err(TPM_RC_POLICY_FAIL);
            }
            if p.pcr_counter.is_some_and(|c| c != tpm.pcrs.update_counter) {
                return Err(TPM_RC_PCR_CHANGED);
            }
            if p.locality.is_some_and(|l| l & crate::pcr::locality_bit(cmd.locality) == 0) {
                return Err(TPM_RC_LOCALITY);
            }
            if let Some(nh) = &p.name_hash {
                let mut names = Vec::new();
                for &h in &cmd.handles {
                    names.extend_from_slice(&tpm.name_of(cmd.client, h)?);
                }
                if hash(s.hash, &[&names]) != *nh {
                    return Err(TPM_RC_POLICY_FAIL);
                }
            }
            if let Some(written) = p.nv_written {
                let is_written = match entity.kind {
                    EntityKind::Nv { attributes } => attributes & NV_WRITTEN != 0,
                    _ => false,
                };
                if written != is_written {
                    return Err(TPM_RC_POLICY_FAIL);
                }
            }
            if p.pp_required && !tpm.pp_asserted {
                return Err(TPM_RC_PP);
            }
        }
        // Lockout (§5.6 item 3).
        let uses_auth_value = match &session {
            None => true,
            Some(s) if s.is_policy() => s.policy.auth_value_needed || s.policy.password_needed,
            Some(_) => true,
        };
        if uses_auth_value && entity.da_protected {
            if entity.kind == EntityKind::Lockout {
                if let Some(until) = tpm.da.lockout_auth_blocked_until {
                    if until == u64::MAX || tpm.clock.time < until {
                        return Err(TPM_RC_LOCKOUT);
                    }
                    tpm.da.lockout_auth_blocked_until = None;
                }
            } else if tpm.in_lockout() {
                return Err(TPM_RC_LOCKOUT);
            }
        }
        let auth = trim_auth(&entity.auth);
        // Password checks.
        let password = match &session {
            None => true,
            Some(s) => s.is_policy() && s.policy.password_needed,
        };
        let key;
        if password {
            let ok = bool::from(trim_auth(&entry.hmac).ct_eq(auth));
            key = Zeroizing::new(Vec::new());
            if !ok {
                return Err(auth_failure(tpm, entity));
            }
        } else {
            let s = session.as_ref().expect("not a password session");
            key = hmac_key(s, entity, auth);
            let cp = &cp_hashes.iter().find(|(a, _)| *a == s.hash).expect("computed above").1;
            // The first session's HMAC also covers the nonceTPM of a different decrypt
            // session, then of a different encrypt session (Part 1 §19.6.5).
            let mut extra: Vec<u8> = Vec::new();
            if index == 0 {
                let dec = self.sessions.iter().position(|s| s.attrs & SA_DECRYPT != 0);
                let enc = self.sessions.iter().position(|s| s.attrs & SA_ENCRYPT != 0);
                let mut add = |i: Option<usize>| -> TpmResult<()> {
                    if let Some(i) = i.filter(|&i| i != 0) {
                        extra.extend_from_slice(
                            &tpm.session(cmd.client, self.sessions[i].handle)?.nonce_tpm,
                        );
                    }
                    Ok(())
                };
                add(dec)?;
                add(enc.filter(|&e| Some(e) != dec))?;
            }
            let expect = hmac(
                s.hash,
                &key,
                &[cp, &entry.nonce_caller, &s.nonce_tpm, &extra, &[entry.attrs]],
            );
            // With an empty HMAC key (unsalted, unbound, no authValue) an empty HMAC is
            // allowed, as the reference implementation's ComputeCommandHMAC does.
            let empty_allowed = key.is_empty() && entry.hmac.is_empty();
            if !empty_allowed && !bool::from(expect.ct_eq(&entry.hmac[..])) {
                return Err(auth_failure(tpm, entity));
            }
        }
        Ok(SessionUse {
            handle: entry.handle,
            attrs: entry.attrs,
            nonce_caller: entry.nonce_caller.clone(),
            entity: Some(handle),
            key,
            policy,
            empty_hmac: entry.hmac.is_empty(),
        })
    }
}

/// The HMAC (and parameter encryption) key: sessionKey, plus the entity's authValue unless
/// the session is bound to this entity (HMAC sessions) or the policy did not ask for it.
fn hmac_key(s: &Session, entity: &EntityAuth, auth: &[u8]) -> Zeroizing<Vec<u8>> {
    let include = if s.is_policy() {
        s.policy.auth_value_needed
    } else {
        match &s.bind {
            Some((name, bind_auth)) => !(name == &entity.name && trim_auth(bind_auth) == auth),
            None => true,
        }
    };
    let mut key = Zeroizing::new(s.session_key.to_vec());
    if include {
        key.extend_from_slice(auth);
    }
    key
}

/// Records a failed authorization: DA-protected entities count toward lockout.
fn auth_failure(tpm: &mut Tpm, entity: &EntityAuth) -> Rc {
    if !entity.da_protected {
        return TPM_RC_BAD_AUTH;
    }
    if entity.kind == EntityKind::Lockout {
        tpm.da.lockout_auth_blocked_until = Some(if tpm.da.lockout_recovery == 0 {
            u64::MAX
        } else {
            tpm.clock.time + u64::from(tpm.da.lockout_recovery) * 1000
        });
    } else {
        if tpm.da.failed_tries == 0 {
            tpm.da.last_decrement = tpm.clock.time;
        }
        tpm.da.failed_tries = tpm.da.failed_tries.saturating_add(1);
    }
    TPM_RC_AUTH_FAIL
}

/// Parameter encryption with a session: AES-CFB or XOR, keys from KDFa (Part 1 §21).
fn crypt_param(
    s: &Session,
    key: &[u8],
    newer: &[u8],
    older: &[u8],
    data: &mut [u8],
    encrypt: bool,
) {
    match s.symmetric {
        SymDef::Aes(bits) => {
            let kb = usize::from(bits / 8);
            let material = kdfa(s.hash, key, b"CFB", newer, older, u32::from(bits) + 128);
            let mut iv = [0u8; 16];
            iv.copy_from_slice(&material[kb..kb + 16]);
            aes_cfb(&material[..kb], &iv, data, encrypt);
        }
        SymDef::Xor(h) => {
            let mask = kdfa(h, key, b"XOR", newer, older, (data.len() * 8) as u32);
            for (d, m) in data.iter_mut().zip(mask.iter()) {
                *d ^= m;
            }
        }
        SymDef::Null | SymDef::AesAnyMode(_) => {}
    }
}

impl AuthState {
    pub fn policy_flags(&self) -> Vec<bool> {
        self.uses.iter().filter(|u| u.entity.is_some()).map(|u| u.policy).collect()
    }

    /// Builds the response authorization area; encrypts the first response parameter in
    /// `out` if requested and updates the sessions (nonces, continueSession, policy reset).
    pub fn respond(
        &mut self,
        tpm: &mut Tpm,
        spec: &Spec,
        client: ClientId,
        cc: u32,
        out: &mut [u8],
    ) -> TpmResult<Vec<u8>> {
        let _ = spec;
        // New nonces first: the response uses nonceTPM(new).
        let mut new_nonces: Vec<Vec<u8>> = Vec::new();
        for u in &self.uses {
            if u.handle == TPM_RS_PW {
                new_nonces.push(Vec::new());
            } else {
                let size = tpm.session(client, u.handle)?.hash.size();
                new_nonces.push(tpm.random_vec(size));
            }
        }
        // Response keys: re-read the entity's authValue (it may have changed).
        let mut keys: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        for u in &self.uses {
            let key = match (u.entity, u.handle != TPM_RS_PW) {
                (Some(h), true) => match tpm.entity_auth(client, h) {
                    Ok(e) => {
                        let s = tpm.session(client, u.handle)?;
                        hmac_key(s, &e, trim_auth(&e.auth))
                    }
                    Err(_) => u.key.clone(),
                },
                _ => u.key.clone(),
            };
            keys.push(key);
        }
        if let Some(e) = self.encrypt
            && out.len() >= 2
        {
            let size = usize::from(u16::from_be_bytes([out[0], out[1]]));
            let end = (2 + size).min(out.len());
            let u = &self.uses[e];
            let s = tpm.session(client, u.handle)?;
            crypt_param(s, &keys[e], &new_nonces[e], &u.nonce_caller, &mut out[2..end], true);
        }
        let mut rp_hashes: Vec<(HashAlg, Vec<u8>)> = Vec::new();
        let mut w = Writer::new();
        for (i, u) in self.uses.iter().enumerate() {
            if u.handle == TPM_RS_PW {
                // A password session always reports continueSession (Part 1 §19.8.4).
                w.u16(0).u8(SA_CONTINUE_SESSION).u16(0);
                continue;
            }
            let s = tpm.session(client, u.handle)?;
            let alg = s.hash;
            if !rp_hashes.iter().any(|(a, _)| *a == alg) {
                rp_hashes.push((alg, hash(alg, &[&0u32.to_be_bytes(), &cc.to_be_bytes(), out])));
            }
            let rp = &rp_hashes.iter().find(|(a, _)| *a == alg).expect("just added").1;
            // A policy session with an empty HMAC key answers an empty HMAC with an empty one.
            let empty_key_policy = s.is_policy() && keys[i].is_empty() && u.empty_hmac;
            let mac = if s.is_policy() && s.policy.password_needed || empty_key_policy {
                Vec::new()
            } else {
                hmac(alg, &keys[i], &[rp, &new_nonces[i], &u.nonce_caller, &[u.attrs]])
            };
            w.tpm2b(&new_nonces[i]).u8(u.attrs).tpm2b(&mac);
        }
        // Update or retire the sessions.
        for (i, u) in self.uses.iter().enumerate() {
            if u.handle == TPM_RS_PW {
                continue;
            }
            if u.attrs & SA_CONTINUE_SESSION == 0 {
                tpm.sessions.remove(&u.handle);
                continue;
            }
            let cp = self.cp_hashes.clone();
            let rp = rp_hashes.clone();
            let s = tpm.session_mut(client, u.handle)?;
            s.nonce_tpm = new_nonces[i].clone();
            if u.attrs & SA_AUDIT != 0 {
                let c = cp
                    .iter()
                    .find(|(a, _)| *a == s.hash)
                    .map(|(_, h)| h.clone())
                    .unwrap_or_default();
                let r = rp
                    .iter()
                    .find(|(a, _)| *a == s.hash)
                    .map(|(_, h)| h.clone())
                    .unwrap_or_default();
                if u.attrs & SA_AUDIT_RESET != 0 || s.audit_digest.is_empty() {
                    s.audit_digest = alloc::vec![0; s.hash.size()];
                }
                s.audit_digest = hash(s.hash, &[&s.audit_digest, &c, &r]);
            }
            if u.entity.is_some() && s.is_policy() {
                s.restart_policy();
            }
        }
        Ok(w.into_vec())
    }
}
