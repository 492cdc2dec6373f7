//! Command execution: header checks, the command table (handle kinds, authorization roles,
//! parameter-encryption capabilities, TPMA_CC), handle validation, then authorization
//! (auth.rs), the command handler, and the response with its authorization area.

use alloc::vec::Vec;

use zeroize::Zeroizing;

use crate::auth::{AuthArea, Role};
use crate::commands::*;
use crate::constants::*;
use crate::crypto::hash::{Hasher, hash};
use crate::marshal::{Reader, Writer};
use crate::rc::*;
use crate::state::Tpm;
use crate::{ClientId, error_response};

/// Largest command or response.
pub const MAX_COMMAND_SIZE: usize = 4096;

/// What a handle in the handle area may be (TPMI_* types), for unmarshal validation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum H {
    /// TPMI_DH_OBJECT (transient or persistent), `+` NULL allowed.
    Object {
        null: bool,
    },
    /// TPMI_DH_ENTITY, `+` NULL allowed.
    Entity {
        null: bool,
    },
    /// TPMI_RH_HIERARCHY (owner, endorsement, platform), `+` NULL allowed.
    Hierarchy {
        null: bool,
    },
    /// TPMI_RH_PROVISION (owner, platform).
    Provision,
    /// TPMI_RH_CLEAR (lockout, platform).
    Clear,
    Lockout,
    Platform,
    Endorsement,
    /// TPMI_RH_HIERARCHY_AUTH (owner, endorsement, platform, lockout); also _POLICY.
    HierarchyAuth,
    /// TPMI_RH_NV_AUTH (platform, owner, NV index).
    NvAuth,
    /// TPMI_RH_NV_INDEX.
    NvIndex,
    /// TPMI_DH_PCR, `+` NULL allowed.
    Pcr {
        null: bool,
    },
    /// TPMI_SH_POLICY.
    PolicySession,
    /// TPMI_SH_HMAC.
    HmacSession,
    /// TPMI_DH_PARENT+: an object or a hierarchy (CreateLoaded).
    Parent,
    /// TPMI_DH_SAVED-like for ContextSave: transient object or session (TPMI_DH_CONTEXT).
    Context,
}

/// NV data access implied by a command's authorization of an NV index.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NvAccess {
    None,
    Read,
    Write,
}

pub type Handler = fn(&mut Tpm, &mut Cmd, &mut Reader) -> TpmResult<()>;

/// One row of the command table.
pub struct Spec {
    pub cc: u32,
    pub handles: &'static [(H, Role)],
    pub rsp_handle: bool,
    /// The first command parameter is a TPM2B (may be encrypted).
    pub decrypt: bool,
    /// The first response parameter is a TPM2B (may be encrypted).
    pub encrypt: bool,
    pub nv_access: NvAccess,
    /// TPMA_CC flags beyond handle counts: bit 22 nv, 23 extensive, 24 flushed.
    pub flags: u32,
    pub handler: Handler,
}

pub const F_NV: u32 = 1 << 22;
pub const F_EXTENSIVE: u32 = 1 << 23;
pub const F_FLUSHED: u32 = 1 << 24;

impl Spec {
    /// TPMA_CC for GetCapability(TPM_CAP_COMMANDS).
    pub fn tpma_cc(&self) -> u32 {
        (self.cc & 0xFFFF)
            | self.flags
            | ((self.handles.len() as u32) << 25)
            | (u32::from(self.rsp_handle) << 28)
    }
}

/// State of one command in execution, shared with its handler.
pub struct Cmd {
    pub client: ClientId,
    pub locality: u8,
    pub cc: u32,
    pub handles: Vec<u32>,
    /// Output: the response handle (if the command has one) and the response parameters.
    pub out_handle: Option<u32>,
    pub out: Writer,
    /// For each handle: whether it was authorized with a policy session.
    pub auth_was_policy: Vec<bool>,
}

