//! The TPM's state: seeds and proofs, hierarchy authorizations, dictionary-attack counters,
//! clock, PCRs, NV, and the volatile tables of transient objects and sessions. Also the public
//! lifecycle entry points (manufacture, power, reset, the H-CRTM sequence).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use zeroize::Zeroizing;

use crate::constants::*;
use crate::crypto::drbg::{DrbgRng, HmacDrbg};
use crate::crypto::hash::{HashAlg, Hasher, HmacState};
use crate::nv::NvIndex;
use crate::object::Object;
use crate::pcr::{DEFAULT_BANKS, Pcrs};
use crate::session::SessionSlot;
use crate::{ClientId, EntropySource, ManufactureError, TimeSource};

/// Size of primary seeds and proof values.
pub const SEED_SIZE: usize = 64;
/// Transient objects (keys and sequences) one client may have loaded at once.
pub const MAX_LOADED_OBJECTS: usize = 8;
/// Sessions one client may have loaded at once.
pub const MAX_LOADED_SESSIONS: usize = 8;
/// Sessions (loaded or saved) in the whole TPM.
pub const MAX_ACTIVE_SESSIONS: usize = 64;
/// Largest gap between the oldest and newest saved session context.
pub const CONTEXT_GAP_MAX: u64 = 0xFFFF;
/// DA defaults (reference implementation values).
pub const DEFAULT_MAX_TRIES: u32 = 3;
pub const DEFAULT_RECOVERY_TIME: u32 = 1000;
pub const DEFAULT_LOCKOUT_RECOVERY: u32 = 1000;
/// Reseed the DRBG from the entropy source after this many requests.
const RESEED_INTERVAL: u32 = 1024;

pub type Secret = Zeroizing<[u8; SEED_SIZE]>;

/// Authorization value and policy of a hierarchy (or of lockout).
#[derive(Clone, Default)]
pub struct HierarchyAuth {
    pub auth: Zeroizing<Vec<u8>>,
    pub policy: Vec<u8>,
    pub policy_alg: Option<HashAlg>,
}

/// Seeds, proofs and authorizations of the hierarchies.
pub struct Hierarchies {
    pub eps: Secret,
    pub sps: Secret,
    pub pps: Secret,
    pub null_seed: Secret,
    pub eh_proof: Secret,
    pub sh_proof: Secret,
    pub ph_proof: Secret,
    pub null_proof: Secret,
    pub owner: HierarchyAuth,
    pub endorsement: HierarchyAuth,
    pub platform: HierarchyAuth,
    pub lockout: HierarchyAuth,
    pub sh_enable: bool,
    pub eh_enable: bool,
    pub ph_enable: bool,
    pub ph_enable_nv: bool,
    pub disable_clear: bool,
}

/// Dictionary-attack state.
pub struct DaState {
    pub failed_tries: u32,
    pub max_tries: u32,
    pub recovery_time: u32,
    pub lockout_recovery: u32,
    /// TPM time (ms) of the last failedTries decrement or failure.
    pub last_decrement: u64,
    /// lockoutAuth may not be used until this TPM time (ms); `u64::MAX` = until TPM Reset.
    pub lockout_auth_blocked_until: Option<u64>,
}

/// TPMS_CLOCK_INFO and the time since _TPM_Init.
pub struct ClockState {
    /// Clock (ms), persistent across power cycles of this instance.
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
    /// Time source reading at the last update.
    pub last_source: u64,
    /// Milliseconds since the last _TPM_Init.
    pub time: u64,
}

/// A hash, HMAC or event sequence object.
#[derive(Clone)]
pub enum SequenceKind {
    Hash(Hasher),
    Hmac(HmacState),
    /// Event sequence: one hash per implemented algorithm.
    Event(Vec<Hasher>),
}

#[derive(Clone)]
pub struct Sequence {
    pub kind: SequenceKind,
    pub auth: Zeroizing<Vec<u8>>,
    /// The first octets of the data (a hash ticket is refused for TPM-generated-looking data).
    pub first: Vec<u8>,
}

/// What a transient handle holds.
pub enum Loaded {
    Object(Box<Object>),
    Sequence(Box<Sequence>),
}

pub struct Transient {
    pub owner: ClientId,
    pub item: Loaded,
}

/// A derived RSA primary key and its lookup key (hash of seed and template).
pub struct CachedPrimary {
    pub key: Vec<u8>,
    pub private: Box<crate::crypto::rsa::RsaPrivateKey>,
}

/// State saved by TPM2_Shutdown(TPM_SU_STATE) for a later TPM Resume/Restart.
pub struct SavedState {
    pub pcrs: Pcrs,
}

