//! Policy commands (Part 3 §23): each extends the session's policyDigest and, for real (not
//! trial) policy sessions, checks its assertion now or records it for the authorization check.

use alloc::vec::Vec;
use subtle::ConstantTimeEq;

use crate::constants::*;
use crate::crypto::hash::{HashAlg, hash, hmac};
use crate::dispatch::Cmd;
use crate::marshal::{Reader, to_vec};
use crate::rc::*;
use crate::session::{Session, SessionKind};
use crate::state::Tpm;
use crate::types::*;

use super::end;
use super::sign::verify;

pub const CC_POLICY_SIGNED: u32 = 0x160;
pub const CC_POLICY_SECRET: u32 = 0x151;
pub const CC_POLICY_OR: u32 = 0x171;
pub const CC_POLICY_PCR: u32 = 0x17F;
pub const CC_POLICY_LOCALITY: u32 = 0x16F;
pub const CC_POLICY_COMMAND_CODE: u32 = 0x16C;
pub const CC_POLICY_PHYSICAL_PRESENCE: u32 = 0x187;
pub const CC_POLICY_CP_HASH: u32 = 0x16E;
pub const CC_POLICY_NAME_HASH: u32 = 0x170;
pub const CC_POLICY_DUPLICATION_SELECT: u32 = 0x188;
pub const CC_POLICY_AUTHORIZE: u32 = 0x16A;
pub const CC_POLICY_AUTH_VALUE: u32 = 0x16B;
pub const CC_POLICY_NV_WRITTEN: u32 = 0x18F;
pub const CC_POLICY_TEMPLATE: u32 = 0x190;
pub const CC_POLICY_NV: u32 = 0x149;
pub const CC_POLICY_COUNTER_TIMER: u32 = 0x16D;
pub const CC_POLICY_AUTHORIZE_NV: u32 = 0x192;
pub const CC_DUPLICATE: u32 = 0x14B;

/// policyDigest := H(policyDigest || cc || arg).
fn extend(s: &mut Session, cc: u32, args: &[&[u8]]) {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(args.len() + 2);
    let old = s.policy.digest.clone();
    let cc = cc.to_be_bytes();
    parts.push(&old);
    parts.push(&cc);
    parts.extend_from_slice(args);
    s.policy.digest = hash(s.hash, &parts);
}

/// PolicyUpdate(): H(H(digest || cc || name) || policyRef).
fn update_with_ref(s: &mut Session, cc: u32, name: &[u8], policy_ref: &[u8]) {
    extend(s, cc, &[name]);
    s.policy.digest = hash(s.hash, &[&s.policy.digest, policy_ref]);
}

fn session<'a>(tpm: &'a mut Tpm, c: &Cmd, index: usize) -> TpmResult<&'a mut Session> {
    tpm.session_mut(c.client, c.handles[index]).handle(index as u32 + 1)
}

fn trial(s: &Session) -> bool {
    s.kind == SessionKind::Trial
}

/// Records an expiration (seconds, relative to the session start if bound to nonceTPM).
fn set_timeout(s: &mut Session, now: u64, expiration: i32, with_nonce: bool) -> Option<u64> {
    if expiration == 0 {
        return None;
    }
    let base = if with_nonce { s.start_time } else { now };
    let t = base.saturating_add(u64::from(expiration.unsigned_abs()) * 1000);
    s.policy.timeout = Some(s.policy.timeout.map_or(t, |old| old.min(t)));
    Some(t)
}

fn set_cp_hash(s: &mut Session, cp: &[u8], n: u32) -> TpmResult<()> {
    if cp.is_empty() {
        return Ok(());
    }
    if cp.len() != s.hash.size() {
        return Err(at_param(TPM_RC_SIZE, n));
    }
    if s.policy.cp_hash.as_deref().is_some_and(|old| old != cp) || s.policy.template_hash.is_some()
    {
        return Err(TPM_RC_CPHASH);
    }
    s.policy.cp_hash = Some(cp.to_vec());
    Ok(())
}

