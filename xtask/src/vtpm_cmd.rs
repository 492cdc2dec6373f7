//! Building TPM 2.0 command bytes and reading responses by hand, for the
//! differential tests and the benchmark (TPM 2.0 Library Part 1 §18, Part 2
//! for the structures). Deliberately small: a builder for the command frame
//! (tag, size, code, handles, authorization area, parameters), a reader for
//! responses, and the constants the harness uses.

use anyhow::{Result, bail, ensure};

use crate::vtpm_tools::{BANKS, digest};

pub const ST_NO_SESSIONS: u16 = 0x8001;
pub const ST_SESSIONS: u16 = 0x8002;

/// Command codes (Part 2 §6.5).
pub mod cc {
    pub const NV_UNDEFINE_SPACE: u32 = 0x122;
    pub const NV_DEFINE_SPACE: u32 = 0x12A;
    pub const CREATE_PRIMARY: u32 = 0x131;
    pub const NV_WRITE: u32 = 0x137;
    pub const PCR_EVENT: u32 = 0x13C;
    pub const PCR_RESET: u32 = 0x13D;
    pub const SEQUENCE_COMPLETE: u32 = 0x13E;
    pub const INCREMENTAL_SELF_TEST: u32 = 0x142;
    pub const SELF_TEST: u32 = 0x143;
    pub const STARTUP: u32 = 0x144;
    pub const SHUTDOWN: u32 = 0x145;
    pub const NV_READ: u32 = 0x14E;
    pub const CREATE: u32 = 0x153;
    pub const ECDH_ZGEN: u32 = 0x154;
    pub const HMAC: u32 = 0x155;
    pub const LOAD: u32 = 0x157;
    pub const QUOTE: u32 = 0x158;
    pub const RSA_DECRYPT: u32 = 0x159;
    pub const SEQUENCE_UPDATE: u32 = 0x15C;
    pub const SIGN: u32 = 0x15D;
    pub const UNSEAL: u32 = 0x15E;
    pub const FLUSH_CONTEXT: u32 = 0x165;
    pub const LOAD_EXTERNAL: u32 = 0x167;
    pub const NV_READ_PUBLIC: u32 = 0x169;
    pub const READ_PUBLIC: u32 = 0x173;
    pub const START_AUTH_SESSION: u32 = 0x176;
    pub const GET_CAPABILITY: u32 = 0x17A;
    pub const GET_RANDOM: u32 = 0x17B;
    pub const GET_TEST_RESULT: u32 = 0x17C;
    pub const HASH: u32 = 0x17D;
    pub const PCR_READ: u32 = 0x17E;
    pub const PCR_EXTEND: u32 = 0x182;
    pub const EVENT_SEQUENCE_COMPLETE: u32 = 0x185;
    pub const TEST_PARMS: u32 = 0x18A;
    pub const HASH_SEQUENCE_START: u32 = 0x186;
    pub const ENCRYPT_DECRYPT2: u32 = 0x193;
}

/// Algorithm identifiers (Part 2 §6.3).
pub mod alg {
    pub const RSA: u16 = 0x0001;
    pub const SHA1: u16 = 0x0004;
    pub const HMAC: u16 = 0x0005;
    pub const AES: u16 = 0x0006;
    pub const XOR: u16 = 0x000A;
    pub const KEYEDHASH: u16 = 0x0008;
    pub const SHA256: u16 = 0x000B;
    pub const SHA384: u16 = 0x000C;
    pub const SHA512: u16 = 0x000D;
    pub const NULL: u16 = 0x0010;
    pub const RSASSA: u16 = 0x0014;
    pub const ECDSA: u16 = 0x0018;
    pub const OAEP: u16 = 0x0017;
    pub const ECC: u16 = 0x0023;
    pub const SYMCIPHER: u16 = 0x0025;
    pub const CFB: u16 = 0x0043;
}

/// Permanent handles (Part 2 §7.4).
pub mod rh {
    pub const OWNER: u32 = 0x4000_0001;
    pub const NULL: u32 = 0x4000_0007;
    pub const PW: u32 = 0x4000_0009;
}

/// Capabilities (Part 2 §6.12).
pub mod cap {
    pub const ALGS: u32 = 0;
    pub const HANDLES: u32 = 1;
    pub const COMMANDS: u32 = 2;
    pub const PCRS: u32 = 5;
    pub const TPM_PROPERTIES: u32 = 6;
    pub const ECC_CURVES: u32 = 8;
}