/// A TPM 2.0 instance.
pub struct Tpm {
    pub(crate) entropy: Box<dyn EntropySource + Send>,
    pub(crate) time_source: Box<dyn TimeSource + Send>,
    pub(crate) drbg: HmacDrbg,
    pub(crate) drbg_uses: u32,
    pub(crate) powered: bool,
    pub(crate) started: bool,
    pub(crate) hier: Hierarchies,
    pub(crate) da: DaState,
    pub(crate) clock: ClockState,
    pub(crate) pcrs: Pcrs,
    /// Banks selected by PCR_Allocate, applied at the next _TPM_Init.
    pub(crate) pcr_allocation: Vec<HashAlg>,
    pub(crate) nv: BTreeMap<u32, NvIndex>,
    pub(crate) persistent: BTreeMap<u32, Box<Object>>,
    pub(crate) objects: BTreeMap<u32, Transient>,
    pub(crate) sessions: BTreeMap<u32, SessionSlot>,
    pub(crate) next_object: u32,
    pub(crate) next_session: u32,
    /// Sequence number of the next saved context.
    pub(crate) context_counter: u64,
    /// Key material protecting saved contexts (changes at every TPM Reset for sessions).
    pub(crate) context_proof: Secret,
    pub(crate) saved_state: Option<SavedState>,
    /// A TPM2_Shutdown happened since the last Startup (cleared again by Startup).
    pub(crate) orderly: bool,
    /// The Startup in effect followed an orderly shutdown (TPMA_STARTUP_CLEAR.orderly).
    pub(crate) prev_orderly: bool,
    pub(crate) hcrtm: Option<Vec<Hasher>>,
    /// An H-CRTM measurement went into PCR 0 before Startup (Startup leaves PCR 0 alone).
    pub(crate) hcrtm_done: bool,
    /// NV_GlobalWriteLock was issued (until the next Startup).
    pub(crate) global_write_lock: bool,
    /// ECDAA commits.
    pub(crate) commits: crate::commands::ecdaa::Commits,
    /// Command audit state.
    pub(crate) audit: crate::commands::audit::CommandAudit,
    /// Commands that need physical presence when authorized by the platform.
    pub(crate) pp_commands: alloc::collections::BTreeSet<u32>,
    /// The platform asserts physical presence.
    pub(crate) pp_asserted: bool,
    /// Largest value of any deleted NV counter (new counters continue from it).
    pub(crate) nv_max_counter: u64,
    /// Derived RSA primaries (RSA key generation is slow).
    pub(crate) primary_cache: Vec<CachedPrimary>,
    /// Known-answer self-tests passed since _TPM_Init; failure mode.
    pub(crate) self_tests: crate::selftest::SelfTests,
}

impl core::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tpm")
            .field("powered", &self.powered)
            .field("started", &self.started)
            .field("objects", &self.objects.len())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

fn secret(drbg: &mut HmacDrbg) -> Secret {
    let mut s = Zeroizing::new([0u8; SEED_SIZE]);
    drbg.generate(&mut s[..]);
    s
}

impl Tpm {
    /// Manufactures a fresh TPM: seeds (EPS/SPS/PPS/null) from entropy, empty NV, PCR banks
    /// SHA-1/SHA-256/SHA-384. Nothing persists across instances.
    pub fn manufacture(
        mut entropy: Box<dyn EntropySource + Send>,
    ) -> Result<Tpm, ManufactureError> {
        let mut seed = Zeroizing::new([0u8; 64]);
        entropy.fill(&mut seed[..])?;
        let mut drbg = HmacDrbg::new(&seed[..]);
        let hier = Hierarchies {
            eps: secret(&mut drbg),
            sps: secret(&mut drbg),
            pps: secret(&mut drbg),
            null_seed: secret(&mut drbg),
            eh_proof: secret(&mut drbg),
            sh_proof: secret(&mut drbg),
            ph_proof: secret(&mut drbg),
            null_proof: secret(&mut drbg),
            owner: HierarchyAuth::default(),
            endorsement: HierarchyAuth::default(),
            platform: HierarchyAuth::default(),
            lockout: HierarchyAuth::default(),
            sh_enable: true,
            eh_enable: true,
            ph_enable: true,
            ph_enable_nv: true,
            disable_clear: false,
        };
        let context_proof = secret(&mut drbg);
        Ok(Tpm {
            entropy,
            time_source: crate::default_time(),
            drbg,
            drbg_uses: 0,
            powered: false,
            started: false,
            hier,
            da: DaState {
                failed_tries: 0,
                max_tries: DEFAULT_MAX_TRIES,
                recovery_time: DEFAULT_RECOVERY_TIME,
                lockout_recovery: DEFAULT_LOCKOUT_RECOVERY,
                last_decrement: 0,
                lockout_auth_blocked_until: None,
            },
            clock: ClockState {
                clock: 0,
                reset_count: 0,
                restart_count: 0,
                safe: true,
                last_source: 0,
                time: 0,
            },
            pcrs: Pcrs::new(&DEFAULT_BANKS),
            pcr_allocation: DEFAULT_BANKS.to_vec(),
            nv: BTreeMap::new(),
            persistent: BTreeMap::new(),
            objects: BTreeMap::new(),
            sessions: BTreeMap::new(),
            next_object: 0,
            next_session: 0,
            context_counter: 1,
            context_proof,
            saved_state: None,
            orderly: false,
            prev_orderly: false,
            hcrtm: None,
            hcrtm_done: false,
            global_write_lock: false,
            primary_cache: Vec::new(),
            nv_max_counter: 0,
            audit: Default::default(),
            commits: Default::default(),
            pp_commands: [crate::commands::audit::CC_PP_COMMANDS].into_iter().collect(),
            pp_asserted: false,
            self_tests: Default::default(),
        })
    }