/// Common tail of PolicySecret/PolicySigned: checks, timeout, digest update, outputs.
#[allow(clippy::too_many_arguments)]
fn authorize_with(
    tpm: &mut Tpm,
    c: &mut Cmd,
    cc: u32,
    name: &[u8],
    hierarchy: u32,
    nonce: &[u8],
    cp: &[u8],
    policy_ref: &[u8],
    expiration: i32,
) -> TpmResult<()> {
    let now = tpm.clock.time;
    let s = session(tpm, c, 1)?;
    // A trial session only computes the digest: its inputs are not checked or recorded.
    let timeout = if trial(s) {
        None
    } else {
        if !nonce.is_empty() && !bool::from(nonce.ct_eq(&s.nonce_tpm)) {
            return Err(at_param(TPM_RC_NONCE, 1));
        }
        if expiration < 0 && nonce.is_empty() {
            return Err(at_param(TPM_RC_EXPIRED, 4));
        }
        set_cp_hash(s, cp, 2)?;
        set_timeout(s, now, expiration, !nonce.is_empty())
    };
    update_with_ref(s, cc, name, policy_ref);
    let alg = s.hash;
    match timeout {
        Some(t) => c.out.tpm2b(&t.to_be_bytes()),
        None => c.out.tpm2b(&[]),
    };
    if expiration < 0 && hierarchy != TPM_RH_NULL {
        let tag = if cc == CC_POLICY_SECRET { TPM_ST_AUTH_SECRET } else { TPM_ST_AUTH_SIGNED };
        let digest =
            auth_ticket(tpm, alg, tag, hierarchy, timeout.unwrap_or(0), cp, policy_ref, name);
        Ticket { tag, hierarchy, digest }.write(&mut c.out);
    } else {
        let tag = if cc == CC_POLICY_SECRET { TPM_ST_AUTH_SECRET } else { TPM_ST_AUTH_SIGNED };
        Ticket::null(tag).write(&mut c.out);
    }
    Ok(())
}

/// The HMAC of a TPMT_TK_AUTH: over the tag, the timeout (TPM time, tied to this TPM Reset by
/// including resetCount), cpHashA, policyRef and the authorizing entity's name.
#[allow(clippy::too_many_arguments)]
fn auth_ticket(
    tpm: &Tpm,
    alg: HashAlg,
    tag: u16,
    hierarchy: u32,
    timeout: u64,
    cp: &[u8],
    policy_ref: &[u8],
    name: &[u8],
) -> Vec<u8> {
    hmac(
        alg,
        tpm.proof(hierarchy),
        &[
            &tag.to_be_bytes(),
            &timeout.to_be_bytes(),
            &tpm.clock.reset_count.to_be_bytes(),
            cp,
            policy_ref,
            name,
        ],
    )
}

/// TPM2_PolicyTicket: replays a PolicySecret/PolicySigned authorization from its ticket.
pub fn policy_ticket(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let timeout = r.tpm2b(8).param(1)?.to_vec();
    let cp = r.tpm2b(64).param(2)?.to_vec();
    let policy_ref = r.tpm2b(64).param(3)?.to_vec();
    let name = r.tpm2b(66).param(4)?.to_vec();
    let ticket = Ticket::parse(r, &[TPM_ST_AUTH_SECRET, TPM_ST_AUTH_SIGNED]).param(5)?;
    end(r)?;
    let t =
        u64::from_be_bytes(timeout.as_slice().try_into().map_err(|_| at_param(TPM_RC_SIZE, 1))?);
    let now = tpm.clock.time;
    let alg = session(tpm, c, 0)?.hash;
    if ticket.hierarchy == TPM_RH_NULL {
        return Err(at_param(TPM_RC_TICKET, 5));
    }
    let expect = auth_ticket(tpm, alg, ticket.tag, ticket.hierarchy, t, &cp, &policy_ref, &name);
    if !bool::from(expect.ct_eq(&ticket.digest)) {
        return Err(at_param(TPM_RC_TICKET, 5));
    }
    if now > t {
        return Err(at_param(TPM_RC_EXPIRED, 1));
    }
    let s = session(tpm, c, 0)?;
    set_cp_hash(s, &cp, 2)?;
    s.policy.timeout = Some(s.policy.timeout.map_or(t, |old| old.min(t)));
    let cc = if ticket.tag == TPM_ST_AUTH_SECRET { CC_POLICY_SECRET } else { CC_POLICY_SIGNED };
    update_with_ref(s, cc, &name, &policy_ref);
    Ok(())
}