/// TPM_SE session types.
pub const SE_HMAC: u8 = 0x00;

/// Object attributes (TPMA_OBJECT, Part 2 §8.3).
pub mod attr {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    pub const NO_DA: u32 = 1 << 10;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN: u32 = 1 << 18;
}

/// Appends big-endian integers and sized buffers to a byte vector.
pub trait Marshal {
    fn u8(&mut self, v: u8) -> &mut Self;
    fn u16(&mut self, v: u16) -> &mut Self;
    fn u32(&mut self, v: u32) -> &mut Self;
    fn bytes(&mut self, v: &[u8]) -> &mut Self;
    /// A TPM2B: u16 size, then the bytes.
    fn tpm2b(&mut self, v: &[u8]) -> &mut Self;
}

impl Marshal for Vec<u8> {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.extend_from_slice(v);
        self
    }
    fn tpm2b(&mut self, v: &[u8]) -> &mut Self {
        let len = u16::try_from(v.len()).expect("harness TPM2B buffers are small");
        self.u16(len).bytes(v)
    }
}

/// One authorization in a command's authorization area (TPMS_AUTH_COMMAND).
#[derive(Clone)]
pub struct Auth {
    pub session: u32,
    pub nonce: Vec<u8>,
    pub attributes: u8,
    pub hmac: Vec<u8>,
}

impl Auth {
    /// A password authorization (TPM_RS_PW) with `password`.
    pub fn password(password: &[u8]) -> Auth {
        Auth { session: rh::PW, nonce: Vec::new(), attributes: 0, hmac: password.to_vec() }
    }
}

/// A command under construction: handles, authorizations, parameters.
pub struct Command {
    code: u32,
    handles: Vec<u32>,
    auths: Vec<Auth>,
    /// The parameter area; append with [`Marshal`].
    pub params: Vec<u8>,
}

impl Command {
    pub fn new(code: u32) -> Command {
        Command { code, handles: Vec::new(), auths: Vec::new(), params: Vec::new() }
    }

    pub fn handle(mut self, handle: u32) -> Command {
        self.handles.push(handle);
        self
    }

    pub fn auth(mut self, auth: Auth) -> Command {
        self.auths.push(auth);
        self
    }

    /// Shorthand for an empty password authorization.
    pub fn pw(self) -> Command {
        self.auth(Auth::password(b""))
    }

    /// Appends parameters with a closure over the parameter buffer.
    pub fn with(mut self, fill: impl FnOnce(&mut Vec<u8>)) -> Command {
        fill(&mut self.params);
        self
    }

    pub fn code(&self) -> u32 {
        self.code
    }

    /// Replaces the authorizations (used when the HMAC depends on the parameters).
    pub fn set_auths(&mut self, auths: Vec<Auth>) {
        self.auths = auths;
    }

    /// The command's wire bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let tag = if self.auths.is_empty() { ST_NO_SESSIONS } else { ST_SESSIONS };
        let mut out = Vec::new();
        out.u16(tag).u32(0).u32(self.code);
        for h in &self.handles {
            out.u32(*h);
        }
        if !self.auths.is_empty() {
            let mut area = Vec::new();
            for a in &self.auths {
                area.u32(a.session).tpm2b(&a.nonce).u8(a.attributes).tpm2b(&a.hmac);
            }
            let len = u32::try_from(area.len()).expect("authorization area is small");
            out.u32(len).bytes(&area);
        }
        out.bytes(&self.params);
        let size = u32::try_from(out.len()).expect("harness commands are small");
        out[2..6].copy_from_slice(&size.to_be_bytes());
        out
    }
}

/// A parsed response: its code, handles, parameters and authorizations.
pub struct Response {
    pub rc: u32,
    pub handles: Vec<u32>,
    pub params: Vec<u8>,
    /// Raw TPMS_AUTH_RESPONSE area (sessions commands only).
    pub auth_area: Vec<u8>,
}