macro_rules! spec {
    ($cc:expr, [$($h:expr),*], $rh:expr, $dec:expr, $enc:expr, $nv:expr, $flags:expr, $f:path) => {
        Spec {
            cc: $cc,
            handles: &[$($h),*],
            rsp_handle: $rh,
            decrypt: $dec,
            encrypt: $enc,
            nv_access: $nv,
            flags: $flags,
            handler: $f,
        }
    };
}

use H::*;
use NvAccess as N;
use Role::*;

/// Every implemented command, sorted by command code (GetCapability lists it as is).
/// Columns: code, handles (kind, role), response handle, decrypt, encrypt, NV access, TPMA_CC
/// flags, handler.
#[rustfmt::skip]
pub static COMMANDS: &[Spec] = &[
    spec!(0x11F, [(NvIndex, Admin), (Platform, User)], false, false, false, N::None, F_NV, nv::undefine_space_special),
    spec!(0x120, [(Provision, User), (Object { null: false }, NoAuth)], false, false, false, N::None, F_NV, object::evict_control),
    spec!(0x121, [(Hierarchy { null: false }, User)], false, false, false, N::None, F_NV | F_EXTENSIVE, hierarchy::hierarchy_control),
    spec!(0x122, [(Provision, User), (NvIndex, NoAuth)], false, false, false, N::None, F_NV, nv::undefine_space),
    spec!(0x124, [(Platform, User)], false, false, false, N::None, F_NV | F_EXTENSIVE, hierarchy::change_eps),
    spec!(0x125, [(Platform, User)], false, false, false, N::None, F_NV | F_EXTENSIVE, hierarchy::change_pps),
    spec!(0x126, [(Clear, User)], false, false, false, N::None, F_NV | F_EXTENSIVE, hierarchy::clear),
    spec!(0x127, [(Clear, User)], false, false, false, N::None, F_NV, hierarchy::clear_control),
    spec!(0x128, [(Provision, User)], false, false, false, N::None, F_NV, clock::clock_set),
    spec!(0x129, [(HierarchyAuth, User)], false, true, false, N::None, F_NV, hierarchy::hierarchy_change_auth),
    spec!(0x12A, [(Provision, User)], false, true, false, N::None, F_NV, nv::define_space),
    spec!(0x12B, [(Platform, User)], false, false, false, N::None, F_NV, pcr::allocate),
    spec!(0x12D, [(Platform, User)], false, false, false, N::None, F_NV, audit::pp_commands),
    spec!(0x12E, [(HierarchyAuth, User)], false, true, false, N::None, F_NV, hierarchy::set_primary_policy),
    spec!(0x130, [(Provision, User)], false, false, false, N::None, 0, clock::clock_rate_adjust),
    spec!(0x131, [(Hierarchy { null: true }, User)], true, true, true, N::None, 0, object::create_primary),
    spec!(0x132, [(Provision, User)], false, false, false, N::None, F_NV, nv::global_write_lock),
    spec!(0x133, [(Endorsement, User), (Object { null: true }, User)], false, true, true, N::None, F_NV, audit::get_command_audit_digest),
    spec!(0x134, [(NvAuth, User), (NvIndex, NoAuth)], false, false, false, N::Write, F_NV, nv::increment),
    spec!(0x135, [(NvAuth, User), (NvIndex, NoAuth)], false, false, false, N::Write, F_NV, nv::set_bits),
    spec!(0x136, [(NvAuth, User), (NvIndex, NoAuth)], false, true, false, N::Write, F_NV, nv::extend),
    spec!(0x137, [(NvAuth, User), (NvIndex, NoAuth)], false, true, false, N::Write, F_NV, nv::write),
    spec!(0x138, [(NvAuth, User), (NvIndex, NoAuth)], false, false, false, N::Write, F_NV, nv::write_lock),
    spec!(0x139, [(Lockout, User)], false, false, false, N::None, F_NV, hierarchy::da_lock_reset),
    spec!(0x13A, [(Lockout, User)], false, false, false, N::None, F_NV, hierarchy::da_parameters),
    spec!(0x13B, [(NvIndex, Admin)], false, true, false, N::None, F_NV, nv::change_auth),
    spec!(0x13C, [(Pcr { null: true }, User)], false, true, false, N::None, F_NV, pcr::event),
    spec!(0x13D, [(Pcr { null: false }, User)], false, false, false, N::None, F_NV, pcr::reset),
    spec!(0x13E, [(Object { null: false }, User)], false, true, true, N::None, F_FLUSHED, hash::sequence_complete),
    spec!(0x140, [(Provision, User)], false, false, false, N::None, F_NV, audit::set_command_code_audit_status),
    spec!(0x142, [], false, false, false, N::None, F_NV, startup::incremental_self_test),
    spec!(0x143, [], false, false, false, N::None, F_NV, startup::self_test),
    spec!(0x144, [], false, false, false, N::None, F_NV, startup::startup),
    spec!(0x145, [], false, false, false, N::None, F_NV, startup::shutdown),
    spec!(0x146, [], false, true, false, N::None, F_NV, random::stir_random),
    spec!(0x147, [(Object { null: false }, Admin), (Object { null: false }, User)], false, true, true, N::None, 0, duplication::activate_credential),
    spec!(0x148, [(Object { null: false }, Admin), (Object { null: true }, User)], false, true, true, N::None, 0, attest::certify),
    spec!(0x149, [(NvAuth, User), (NvIndex, NoAuth), (PolicySession, NoAuth)], false, true, false, N::Read, 0, policy::policy_nv),
    spec!(0x14A, [(Object { null: true }, User), (Object { null: false }, NoAuth)], false, true, true, N::None, 0, attest::certify_creation),
    spec!(0x14B, [(Object { null: false }, Dup), (Object { null: true }, NoAuth)], false, true, true, N::None, 0, duplication::duplicate),
    spec!(0x14C, [(Endorsement, User), (Object { null: true }, User)], false, true, true, N::None, 0, attest::get_time),
    spec!(0x14D, [(Endorsement, User), (Object { null: true }, User), (HmacSession, NoAuth)], false, true, true, N::None, 0, attest::get_session_audit_digest),
    spec!(0x14E, [(NvAuth, User), (NvIndex, NoAuth)], false, false, true, N::Read, 0, nv::read),
    spec!(0x14F, [(NvAuth, User), (NvIndex, NoAuth)], false, false, false, N::Read, F_NV, nv::read_lock),
    spec!(0x150, [(Object { null: false }, Admin), (Object { null: false }, NoAuth)], false, true, true, N::None, 0, object::object_change_auth),
    spec!(0x151, [(Entity { null: false }, User), (PolicySession, NoAuth)], false, true, true, N::Read, 0, policy::policy_secret),
    spec!(0x153, [(Object { null: false }, User)], false, true, true, N::None, 0, object::create),
    spec!(0x154, [(Object { null: false }, User)], false, true, true, N::None, 0, asym::ecdh_zgen),
    spec!(0x155, [(Object { null: false }, User)], false, true, true, N::None, 0, hash::hmac_cmd),
    spec!(0x156, [(Object { null: false }, User)], false, true, true, N::None, 0, duplication::import),
    spec!(0x157, [(Object { null: false }, User)], true, true, true, N::None, 0, object::load),
    spec!(0x158, [(Object { null: true }, User)], false, true, true, N::None, 0, attest::quote),
    spec!(0x159, [(Object { null: false }, User)], false, true, true, N::None, 0, asym::rsa_decrypt),
    spec!(0x15B, [(Object { null: false }, User)], true, true, false, N::None, 0, hash::hmac_start),
    spec!(0x15C, [(Object { null: false }, User)], false, true, false, N::None, 0, hash::sequence_update),
    spec!(0x15D, [(Object { null: false }, User)], false, true, false, N::None, 0, sign::sign),
    spec!(0x15E, [(Object { null: false }, User)], false, false, true, N::None, 0, object::unseal),
    spec!(0x160, [(Object { null: false }, NoAuth), (PolicySession, NoAuth)], false, true, true, N::None, 0, policy::policy_signed),
    spec!(0x161, [], true, false, false, N::None, 0, crate::context::context_load),
    spec!(0x162, [(Context, NoAuth)], false, false, false, N::None, 0, crate::context::context_save),
    spec!(0x163, [(Object { null: false }, NoAuth)], false, false, true, N::None, 0, asym::ecdh_keygen),
    spec!(0x164, [(Object { null: false }, User)], false, false, true, N::None, 0, sym::encrypt_decrypt),
    spec!(0x165, [], false, false, false, N::None, 0, object::flush_context),
    spec!(0x167, [], true, true, true, N::None, 0, object::load_external),
    spec!(0x168, [(Object { null: false }, NoAuth)], false, true, true, N::None, 0, duplication::make_credential),
    spec!(0x169, [(NvIndex, NoAuth)], false, false, true, N::None, 0, nv::read_public),
    spec!(0x16A, [(PolicySession, NoAuth)], false, true, false, N::None, 0, policy::policy_authorize),
    spec!(0x16B, [(PolicySession, NoAuth)], false, false, false, N::None, 0, policy::policy_auth_value),
    spec!(0x16C, [(PolicySession, NoAuth)], false, false, false, N::None, 0, policy::policy_command_code),
    spec!(0x16D, [(PolicySession, NoAuth)], false, true, false, N::None, 0, policy::policy_counter_timer),
    spec!(0x16E, [(PolicySession, NoAuth)], false, true, false, N::None, 0, policy::policy_cp_hash),
    spec!(0x16F, [(PolicySession, NoAuth)], false, false, false, N::None, 0, policy::policy_locality),
    spec!(0x170, [(PolicySession, NoAuth)], false, true, false, N::None, 0, policy::policy_name_hash),
    spec!(0x171, [(PolicySession, NoAuth)], false, false, false, N::None, 0, policy::policy_or),
    spec!(0x172, [(PolicySession, NoAuth)], false, true, false, N::None, 0, policy::policy_ticket),
    spec!(0x173, [(Object { null: false }, NoAuth)], false, false, true, N::None, 0, object::read_public),
    spec!(0x174, [(Object { null: false }, NoAuth)], false, true, true, N::None, 0, asym::rsa_encrypt),
    spec!(0x176, [(Object { null: true }, NoAuth), (Entity { null: true }, NoAuth)], true, true, true, N::None, 0, session::start_auth_session),
    spec!(0x177, [(Object { null: false }, NoAuth)], false, true, false, N::None, 0, sign::verify_signature),
    spec!(0x178, [], false, false, false, N::None, 0, asym::ecc_parameters),
    spec!(0x17A, [], false, false, false, N::None, 0, crate::capability::get_capability),
    spec!(0x17B, [], false, false, true, N::None, 0, random::get_random),
    spec!(0x17C, [], false, false, true, N::None, 0, startup::get_test_result),
    spec!(0x17D, [], false, true, true, N::None, 0, hash::hash),
    spec!(0x17E, [], false, false, false, N::None, 0, pcr::read),
    spec!(0x17F, [(PolicySession, NoAuth)], false, true, false, N::None, 0, policy::policy_pcr),
    spec!(0x180, [(PolicySession, NoAuth)], false, false, false, N::None, 0, policy::policy_restart),
    spec!(0x181, [], false, false, false, N::None, 0, clock::read_clock),
    spec!(0x182, [(Pcr { null: true }, User)], false, false, false, N::None, F_NV, pcr::extend),
    spec!(0x184, [(Object { null: true }, User), (NvAuth, User), (NvIndex, NoAuth)], false, true, true, N::Read, 0, attest::nv_certify),
    spec!(0x185, [(Pcr { null: true }, User), (Object { null: false }, User)], false, true, false, N::None, F_NV | F_FLUSHED, hash::event_sequence_complete),
    spec!(0x186, [], true, true, false, N::None, 0, hash::hash_sequence_start),
    spec!(0x187, [(PolicySession, NoAuth)], false, false, false, N::None, 0, policy::policy_physical_presence),
    spec!(0x188, [(PolicySession, NoAuth)], false, true, false, N::None, 0, policy::policy_duplication_select),
    spec!(0x189, [(PolicySession, NoAuth)], false, false, true, N::None, 0, policy::policy_get_digest),
    spec!(0x18A, [], false, false, false, N::None, 0, crate::capability::test_parms),
    spec!(0x18B, [(Object { null: false }, User)], false, true, true, N::None, 0, ecdaa::commit),
    spec!(0x18C, [(PolicySession, NoAuth)], false, false, false, N::None, 0, policy::policy_password),
    spec!(0x18F, [(PolicySession, NoAuth)], false, false, false, N::None, 0, policy::policy_nv_written),
    spec!(0x190, [(PolicySession, NoAuth)], false, true, false, N::None, 0, policy::policy_template),
    spec!(0x191, [(Parent, User)], true, true, true, N::None, 0, object::create_loaded),
    spec!(0x192, [(NvAuth, User), (NvIndex, NoAuth), (PolicySession, NoAuth)], false, false, false, N::Read, 0, policy::policy_authorize_nv),
    spec!(0x193, [(Object { null: false }, User)], false, true, true, N::None, 0, sym::encrypt_decrypt2),
];