/// TPM2_PolicySecret.
pub fn policy_secret(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let nonce = r.tpm2b(64).param(1)?.to_vec();
    let cp = r.tpm2b(64).param(2)?.to_vec();
    let policy_ref = r.tpm2b(64).param(3)?.to_vec();
    let expiration = r.u32().param(4)? as i32;
    end(r)?;
    let name = tpm.name_of(c.client, c.handles[0])?;
    let hierarchy = match c.handles[0] {
        h @ (TPM_RH_OWNER | TPM_RH_ENDORSEMENT | TPM_RH_PLATFORM) => h,
        TPM_RH_LOCKOUT => TPM_RH_OWNER,
        h => tpm.object(c.client, h).map_or(TPM_RH_OWNER, |o| o.hierarchy),
    };
    authorize_with(tpm, c, CC_POLICY_SECRET, &name, hierarchy, &nonce, &cp, &policy_ref, expiration)
}

/// TPM2_PolicySigned.
pub fn policy_signed(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let nonce = r.tpm2b(64).param(1)?.to_vec();
    let cp = r.tpm2b(64).param(2)?.to_vec();
    let policy_ref = r.tpm2b(64).param(3)?.to_vec();
    let expiration = r.u32().param(4)? as i32;
    let sig = Signature::parse(r).param(5)?;
    end(r)?;
    let key = tpm.object(c.client, c.handles[0])?;
    let is_trial = trial(tpm.session(c.client, c.handles[1])?);
    let alg = match &sig {
        Signature::Rsa { hash, .. }
        | Signature::Ecc { hash, .. }
        | Signature::Hmac { hash, .. } => *hash,
        Signature::Null => return Err(at_param(TPM_RC_SCHEME, 5)),
    };
    let a_hash = hash(alg, &[&nonce, &expiration.to_be_bytes(), &cp, &policy_ref]);
    if !is_trial && !verify(key, &a_hash, &sig).param(5)? {
        return Err(at_param(TPM_RC_SIGNATURE, 5));
    }
    let (name, hierarchy) = (key.name.clone(), key.hierarchy);
    authorize_with(tpm, c, CC_POLICY_SIGNED, &name, hierarchy, &nonce, &cp, &policy_ref, expiration)
}

/// TPM2_PolicyOR.
pub fn policy_or(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let list = parse_digest_list(r).param(1)?;
    end(r)?;
    let s = session(tpm, c, 0)?;
    if list.len() < 2 {
        return Err(at_param(TPM_RC_SIZE, 1));
    }
    if !trial(s) && !list.contains(&s.policy.digest) {
        return Err(at_param(TPM_RC_VALUE, 1));
    }
    let all: Vec<u8> = list.concat();
    s.policy.digest = alloc::vec![0; s.hash.size()];
    extend(s, CC_POLICY_OR, &[&all]);
    Ok(())
}

/// TPM2_PolicyPCR.
pub fn policy_pcr(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let given = r.tpm2b(64).param(1)?.to_vec();
    let sel = PcrSelection::parse(r).param(2)?;
    end(r)?;
    let alg = session(tpm, c, 0)?.hash;
    let current = tpm.pcr_digest(alg, &sel);
    let counter = tpm.pcrs.update_counter;
    let s = session(tpm, c, 0)?;
    let digest = if trial(s) {
        if given.is_empty() { current } else { given }
    } else {
        if !given.is_empty() && given != current {
            return Err(at_param(TPM_RC_VALUE, 1));
        }
        s.policy.pcr_counter = Some(counter);
        current
    };
    let sel_bytes = to_vec(|w| sel.write(w));
    extend(s, CC_POLICY_PCR, &[&sel_bytes, &digest]);
    Ok(())
}