impl Response {
    /// Splits a response to a command that returns `n_handles` handles.
    pub fn parse(bytes: &[u8], n_handles: usize) -> Result<Response> {
        crate::vtpm_wire::check_framing(bytes)?;
        let tag = u16::from_be_bytes([bytes[0], bytes[1]]);
        let rc = crate::vtpm_wire::response_code(bytes);
        let mut r = Reader::new(&bytes[10..]);
        if rc != 0 {
            return Ok(Response {
                rc,
                handles: Vec::new(),
                params: Vec::new(),
                auth_area: Vec::new(),
            });
        }
        let mut handles = Vec::new();
        for _ in 0..n_handles {
            handles.push(r.u32()?);
        }
        let (params, auth_area) = if tag == ST_SESSIONS {
            let len = r.u32()? as usize;
            let params = r.take(len)?.to_vec();
            (params, r.rest().to_vec())
        } else {
            (r.rest().to_vec(), Vec::new())
        };
        Ok(Response { rc, handles, params, auth_area })
    }

    /// Fails unless the TPM answered TPM_RC_SUCCESS.
    pub fn ok(self, what: &str) -> Result<Response> {
        ensure!(self.rc == 0, "{what}: TPM returned {:#x}", self.rc);
        Ok(self)
    }

    pub fn reader(&self) -> Reader<'_> {
        Reader::new(&self.params)
    }
}

/// Reads big-endian values from a response's bytes, failing on truncation.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            bail!("response truncated: need {n} bytes, {} left", self.bytes.len());
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A TPM2B's contents.
    pub fn tpm2b(&mut self) -> Result<&'a [u8]> {
        let len = self.u16()? as usize;
        self.take(len)
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

/// TPM2B_PUBLIC of a key with nameAlg SHA-256, `attributes`, no policy, and
/// the type-specific `parameters_and_unique` (Part 2 §12.2.4).
pub fn public_area(kind: u16, attributes: u32, parameters_and_unique: &[u8]) -> Vec<u8> {
    let mut public = Vec::new();
    public.u16(kind).u16(alg::SHA256).u32(attributes).tpm2b(&[]).bytes(parameters_and_unique);
    let mut out = Vec::new();
    out.tpm2b(&public);
    out
}

/// CreatePrimary in `hierarchy` (empty password) of `public`, with no
/// sensitive data, outside info or creation PCRs.
pub fn create_primary(hierarchy: u32, public: &[u8]) -> Command {
    Command::new(cc::CREATE_PRIMARY).handle(hierarchy).pw().with(|p| {
        p.tpm2b(&[0, 0, 0, 0]).bytes(public).tpm2b(&[]).u32(0);
    })
}

/// FlushContext(`handle`).
pub fn flush_context(handle: u32) -> Command {
    Command::new(cc::FLUSH_CONTEXT).with(|p| {
        p.u32(handle);
    })
}

/// GetCapability(`capability`, from `property`, up to `count` entries).
pub fn get_capability(capability: u32, property: u32, count: u32) -> Command {
    Command::new(cc::GET_CAPABILITY).with(|p| {
        p.u32(capability).u32(property).u32(count);
    })
}

/// Shutdown(TPM_SU_CLEAR).
pub fn shutdown_clear() -> Command {
    Command::new(cc::SHUTDOWN).with(|p| {
        p.u16(0);
    })
}

/// Startup(TPM_SU_CLEAR).
pub fn startup_clear() -> Command {
    Command::new(cc::STARTUP).with(|p| {
        p.u16(0);
    })
}

/// PCR_Extend of `pcr` (password session) in every bank with the digests of `event`.
pub fn pcr_extend(pcr: u32, event: &[u8]) -> Command {
    Command::new(cc::PCR_EXTEND).handle(pcr).pw().with(|p| {
        p.u32(BANKS.len() as u32);
        for bank in BANKS {
            p.u16(bank.alg).bytes(&digest(bank.alg, event));
        }
    })
}

/// PCR_Read of `pcrs` in `bank`.
pub fn pcr_read(bank: u16, pcrs: &[u32]) -> Command {
    Command::new(cc::PCR_READ).with(|p| pcr_selection(p, &[bank], pcrs))
}

/// TPMS_PCR_SELECTION list (TPML_PCR_SELECTION) for `pcrs` in each bank of `algs`.
pub fn pcr_selection(out: &mut Vec<u8>, algs: &[u16], pcrs: &[u32]) {
    let mut bitmap = [0u8; 3];
    for &pcr in pcrs {
        bitmap[(pcr / 8) as usize] |= 1 << (pcr % 8);
    }
    out.u32(algs.len() as u32);
    for &alg in algs {
        out.u16(alg).u8(3).bytes(&bitmap);
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a hex string (whitespace allowed) into bytes.
pub fn unhex(text: &str) -> Result<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    ensure!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair)?;
            Ok(u8::from_str_radix(s, 16)?)
        })
        .collect()
}