pub fn find(cc: u32) -> Option<&'static Spec> {
    COMMANDS.binary_search_by_key(&cc, |s| s.cc).ok().map(|i| &COMMANDS[i])
}

impl Tpm {
    /// Executes one command from `client` at `locality`; always returns a well-formed response
    /// (never panics, whatever the bytes).
    pub fn execute(&mut self, client: ClientId, locality: u8, command: &[u8]) -> Vec<u8> {
        match self.execute_inner(client, locality, command) {
            Ok(rsp) => rsp,
            Err(rc) => {
                let tag =
                    if rc == TPM_RC_BAD_TAG { TPM_ST_RSP_COMMAND } else { TPM_ST_NO_SESSIONS };
                error_response(tag, rc)
            }
        }
    }

    fn execute_inner(
        &mut self,
        client: ClientId,
        locality: u8,
        command: &[u8],
    ) -> TpmResult<Vec<u8>> {
        // Part 3 §5.2: header.
        let mut r = Reader::new(command);
        let tag = r.u16().map_err(|_| TPM_RC_BAD_TAG)?;
        if tag != TPM_ST_SESSIONS && tag != TPM_ST_NO_SESSIONS {
            return Err(TPM_RC_BAD_TAG);
        }
        let size = r.u32().map_err(|_| TPM_RC_COMMAND_SIZE)? as usize;
        if size != command.len() || !(10..=MAX_COMMAND_SIZE).contains(&size) {
            return Err(TPM_RC_COMMAND_SIZE);
        }
        let cc = r.u32()?;
        let spec = find(cc).ok_or(TPM_RC_COMMAND_CODE)?;
        // §5.3: mode checks.
        if !self.powered {
            return Err(TPM_RC_FAILURE);
        }
        // Part 1 "Failure Mode": only GetTestResult and GetCapability (without sessions) work.
        let failure_mode = self.self_tests.failed.is_some();
        if failure_mode
            && !(tag == TPM_ST_NO_SESSIONS
                && (cc == TPM_CC_GET_TEST_RESULT || cc == TPM_CC_GET_CAPABILITY))
        {
            return Err(TPM_RC_FAILURE);
        }
        if !self.started && cc != TPM_CC_STARTUP && !failure_mode {
            return Err(TPM_RC_INITIALIZE);
        }
        // No algorithm is used before its known-answer test passed.
        self.test_before_use(cc).map_err(|_| TPM_RC_FAILURE)?;
        self.update_time();
        // §5.4: handles.
        let mut handles = Vec::with_capacity(spec.handles.len());
        for (i, (kind, _)) in spec.handles.iter().enumerate() {
            let h = r.u32()?;
            self.check_handle(client, *kind, h, i)?;
            handles.push(h);
        }
        // §5.5: sessions.
        let auth_area = if tag == TPM_ST_SESSIONS {
            let auth_size = r.u32()? as usize;
            if auth_size < 9 || auth_size > r.remaining() {
                return Err(TPM_RC_AUTHSIZE);
            }
            let area = r.bytes(auth_size)?;
            AuthArea::parse(self, client, area)?
        } else {
            AuthArea::default()
        };
        let needs_auth = spec.handles.iter().filter(|(_, role)| *role != NoAuth).count();
        if auth_area.sessions.len() < needs_auth {
            return Err(TPM_RC_AUTH_MISSING);
        }
        let params_start = r.position();
        let mut params = Zeroizing::new(command[params_start..].to_vec());
        let audit_cp = if self.audit.commands.contains(&cc) {
            Some(self.audit_cp_hash(client, cc, &handles, &params)?)
        } else {
            None
        };
        let mut cmd = Cmd {
            client,
            locality,
            cc,
            handles,
            out_handle: None,
            out: Writer::new(),
            auth_was_policy: Vec::new(),
        };
        // §5.6, §5.7: authorization and parameter decryption.
        let mut auth_state = auth_area.authorize(self, spec, &cmd, &mut params)?;
        cmd.auth_was_policy = auth_state.policy_flags();
        let mut pr = Reader::new(&params);
        (spec.handler)(self, &mut cmd, &mut pr)?;
        // Response.
        let mut rsp = Writer::new();
        let sessions_tag = tag == TPM_ST_SESSIONS;
        rsp.u16(if sessions_tag { TPM_ST_SESSIONS } else { TPM_ST_NO_SESSIONS })
            .u32(0)
            .u32(TPM_RC_SUCCESS);
        if spec.rsp_handle {
            rsp.u32(cmd.out_handle.unwrap_or(TPM_RH_NULL));
        }
        let mut out = cmd.out.into_vec();
        let trailer = if sessions_tag {
            Some(auth_state.respond(self, spec, client, cc, &mut out)?)
        } else {
            None
        };
        if let Some(cp) = audit_cp {
            let alg = self.audit.alg;
            let rp = hash(alg, &[&0u32.to_be_bytes(), &cc.to_be_bytes(), &out]);
            self.audit_command(&cp, &rp);
        }
        match trailer {
            Some(trailer) => {
                rsp.u32(out.len() as u32).bytes(&out).bytes(&trailer);
            }
            None => {
                rsp.bytes(&out);
            }
        }
        let mut rsp = rsp.into_vec();
        let len = rsp.len() as u32;
        rsp[2..6].copy_from_slice(&len.to_be_bytes());
        Ok(rsp)
    }