/// TPM2_PolicyLocality.
pub fn policy_locality(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let loc = r.u8().param(1)?;
    end(r)?;
    let s = session(tpm, c, 0)?;
    let combined = match s.policy.locality {
        Some(old) if loc < 32 && old < 32 => old & loc,
        Some(old) if old != loc => return Err(at_param(TPM_RC_RANGE, 1)),
        _ => loc,
    };
    if combined == 0 {
        return Err(at_param(TPM_RC_RANGE, 1));
    }
    s.policy.locality = Some(combined);
    extend(s, CC_POLICY_LOCALITY, &[&[loc]]);
    Ok(())
}

/// TPM2_PolicyCommandCode.
pub fn policy_command_code(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let code = r.u32().param(1)?;
    end(r)?;
    if crate::dispatch::find(code).is_none() {
        return Err(at_param(TPM_RC_POLICY_CC, 1));
    }
    let s = session(tpm, c, 0)?;
    if s.policy.command_code.is_some_and(|old| old != code) {
        return Err(at_param(TPM_RC_VALUE, 1));
    }
    s.policy.command_code = Some(code);
    extend(s, CC_POLICY_COMMAND_CODE, &[&code.to_be_bytes()]);
    Ok(())
}

/// TPM2_PolicyPhysicalPresence (satisfied if the platform asserts physical presence when the
/// policy is used).
pub fn policy_physical_presence(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    let s = session(tpm, c, 0)?;
    s.policy.pp_required = true;
    extend(s, CC_POLICY_PHYSICAL_PRESENCE, &[]);
    Ok(())
}

/// TPM2_PolicyCpHash.
pub fn policy_cp_hash(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let cp = r.tpm2b(64).param(1)?.to_vec();
    end(r)?;
    let s = session(tpm, c, 0)?;
    if cp.len() != s.hash.size() {
        return Err(at_param(TPM_RC_SIZE, 1));
    }
    set_cp_hash(s, &cp, 1)?;
    extend(s, CC_POLICY_CP_HASH, &[&cp]);
    Ok(())
}

/// TPM2_PolicyNameHash.
pub fn policy_name_hash(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let nh = r.tpm2b(64).param(1)?.to_vec();
    end(r)?;
    let s = session(tpm, c, 0)?;
    if nh.len() != s.hash.size() {
        return Err(at_param(TPM_RC_SIZE, 1));
    }
    if s.policy.name_hash.is_some() {
        return Err(TPM_RC_CPHASH);
    }
    s.policy.name_hash = Some(nh.clone());
    extend(s, CC_POLICY_NAME_HASH, &[&nh]);
    Ok(())
}

/// TPM2_PolicyDuplicationSelect.
pub fn policy_duplication_select(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let object = r.tpm2b(66).param(1)?.to_vec();
    let parent = r.tpm2b(66).param(2)?.to_vec();
    let include = r.bool().param(3)?;
    end(r)?;
    let s = session(tpm, c, 0)?;
    if s.policy.name_hash.is_some() {
        return Err(TPM_RC_CPHASH);
    }
    if s.policy.command_code.is_some_and(|cc| cc != CC_DUPLICATE) {
        return Err(TPM_RC_COMMAND_CODE);
    }
    s.policy.name_hash = Some(hash(s.hash, &[&object, &parent]));
    s.policy.command_code = Some(CC_DUPLICATE);
    let obj: &[u8] = if include { &object } else { &[] };
    extend(s, CC_POLICY_DUPLICATION_SELECT, &[obj, &parent, &[u8::from(include)]]);
    Ok(())
}

