//! Authorization sessions (HMAC, policy and trial) and their per-session policy state.

use alloc::boxed::Box;
use alloc::vec::Vec;
use zeroize::Zeroizing;

use crate::ClientId;
use crate::crypto::hash::HashAlg;
use crate::types::SymDef;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SessionKind {
    Hmac,
    Policy,
    Trial,
}

/// Policy assertions accumulated in a policy (or trial) session.
#[derive(Clone, Default)]
pub struct PolicyState {
    pub digest: Vec<u8>,
    pub command_code: Option<u32>,
    pub cp_hash: Option<Vec<u8>>,
    pub name_hash: Option<Vec<u8>>,
    pub template_hash: Option<Vec<u8>>,
    pub locality: Option<u8>,
    pub pcr_counter: Option<u32>,
    pub auth_value_needed: bool,
    pub password_needed: bool,
    pub pp_required: bool,
    pub nv_written: Option<bool>,
    /// Absolute TPM time (ms) after which the policy has expired.
    pub timeout: Option<u64>,
}

/// A session.
#[derive(Clone)]
pub struct Session {
    pub kind: SessionKind,
    pub hash: HashAlg,
    pub session_key: Zeroizing<Vec<u8>>,
    pub nonce_tpm: Vec<u8>,
    pub symmetric: SymDef,
    /// Name of the entity the session is bound to, and that entity's authValue at binding.
    pub bind: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
    pub policy: PolicyState,
    pub audit_digest: Vec<u8>,
    /// Whether the session was started with a salt or bind (parameter encryption allowed even
    /// without an authValue).
    pub start_time: u64,
}

impl Session {
    pub fn new(kind: SessionKind, hash: HashAlg) -> Session {
        Session {
            kind,
            hash,
            session_key: Zeroizing::new(Vec::new()),
            nonce_tpm: Vec::new(),
            symmetric: SymDef::Null,
            bind: None,
            policy: PolicyState { digest: alloc::vec![0; hash.size()], ..PolicyState::default() },
            audit_digest: Vec::new(),
            start_time: 0,
        }
    }

    pub fn is_policy(&self) -> bool {
        matches!(self.kind, SessionKind::Policy | SessionKind::Trial)
    }

    /// PolicyRestart: back to a zero digest with no assertions.
    pub fn restart_policy(&mut self) {
        self.policy =
            PolicyState { digest: alloc::vec![0; self.hash.size()], ..PolicyState::default() };
    }
}

/// Where a session is: loaded (usable by its owner) or saved (context held by a client).
#[derive(Clone)]
pub enum SessionSlot {
    Loaded {
        owner: ClientId,
        session: Box<Session>,
    },
    /// Saved with context sequence number `seq`; only that context can be loaded.
    Saved {
        seq: u64,
    },
}