    /// cpHash of a command for the command audit (names of the handles before execution).
    fn audit_cp_hash(
        &self,
        client: ClientId,
        cc: u32,
        handles: &[u32],
        params: &[u8],
    ) -> TpmResult<Vec<u8>> {
        let mut h = Hasher::new(self.audit.alg);
        h.update(&cc.to_be_bytes());
        for &handle in handles {
            h.update(&self.name_of(client, handle)?);
        }
        h.update(params);
        Ok(h.finish())
    }

    /// Part 3 §5.4: the handle has the right type for the command and the entity is present.
    fn check_handle(&self, client: ClientId, kind: H, h: u32, index: usize) -> TpmResult<()> {
        let n = index as u32 + 1;
        let bad = Err(at_handle(TPM_RC_VALUE, n));
        let ty = handle_type(h);
        let hierarchy = |allowed: &[u32]| -> TpmResult<()> {
            if !allowed.contains(&h) {
                return Err(at_handle(TPM_RC_VALUE, n));
            }
            if matches!(h, TPM_RH_OWNER | TPM_RH_ENDORSEMENT | TPM_RH_PLATFORM)
                && !self.hierarchy_enabled(h)
            {
                return Err(at_handle(TPM_RC_HIERARCHY, n));
            }
            Ok(())
        };
        match kind {
            Object { null } | Entity { null } if null && h == TPM_RH_NULL => Ok(()),
            Pcr { null } if null && h == TPM_RH_NULL => Ok(()),
            Object { .. } => match ty {
                TPM_HT_TRANSIENT | TPM_HT_PERSISTENT => self.check_object_present(client, h, n),
                _ => bad,
            },
            Entity { .. } => match ty {
                TPM_HT_TRANSIENT | TPM_HT_PERSISTENT => self.check_object_present(client, h, n),
                TPM_HT_NV_INDEX => self.check_nv_present(h, n),
                TPM_HT_PCR if (h as usize) < crate::types::PCR_COUNT => Ok(()),
                TPM_HT_PERMANENT => {
                    hierarchy(&[TPM_RH_OWNER, TPM_RH_ENDORSEMENT, TPM_RH_PLATFORM, TPM_RH_LOCKOUT])
                }
                _ => bad,
            },
            Hierarchy { null } => {
                if null && h == TPM_RH_NULL {
                    Ok(())
                } else {
                    hierarchy(&[TPM_RH_OWNER, TPM_RH_ENDORSEMENT, TPM_RH_PLATFORM])
                }
            }
            Provision => hierarchy(&[TPM_RH_OWNER, TPM_RH_PLATFORM]),
            Clear => hierarchy(&[TPM_RH_LOCKOUT, TPM_RH_PLATFORM]),
            Lockout => hierarchy(&[TPM_RH_LOCKOUT]),
            Platform => hierarchy(&[TPM_RH_PLATFORM]),
            Endorsement => hierarchy(&[TPM_RH_ENDORSEMENT]),
            HierarchyAuth => {
                hierarchy(&[TPM_RH_OWNER, TPM_RH_ENDORSEMENT, TPM_RH_PLATFORM, TPM_RH_LOCKOUT])
            }
            NvAuth => match ty {
                TPM_HT_NV_INDEX => self.check_nv_present(h, n),
                _ => hierarchy(&[TPM_RH_OWNER, TPM_RH_PLATFORM]),
            },
            NvIndex => {
                if ty != TPM_HT_NV_INDEX {
                    return bad;
                }
                self.check_nv_present(h, n)
            }
            Pcr { .. } => {
                if (h as usize) < crate::types::PCR_COUNT {
                    Ok(())
                } else {
                    bad
                }
            }
            PolicySession | HmacSession => {
                let want =
                    if kind == PolicySession { TPM_HT_POLICY_SESSION } else { TPM_HT_HMAC_SESSION };
                if ty != want {
                    return bad;
                }
                if self.session_loaded(client, h) {
                    Ok(())
                } else {
                    Err(TPM_RC_REFERENCE_H0 + index as u32)
                }
            }
            Parent => match ty {
                TPM_HT_TRANSIENT | TPM_HT_PERSISTENT => self.check_object_present(client, h, n),
                _ => {
                    if h == TPM_RH_NULL {
                        Ok(())
                    } else {
                        hierarchy(&[TPM_RH_OWNER, TPM_RH_ENDORSEMENT, TPM_RH_PLATFORM])
                    }
                }
            },
            Context => match ty {
                TPM_HT_TRANSIENT => self.check_object_present(client, h, n),
                TPM_HT_HMAC_SESSION | TPM_HT_POLICY_SESSION => {
                    if self.session_loaded(client, h) {
                        Ok(())
                    } else {
                        Err(TPM_RC_REFERENCE_H0 + index as u32)
                    }
                }
                _ => bad,
            },
        }
    }

    fn check_object_present(&self, client: ClientId, h: u32, n: u32) -> TpmResult<()> {
        if handle_type(h) == TPM_HT_TRANSIENT {
            if self.transient_loaded(client, h) { Ok(()) } else { Err(TPM_RC_REFERENCE_H0 + n - 1) }
        } else {
            match self.persistent.get(&h) {
                Some(o) if self.hierarchy_enabled(o.hierarchy) => Ok(()),
                _ => Err(at_handle(TPM_RC_HANDLE, n)),
            }
        }
    }

    fn check_nv_present(&self, h: u32, n: u32) -> TpmResult<()> {
        match self.nv.get(&h) {
            Some(nv) => {
                let enabled =
                    if nv.platform() { self.hier.ph_enable_nv } else { self.hier.sh_enable };
                if enabled { Ok(()) } else { Err(at_handle(TPM_RC_HANDLE, n)) }
            }
            None => Err(at_handle(TPM_RC_HANDLE, n)),
        }
    }
}