/// TPM2_PolicyAuthorize.
pub fn policy_authorize(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let approved = r.tpm2b(64).param(1)?.to_vec();
    let policy_ref = r.tpm2b(64).param(2)?.to_vec();
    let key_sign = r.tpm2b(66).param(3)?.to_vec();
    let ticket = Ticket::parse(r, &[TPM_ST_VERIFIED]).param(4)?;
    end(r)?;
    let key_alg = key_sign
        .get(..2)
        .and_then(|a| HashAlg::from_alg(u16::from_be_bytes([a[0], a[1]])))
        .ok_or(at_param(TPM_RC_SIZE, 3))?;
    if key_sign.len() != 2 + key_alg.size() {
        return Err(at_param(TPM_RC_SIZE, 3));
    }
    let proof = tpm.proof(ticket.hierarchy).to_vec();
    let s = session(tpm, c, 0)?;
    if !trial(s) {
        if approved != s.policy.digest {
            return Err(at_param(TPM_RC_VALUE, 1));
        }
        let a_hash = hash(key_alg, &[&approved, &policy_ref]);
        let expect = hmac(key_alg, &proof, &[&TPM_ST_VERIFIED.to_be_bytes(), &a_hash, &key_sign]);
        if ticket.hierarchy == TPM_RH_NULL || !bool::from(expect.ct_eq(&ticket.digest)) {
            return Err(at_param(TPM_RC_VALUE, 4));
        }
    }
    s.policy.digest = alloc::vec![0; s.hash.size()];
    update_with_ref(s, CC_POLICY_AUTHORIZE, &key_sign, &policy_ref);
    Ok(())
}

/// TPM2_PolicyAuthValue.
pub fn policy_auth_value(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    let s = session(tpm, c, 0)?;
    s.policy.auth_value_needed = true;
    s.policy.password_needed = false;
    extend(s, CC_POLICY_AUTH_VALUE, &[]);
    Ok(())
}

/// TPM2_PolicyPassword (same digest as PolicyAuthValue; the authValue is sent in the clear).
pub fn policy_password(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    let s = session(tpm, c, 0)?;
    s.policy.password_needed = true;
    s.policy.auth_value_needed = false;
    extend(s, CC_POLICY_AUTH_VALUE, &[]);
    Ok(())
}

/// TPM2_PolicyGetDigest.
pub fn policy_get_digest(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    let d = session(tpm, c, 0)?.policy.digest.clone();
    c.out.tpm2b(&d);
    Ok(())
}

/// TPM2_PolicyRestart.
pub fn policy_restart(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    session(tpm, c, 0)?.restart_policy();
    Ok(())
}

/// TPM2_PolicyNvWritten.
pub fn policy_nv_written(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let written = r.bool().param(1)?;
    end(r)?;
    let s = session(tpm, c, 0)?;
    if s.policy.nv_written.is_some_and(|w| w != written) {
        return Err(at_param(TPM_RC_VALUE, 1));
    }
    s.policy.nv_written = Some(written);
    extend(s, CC_POLICY_NV_WRITTEN, &[&[u8::from(written)]]);
    Ok(())
}

/// TPM2_PolicyTemplate.
pub fn policy_template(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let t = r.tpm2b(64).param(1)?.to_vec();
    end(r)?;
    let s = session(tpm, c, 0)?;
    if t.len() != s.hash.size() {
        return Err(at_param(TPM_RC_SIZE, 1));
    }
    if s.policy.cp_hash.is_some() || s.policy.template_hash.as_deref().is_some_and(|o| o != t) {
        return Err(TPM_RC_CPHASH);
    }
    s.policy.template_hash = Some(t.clone());
    extend(s, CC_POLICY_TEMPLATE, &[&t]);
    Ok(())
}

/// Compares `a` (current value) with `b` under a TPM_EO operation (big-endian, unsigned or
/// signed); `None` for an unknown operation.
fn compare(a: &[u8], b: &[u8], op: u16) -> Option<bool> {
    let signed_lt = |a: &[u8], b: &[u8]| {
        let neg = |v: &[u8]| v.first().is_some_and(|x| x & 0x80 != 0);
        let (sa, sb) = (neg(a), neg(b));
        if sa != sb { sa } else { a < b }
    };
    Some(match op {
        0x0000 => a == b,
        0x0001 => a != b,
        0x0002 => signed_lt(b, a),
        0x0003 => a > b,
        0x0004 => signed_lt(a, b),
        0x0005 => a < b,
        0x0006 => !signed_lt(a, b),
        0x0007 => a >= b,
        0x0008 => !signed_lt(b, a),
        0x0009 => a <= b,
        0x000A => a.iter().zip(b).all(|(x, y)| x & y == *y),
        0x000B => a.iter().zip(b).all(|(x, y)| x & y == 0),
        _ => return None,
    })
}