    /// Installs the clock used for TPM time, the Clock and dictionary-attack recovery.
    pub fn set_time_source(&mut self, time: Box<dyn TimeSource + Send>) {
        self.time_source = time;
        self.clock.last_source = self.time_source.now_ms();
    }

    /// _TPM_Init after power-up. A repeated power-on while powered is a no-op.
    pub fn power_on(&mut self) {
        if !self.powered {
            self.powered = true;
            self.tpm_init();
        }
    }

    /// Power loss: all volatile state is lost; NV (this instance's memory) stays.
    pub fn power_off(&mut self) {
        if self.powered {
            self.update_time();
            self.powered = false;
            self.started = false;
            self.objects.clear();
            self.sessions.retain(|_, s| matches!(s, SessionSlot::Saved { .. }));
            if !self.orderly {
                self.clock.safe = false;
            }
        }
    }

    /// _TPM_Init without a power cycle (a platform reset signal).
    pub fn reset(&mut self) {
        self.power_off();
        self.power_on();
    }

    /// _TPM_Init: the TPM now needs TPM2_Startup.
    fn tpm_init(&mut self) {
        self.clock.last_source = self.time_source.now_ms();
        self.clock.time = 0;
        self.started = false;
        self.objects.clear();
        self.hcrtm = None;
        self.hcrtm_done = false;
        self.self_tests.init();
        if self.pcrs.algs() != self.pcr_allocation {
            self.pcrs = Pcrs::new(&self.pcr_allocation);
        }
    }

    /// Physical presence signal (mssim PHYS_PRES_ON/OFF): while asserted, commands in the
    /// PP list and TPM2_PolicyPhysicalPresence policies can be satisfied.
    pub fn set_physical_presence(&mut self, asserted: bool) {
        self.pp_asserted = asserted;
    }

    /// A client went away (e.g. its socket closed): flush its sessions and transient objects.
    pub fn client_gone(&mut self, client: ClientId) {
        self.objects.retain(|_, t| t.owner != client);
        self.sessions.retain(|_, s| match s {
            SessionSlot::Loaded { owner, .. } => *owner != client,
            SessionSlot::Saved { .. } => true,
        });
    }

    /// _TPM_Hash_Start (locality 4): begins an H-CRTM (before Startup) or DRTM measurement.
    pub fn hash_start(&mut self) {
        if self.powered {
            self.hcrtm = Some(self.pcrs.algs().into_iter().map(Hasher::new).collect());
        }
    }

    /// _TPM_Hash_Data: measured data.
    pub fn hash_data(&mut self, data: &[u8]) {
        if let Some(hashers) = &mut self.hcrtm {
            for h in hashers {
                h.update(data);
            }
        }
    }

    /// _TPM_Hash_End: before Startup the digest goes to PCR 0 (H-CRTM); after Startup PCR 17-22
    /// are reset and the digest is extended into PCR 17 (DRTM).
    pub fn hash_end(&mut self) {
        let Some(hashers) = self.hcrtm.take() else { return };
        let pcr = if self.started {
            for i in 17..=22 {
                self.pcrs.reset(i);
            }
            17
        } else {
            // H-CRTM: PCR 0 starts at 0...04 (locality 4) before the extend.
            for bank in &mut self.pcrs.banks {
                let last = bank.values[0].len() - 1;
                bank.values[0].fill(0);
                bank.values[0][last] = 4;
            }
            self.hcrtm_done = true;
            0
        };
        for h in hashers {
            let alg = h.alg();
            let digest = h.finish();
            self.pcrs.extend(pcr, alg, &digest);
        }
    }

