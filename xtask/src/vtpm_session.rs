//! A client-side HMAC session written from the TPM 2.0 Library spec (Part 1
//! §19 and §21, tpm.md §4), independent of the engine: StartAuthSession
//! unsalted or salted with an ECC P-256 key, command HMACs over cpHash,
//! response HMACs checked over rpHash, and XOR parameter encryption of the
//! first response parameter. The conformance checks use it to prove the
//! engine's session arithmetic against this independent implementation; the
//! benchmark uses it to time HMAC-session commands.

use anyhow::{Context, Result, ensure};
use hmac::{Hmac, KeyInit, Mac};
use p256::elliptic_curve::sec1::ToSec1Point;
use sha2::{Digest, Sha256};

use crate::vtpm_cmd::{Auth, Command, Marshal, Reader, Response, SE_HMAC, alg, cc, hex, rh};
use crate::vtpm_wire::Wire;

/// TPMA_SESSION bits.
pub const CONTINUE: u8 = 0x01;
pub const ENCRYPT: u8 = 0x40;

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// KDFa with SHA-256 (SP800-108 counter mode, Part 1 §11.4.10.2).
pub fn kdfa(key: &[u8], label: &[u8], context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut counter = 1u32;
    while out.len() * 8 < bits as usize {
        out.extend(hmac_sha256(
            key,
            &[&counter.to_be_bytes(), label, &[0], context_u, context_v, &bits.to_be_bytes()],
        ));
        counter += 1;
    }
    out.truncate(bits.div_ceil(8) as usize);
    out
}

/// KDFe with SHA-256 (SP800-56A concatenation, Part 1 §11.4.10.3).
pub fn kdfe(z: &[u8], label: &[u8], party_u: &[u8], party_v: &[u8], bits: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut counter = 1u32;
    while out.len() * 8 < bits as usize {
        let mut h = Sha256::new();
        for part in [&counter.to_be_bytes()[..], z, label, &[0], party_u, party_v] {
            h.update(part);
        }
        out.extend(h.finalize());
        counter += 1;
    }
    out.truncate(bits.div_ceil(8) as usize);
    out
}

/// The public point of a loaded ECC P-256 key (to salt a session with).
pub struct SaltKey {
    pub handle: u32,
    pub x: Vec<u8>,
    pub y: Vec<u8>,
}

/// Symmetric algorithm for parameter encryption.
#[derive(Clone, Copy)]
pub enum ParamCipher {
    None,
    Xor,
}

/// An open HMAC session (authHash SHA-256).
pub struct Session {
    pub handle: u32,
    session_key: Vec<u8>,
    nonce_caller: Vec<u8>,
    nonce_tpm: Vec<u8>,
    counter: u32,
}

/// A StartAuthSession command built (client-side ECDH done), not yet sent.
pub struct PendingSession {
    /// The StartAuthSession command bytes.
    pub command: Vec<u8>,
    nonce_caller: Vec<u8>,
    salt_value: Vec<u8>,
}

impl PendingSession {
    /// Builds StartAuthSession(HMAC, SHA-256), salted by ECDH with `salt`
    /// (ephemeral key from `ephemeral_seed`) when given.
    pub fn prepare(
        salt: Option<&SaltKey>,
        cipher: ParamCipher,
        ephemeral_seed: u8,
    ) -> Result<PendingSession> {
        let nonce_caller = vec![ephemeral_seed ^ 0x5a; 32];
        let (tpm_key, encrypted_salt, salt_value) = match salt {
            None => (rh::NULL, Vec::new(), Vec::new()),
            Some(key) => {
                let (point, z) = ecdh_ephemeral(key, ephemeral_seed)?;
                let value = kdfe(&z, b"SECRET", &point.0, &key.x, 256);
                let mut blob = Vec::new();
                blob.tpm2b(&point.0).tpm2b(&point.1);
                (key.handle, blob, value)
            }
        };
        let command =
            Command::new(cc::START_AUTH_SESSION).handle(tpm_key).handle(rh::NULL).with(|p| {
                p.tpm2b(&nonce_caller).tpm2b(&encrypted_salt).u8(SE_HMAC);
                match cipher {
                    ParamCipher::None => {
                        p.u16(alg::NULL);
                    }
                    ParamCipher::Xor => {
                        p.u16(alg::XOR).u16(alg::SHA256);
                    }
                }
                p.u16(alg::SHA256);
            });
        Ok(PendingSession { command: command.bytes(), nonce_caller, salt_value })
    }