fn parse_operand(r: &mut Reader) -> TpmResult<(Vec<u8>, u16, u16)> {
    let b = r.tpm2b(64).param(1)?.to_vec();
    let offset = r.u16().param(2)?;
    let op = r.u16().param(3)?;
    if op > 0x000B {
        return Err(at_param(TPM_RC_VALUE, 3));
    }
    Ok((b, offset, op))
}

/// TPM2_PolicyNV.
pub fn policy_nv(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let (b, offset, op) = parse_operand(r)?;
    end(r)?;
    let nv = tpm.nv.get(&c.handles[1]).ok_or(at_handle(TPM_RC_HANDLE, 2))?;
    tpm.check_nv_read(c, nv, c.handles[0])?;
    let name = nv.public.name();
    let start = usize::from(offset);
    if start + b.len() > nv.data.len() {
        return Err(TPM_RC_NV_RANGE);
    }
    let a = nv.data[start..start + b.len()].to_vec();
    let is_trial = trial(tpm.session(c.client, c.handles[2])?);
    if !is_trial && !b.is_empty() && compare(&a, &b, op) != Some(true) {
        return Err(TPM_RC_POLICY);
    }
    let s = session(tpm, c, 2)?;
    let args = hash(s.hash, &[&b, &offset.to_be_bytes(), &op.to_be_bytes()]);
    extend(s, CC_POLICY_NV, &[&args, &name]);
    Ok(())
}

/// TPM2_PolicyCounterTimer (compares against TPMS_TIME_INFO).
pub fn policy_counter_timer(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let (b, offset, op) = parse_operand(r)?;
    end(r)?;
    let mut info = crate::marshal::Writer::new();
    info.u64(tpm.clock.time);
    tpm.write_clock_info(&mut info, None);
    let info = info.into_vec();
    let start = usize::from(offset);
    if start + b.len() > info.len() {
        return Err(at_param(TPM_RC_RANGE, 2));
    }
    let s = session(tpm, c, 0)?;
    if !trial(s) && compare(&info[start..start + b.len()], &b, op) != Some(true) {
        return Err(TPM_RC_POLICY);
    }
    let args = hash(s.hash, &[&b, &offset.to_be_bytes(), &op.to_be_bytes()]);
    extend(s, CC_POLICY_COUNTER_TIMER, &[&args]);
    Ok(())
}

/// TPM2_PolicyAuthorizeNV: the approved policy is read from an NV index (a TPMT_HA).
pub fn policy_authorize_nv(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    let nv = tpm.nv.get(&c.handles[1]).ok_or(at_handle(TPM_RC_HANDLE, 2))?;
    tpm.check_nv_read(c, nv, c.handles[0])?;
    let name = nv.public.name();
    let data = nv.data.to_vec();
    let s = session(tpm, c, 2)?;
    if !trial(s) {
        // Part 3 §23.22: the index holds a TPMT_HA (an unmarshaling error is returned as is:
        // TPM_RC_HASH for an unsupported algorithm) of the session's hash (TPM_RC_HASH) equal
        // to its current policyDigest (TPM_RC_VALUE).
        let mut nr = Reader::new(&data);
        let (alg, digest) = parse_tpmt_ha(&mut nr, false)?;
        if alg != Some(s.hash) {
            return Err(TPM_RC_HASH);
        }
        if digest != s.policy.digest {
            return Err(TPM_RC_VALUE);
        }
    }
    s.policy.digest = alloc::vec![0; s.hash.size()];
    extend(s, CC_POLICY_AUTHORIZE_NV, &[&name]);
    Ok(())
}