    /// Estimate of the heap memory held by the TPM state (objects, sessions, NV, PCRs).
    pub fn memory_in_use(&self) -> usize {
        let objects: usize = self
            .objects
            .values()
            .map(|t| match &t.item {
                Loaded::Object(o) => o.memory(),
                Loaded::Sequence(_) => core::mem::size_of::<Sequence>() + 256,
            })
            .sum();
        let persistent: usize = self.persistent.values().map(|o| o.memory()).sum();
        let sessions = self.sessions.len() * (core::mem::size_of::<SessionSlot>() + 256);
        let nv: usize = self.nv.values().map(NvIndex::memory).sum();
        let pcrs: usize = self.pcrs.banks.iter().map(|b| b.alg.size() * 24 + 24 * 24).sum();
        core::mem::size_of::<Tpm>() + objects + persistent + sessions + nv + pcrs
    }

    /// Random bytes from the TPM's DRBG (reseeded from the entropy source periodically).
    pub(crate) fn random(&mut self, out: &mut [u8]) {
        self.drbg_uses += 1;
        if self.drbg_uses >= RESEED_INTERVAL {
            self.drbg_uses = 0;
            let mut fresh = Zeroizing::new([0u8; 32]);
            if self.entropy.fill(&mut fresh[..]).is_ok() {
                self.drbg.reseed(&fresh[..]);
            }
        }
        self.drbg.generate(out);
    }

    pub(crate) fn random_vec(&mut self, len: usize) -> Vec<u8> {
        let mut v = alloc::vec![0u8; len];
        self.random(&mut v);
        v
    }

    pub(crate) fn rng(&mut self) -> DrbgRng<'_> {
        DrbgRng(&mut self.drbg)
    }

    /// Advances Clock and Time from the time source; applies DA recovery.
    pub(crate) fn update_time(&mut self) {
        let now = self.time_source.now_ms();
        let delta = now.saturating_sub(self.clock.last_source);
        self.clock.last_source = now;
        self.clock.clock = self.clock.clock.saturating_add(delta);
        self.clock.time = self.clock.time.saturating_add(delta);
        self.da_recover();
    }

    /// Decrements failedTries once per elapsed recoveryTime.
    fn da_recover(&mut self) {
        if self.da.recovery_time == 0 || self.da.failed_tries == 0 {
            self.da.last_decrement = self.clock.time;
            return;
        }
        let period = u64::from(self.da.recovery_time) * 1000;
        while self.da.failed_tries > 0
            && self.clock.time.saturating_sub(self.da.last_decrement) >= period
        {
            self.da.failed_tries -= 1;
            self.da.last_decrement += period;
        }
    }

    pub(crate) fn in_lockout(&self) -> bool {
        self.da.failed_tries >= self.da.max_tries
    }

    pub(crate) fn proof(&self, hierarchy: u32) -> &[u8] {
        match hierarchy {
            TPM_RH_ENDORSEMENT => &self.hier.eh_proof[..],
            TPM_RH_PLATFORM => &self.hier.ph_proof[..],
            TPM_RH_OWNER => &self.hier.sh_proof[..],
            _ => &self.hier.null_proof[..],
        }
    }

    pub(crate) fn seed(&self, hierarchy: u32) -> &[u8] {
        match hierarchy {
            TPM_RH_ENDORSEMENT => &self.hier.eps[..],
            TPM_RH_PLATFORM => &self.hier.pps[..],
            TPM_RH_OWNER => &self.hier.sps[..],
            _ => &self.hier.null_seed[..],
        }
    }

    pub(crate) fn hierarchy_enabled(&self, hierarchy: u32) -> bool {
        match hierarchy {
            TPM_RH_OWNER => self.hier.sh_enable,
            TPM_RH_ENDORSEMENT => self.hier.eh_enable,
            TPM_RH_PLATFORM => self.hier.ph_enable,
            _ => true,
        }
    }

    /// Allocates a transient handle (0x80xxxxxx) not in use.
    pub(crate) fn new_object_handle(&mut self) -> u32 {
        loop {
            self.next_object = (self.next_object + 1) & 0x00FF_FFFF;
            let h = 0x8000_0000 | self.next_object;
            if !self.objects.contains_key(&h) {
                return h;
            }
        }
    }

    /// Allocates a session handle of the given type not in use (by handle number).
    pub(crate) fn new_session_handle(&mut self, policy: bool) -> u32 {
        let ty = if policy { 0x0300_0000 } else { 0x0200_0000 };
        loop {
            self.next_session = (self.next_session + 1) & 0x00FF_FFFF;
            let free = !self.sessions.keys().any(|h| h & 0x00FF_FFFF == self.next_session);
            if free {
                return ty | self.next_session;
            }
        }
    }

    pub(crate) fn loaded_objects_of(&self, client: ClientId) -> usize {
        self.objects.values().filter(|t| t.owner == client).count()
    }

    pub(crate) fn loaded_sessions_of(&self, client: ClientId) -> usize {
        self.sessions
            .values()
            .filter(|s| matches!(s, SessionSlot::Loaded { owner, .. } if *owner == client))
            .count()
    }
}
