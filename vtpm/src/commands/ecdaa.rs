//! TPM2_Commit and the one-time commit values ECDAA signing consumes (Part 1 §C.3 anonymous
//! signatures). The commit value for count c is r = KDFa(commitNonce, "ECDAA Commit",
//! keyName, c) mod n; each count can be used by one TPM2_Sign and only the 16 most recent
//! commits are kept.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use zeroize::Zeroizing;

use crate::constants::*;
use crate::crypto::ecc::{self, Curve, Point};
use crate::crypto::hash::{HashAlg, hash};
use crate::crypto::kdf::kdfa;
use crate::dispatch::Cmd;
use crate::marshal::Reader;
use crate::object::Object;
use crate::rc::*;
use crate::state::Tpm;
use crate::types::*;

use super::end;

/// Outstanding commits kept at once.
const MAX_COMMITS: usize = 16;

/// Commit state: a per-reset nonce, the counter and the counts not yet used.
#[derive(Default)]
pub struct Commits {
    pub nonce: Zeroizing<Vec<u8>>,
    pub counter: u16,
    pub pending: VecDeque<u16>,
}

impl Tpm {
    fn commit_value(
        &self,
        key: &Object,
        curve: Curve,
        count: u16,
    ) -> TpmResult<Zeroizing<Vec<u8>>> {
        let bits = ((curve.size() + 8) * 8) as u32;
        let material = kdfa(
            HashAlg::Sha256,
            &self.commits.nonce,
            b"ECDAA Commit",
            &key.name,
            &count.to_be_bytes(),
            bits,
        );
        ecc::reduce(curve, &material).ok_or(TPM_RC_NO_RESULT)
    }

    /// The commit value for `count`, which is then used up (TPM_RC_VALUE if unknown).
    pub(crate) fn take_commit(
        &mut self,
        key: &Object,
        curve: Curve,
        count: u16,
    ) -> TpmResult<Zeroizing<Vec<u8>>> {
        let at = self
            .commits
            .pending
            .iter()
            .position(|c| *c == count)
            .ok_or(at_param(TPM_RC_VALUE, 2))?;
        self.commits.pending.remove(at);
        self.commit_value(key, curve, count)
    }

    /// New commit nonce (TPM Reset): earlier commits become unusable.
    pub(crate) fn reset_commits(&mut self) {
        self.commits.nonce = Zeroizing::new(self.random_vec(32));
        self.commits.pending.clear();
    }
}

/// TPM2_Commit.
pub fn commit(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let p1_bytes = r.tpm2b(u16::MAX as usize).param(1)?.to_vec();
    let s2 = r.tpm2b(MAX_SYM_DATA).param(2)?.to_vec();
    let y2 = r.tpm2b(MAX_ECC_KEY_BYTES).param(3)?.to_vec();
    end(r)?;
    let key = tpm.object(c.client, c.handles[0])?.shallow();
    let PublicParams::Ecc { curve, scheme, .. } = key.public.params else {
        return Err(at_handle(TPM_RC_KEY, 1));
    };
    if !key.public.has(OA_SIGN) || scheme.alg != TPM_ALG_ECDAA {
        return Err(at_handle(TPM_RC_SCHEME, 1));
    }
    let d = key.sensitive.as_ref().ok_or(at_handle(TPM_RC_KEY, 1))?.secret.clone();
    if s2.is_empty() != y2.is_empty() {
        return Err(at_param(TPM_RC_SIZE, 2));
    }
    let p1 = if p1_bytes.is_empty() {
        None
    } else {
        let p = parse_ecc_point_2b(&mut Reader::new(&to_2b(&p1_bytes))).param(1)?;
        ecc::validate_point(curve, &p).param(1)?;
        Some(p)
    };
    // M = (H(s2) mod p, y2) must be on the curve.
    let m = if s2.is_empty() {
        None
    } else {
        let h = hash(key.name_alg()?, &[&s2]);
        let m = Point { x: ecc::mod_p(curve, &h), y: y2 };
        ecc::validate_point(curve, &m).param(2)?;
        Some(m)
    };
    tpm.commits.counter = tpm.commits.counter.wrapping_add(1);
    let count = tpm.commits.counter;
    let rv = tpm.commit_value(&key, curve, count)?;
    let empty = Point { x: Vec::new(), y: Vec::new() };
    let (k, l) = match &m {
        Some(m) => (ecc::multiply(curve, &d, m)?, ecc::multiply(curve, &rv, m)?),
        None => (empty.clone(), empty.clone()),
    };
    let e = match (&p1, &m) {
        (Some(p1), _) => ecc::multiply(curve, &rv, p1)?,
        (None, None) => ecc::public_of(curve, &rv)?,
        (None, Some(_)) => empty,
    };
    if tpm.commits.pending.len() == MAX_COMMITS {
        tpm.commits.pending.pop_front();
    }
    tpm.commits.pending.push_back(count);
    for p in [&k, &l, &e] {
        if p.x.is_empty() {
            c.out.u16(0);
        } else {
            write_ecc_point_2b(&mut c.out, p);
        }
    }
    c.out.u16(count);
    Ok(())
}

/// Re-wraps the contents of a TPM2B_ECC_POINT for the shared parser.
fn to_2b(contents: &[u8]) -> Vec<u8> {
    let mut v = (contents.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(contents);
    v
}