    /// Takes the TPM's answer: the session handle and nonceTPM, and derives
    /// the session key (salted sessions).
    pub fn finish(self, response: &[u8]) -> Result<Session> {
        let response = Response::parse(response, 1)?.ok("StartAuthSession")?;
        let nonce_tpm = response.reader().tpm2b()?.to_vec();
        ensure!(nonce_tpm.len() == 32, "nonceTPM of {} bytes", nonce_tpm.len());
        let session_key = if self.salt_value.is_empty() {
            Vec::new()
        } else {
            kdfa(&self.salt_value, b"ATH", &nonce_tpm, &self.nonce_caller, 256)
        };
        Ok(Session {
            handle: response.handles[0],
            session_key,
            nonce_caller: self.nonce_caller,
            nonce_tpm,
            counter: 0,
        })
    }
}

impl Session {
    /// StartAuthSession(HMAC): unbound, unsalted when `salt` is None, else
    /// salted by ECDH with `salt` (ephemeral key from `ephemeral_seed`).
    pub fn start(
        wire: &mut Wire,
        salt: Option<&SaltKey>,
        cipher: ParamCipher,
        ephemeral_seed: u8,
    ) -> Result<Session> {
        let pending = PendingSession::prepare(salt, cipher, ephemeral_seed)?;
        let response = wire.transact(&pending.command)?;
        pending.finish(&response)
    }

    /// Adds this session's authorization to `command`, whose handles have
    /// `names` and whose entity has `auth_value`.
    pub fn authorize(
        &mut self,
        command: &mut Command,
        names: &[&[u8]],
        auth_value: &[u8],
        attributes: u8,
    ) {
        self.counter += 1;
        self.nonce_caller =
            Sha256::digest([&self.nonce_caller[..], &self.counter.to_be_bytes()].concat()).to_vec();
        let mut cp = Sha256::new();
        cp.update(command.code().to_be_bytes());
        for name in names {
            cp.update(name);
        }
        cp.update(&command.params);
        let cp_hash = cp.finalize();
        let key = [&self.session_key[..], auth_value].concat();
        let hmac =
            hmac_sha256(&key, &[&cp_hash, &self.nonce_caller, &self.nonce_tpm, &[attributes]]);
        command.set_auths(vec![Auth {
            session: self.handle,
            nonce: self.nonce_caller.clone(),
            attributes,
            hmac,
        }]);
    }

    /// Checks the response HMAC (rpHash over the possibly encrypted
    /// parameters) and takes the new nonceTPM; decrypts the first response
    /// parameter in place when the session asked for encryption with XOR.
    pub fn verify(
        &mut self,
        code: u32,
        response: &mut Response,
        auth_value: &[u8],
        cipher: ParamCipher,
    ) -> Result<()> {
        let mut r = Reader::new(&response.auth_area);
        let nonce_tpm = r.tpm2b()?.to_vec();
        let attributes = r.u8()?;
        let hmac = r.tpm2b()?.to_vec();
        let rp_hash = Sha256::digest(
            [&0u32.to_be_bytes()[..], &code.to_be_bytes(), &response.params].concat(),
        );
        let key = [&self.session_key[..], auth_value].concat();
        let want = hmac_sha256(&key, &[&rp_hash, &nonce_tpm, &self.nonce_caller, &[attributes]]);
        ensure!(hmac == want, "response HMAC {} but computed {}", hex(&hmac), hex(&want));
        self.nonce_tpm = nonce_tpm;
        if let ParamCipher::Xor = cipher
            && attributes & ENCRYPT != 0
        {
            let size = u16::from_be_bytes([response.params[0], response.params[1]]) as usize;
            let data =
                response.params.get_mut(2..2 + size).context("encrypted parameter truncated")?;
            let mask = kdfa(&key, b"XOR", &self.nonce_tpm, &self.nonce_caller, (size * 8) as u32);
            for (byte, m) in data.iter_mut().zip(mask) {
                *byte ^= m;
            }
        }
        Ok(())
    }
}

/// An ECC point's coordinates.
type Point = (Vec<u8>, Vec<u8>);

/// An ephemeral P-256 key (deterministic from `seed`: benchmarks and tests
/// need no unpredictability) and the ECDH shared x with `key`.
fn ecdh_ephemeral(key: &SaltKey, seed: u8) -> Result<(Point, Vec<u8>)> {
    let scalar = Sha256::digest([b"ephemeral".as_slice(), &[seed]].concat());
    let secret = p256::SecretKey::from_slice(&scalar).context("ephemeral scalar")?;
    let ours = secret.public_key().to_sec1_point(false);
    let theirs = p256::PublicKey::from_sec1_bytes(&[&[4u8][..], &key.x, &key.y].concat())
        .map_err(|_| anyhow::anyhow!("TPM salt key point is not on P-256"))?;
    let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), theirs.as_affine());
    let x = ours.x().context("ephemeral x")?.to_vec();
    let y = ours.y().context("ephemeral y")?.to_vec();
    Ok(((x, y), shared.raw_secret_bytes().to_vec()))
}
