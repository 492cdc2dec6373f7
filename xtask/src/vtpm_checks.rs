//! Wire-level checks of our vTPM on its own (not differential): malformed
//! commands get well-formed errors, GetCapability(COMMANDS) is truthful,
//! HMAC sessions agree with the independent client in `vtpm_session`, and
//! connections are separate clients.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::vtpm_cmd::{
    Command, Marshal, Reader, Response, alg, attr, cap, cc, create_primary, flush_context,
    get_capability, hex, pcr_extend, public_area, rh,
};
use crate::vtpm_procs::Server;
use crate::vtpm_session::{CONTINUE, ENCRYPT, ParamCipher, SaltKey, Session};
use crate::vtpm_wire::{Wire, check_framing, response_code};

/// Every entry of a capability, following moreData: raw entry bytes of
/// `entry_size` each.
pub fn capability_entries(
    wire: &mut Wire,
    capability: u32,
    first: u32,
    entry_size: usize,
) -> Result<Vec<Vec<u8>>> {
    let mut entries = Vec::new();
    let mut next = first;
    loop {
        let response =
            Response::parse(&wire.transact(&get_capability(capability, next, 64).bytes())?, 0)?
                .ok("GetCapability")?;
        let mut r = response.reader();
        let more = r.u8()?;
        ensure!(r.u32()? == capability, "GetCapability answered another capability");
        let count = r.u32()? as usize;
        ensure!(count <= 1024, "GetCapability count {count}");
        for _ in 0..count {
            entries.push(r.take(entry_size)?.to_vec());
        }
        ensure!(r.rest().is_empty(), "GetCapability has trailing bytes");
        if more == 0 {
            return Ok(entries);
        }
        let last = entries.last().context("moreData with no entries")?;
        let last_key = match entry_size {
            2 | 6 => u32::from(u16::from_be_bytes([last[0], last[1]])),
            _ => u32::from_be_bytes([last[0], last[1], last[2], last[3]]),
        };
        let key = if capability == cap::COMMANDS { last_key & 0xffff } else { last_key };
        next = key + 1;
    }
}

/// Commands below 0x11F or above this are not TPM 2.0 library commands.
const LAST_COMMAND_CODE: u32 = 0x1A0;

/// Checks that GetCapability(COMMANDS) lists exactly the commands the TPM
/// executes: a header-only command for every code in the library range
/// answers TPM_RC_COMMAND_CODE (0x143) exactly when the code is not listed.
pub fn capability_truthful(wire: &mut Wire) -> Result<()> {
    let listed: BTreeSet<u32> = capability_entries(wire, cap::COMMANDS, 0x11F, 4)?
        .iter()
        .map(|e| u32::from_be_bytes([e[0], e[1], e[2], e[3]]) & 0xffff)
        .collect();
    let mut wrong = Vec::new();
    for code in 0x11F..=LAST_COMMAND_CODE {
        let response = wire.transact(&Command::new(code).bytes())?;
        let unknown = response_code(&response) == 0x143;
        if unknown == listed.contains(&code) {
            wrong.push(format!(
                "{code:#x} {} but answers {:#x}",
                if unknown { "listed" } else { "not listed" },
                response_code(&response)
            ));
        }
    }
    ensure!(wrong.is_empty(), "GetCapability(COMMANDS) is not truthful: {}", wrong.join("; "));
    Ok(())
}

/// Commands too short or too broken to have a header: the TPM must answer a
/// well-formed error, and keep working.
pub fn malformed_framing(wire: &mut Wire) -> Result<()> {
    let mut state = 0x1234_5678u32;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    // swtpm's data socket needs a whole header before it answers.
    let short_ok = matches!(wire, Wire::Mssim { .. });
    let mut inputs: Vec<Vec<u8>> =
        vec![vec![], vec![0x80], vec![0x80, 0x01, 0, 0], vec![0x80, 0x01, 0, 0, 0, 9, 0, 0, 1]];
    for _ in 0..300 {
        let len = (next() % 64) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if len >= 10 && next() % 2 == 0 {
            // A plausible header, so parsing goes further.
            bytes[..2].copy_from_slice(&[0x80, 0x01 + (next() % 2) as u8]);
            bytes[2..6].copy_from_slice(&(len as u32).to_be_bytes());
            bytes[6..10].copy_from_slice(&(0x11F + next() % 0x80).to_be_bytes());
        }
        inputs.push(bytes);
    }
    for bytes in inputs.iter().filter(|b| short_ok || b.len() >= 10) {
        // Never let garbage shut the TPM down or change its state's auth.
        if bytes.len() >= 10
            && matches!(
                u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]),
                0x145 | 0x126 | 0x129 | 0x12B
            )
        {
            continue;
        }
        let response = wire.transact(bytes).with_context(|| format!("command {}", hex(bytes)))?;
        check_framing(&response).with_context(|| format!("command {}", hex(bytes)))?;
        if bytes.len() < 10 {
            ensure!(response_code(&response) != 0, "{} accepted", hex(bytes));
        }
    }
    let alive = wire.transact(
        &Command::new(cc::GET_RANDOM)
            .with(|p| {
                p.u16(8);
            })
            .bytes(),
    )?;
    ensure!(response_code(&alive) == 0, "GetRandom after garbage: {:#x}", response_code(&alive));
    Ok(())
}

/// Creates an ECC P-256 primary decryption key in the owner hierarchy
/// (a storage key usable to salt sessions) and returns its handle and point.
pub fn ecc_primary(wire: &mut Wire) -> Result<SaltKey> {
    let attributes = attr::FIXED_TPM
        | attr::FIXED_PARENT
        | attr::SENSITIVE_DATA_ORIGIN
        | attr::USER_WITH_AUTH
        | attr::NO_DA
        | attr::RESTRICTED
        | attr::DECRYPT;
    let mut params = Vec::new();
    params
        .u16(alg::AES)
        .u16(128)
        .u16(alg::CFB)
        .u16(alg::NULL)
        .u16(0x0003)
        .u16(alg::NULL)
        .tpm2b(&[])
        .tpm2b(&[]);
    let command = create_primary(rh::OWNER, &public_area(alg::ECC, attributes, &params));
    let response =
        Response::parse(&wire.transact(&command.bytes())?, 1)?.ok("CreatePrimary ECC")?;
    let mut r = response.reader();
    let out_public = r.tpm2b()?;
    let mut p = Reader::new(out_public);
    p.take(2 + 2 + 4)?;
    p.tpm2b()?; // policy
    p.take(2 + 2 + 2 + 2 + 2 + 2)?; // symmetric, scheme, curve, kdf
    let x = p.tpm2b()?.to_vec();
    let y = p.tpm2b()?.to_vec();
    Ok(SaltKey { handle: response.handles[0], x, y })
}

/// HMAC sessions against the independent client: an unsalted session
/// authorizing PCR_Extend, an ECC-salted one, and XOR encryption of a
/// GetRandom response (checked by decrypting to the same bytes twice is not
/// possible, so checked by the response HMAC and by the value's length).
pub fn sessions(wire: &mut Wire) -> Result<()> {
    // Unsalted, unbound: the HMAC key is the PCR's (empty) authValue only.
    let mut session = Session::start(wire, None, ParamCipher::None, 1)?;
    for i in 0..3u8 {
        let mut command = pcr_extend(16, &[i]);
        let name = 16u32.to_be_bytes();
        session.authorize(&mut command, &[&name], &[], CONTINUE);
        let mut response = Response::parse(&wire.transact(&command.bytes())?, 0)?
            .ok("PCR_Extend in an HMAC session")?;
        session.verify(cc::PCR_EXTEND, &mut response, &[], ParamCipher::None)?;
    }
    wire.transact(&flush_context(session.handle).bytes())?;

    // ECC-salted session, XOR-encrypting the response of an Unseal-like
    // read: NV_Read of a written index authorized by the owner.
    let salt_key = ecc_primary(wire)?;
    let mut session = Session::start(wire, Some(&salt_key), ParamCipher::Xor, 2)?;
    let index = 0x0150_0040u32;
    let define = Command::new(cc::NV_DEFINE_SPACE).handle(rh::OWNER).pw().with(|p| {
        let mut public = Vec::new();
        public.u32(index).u16(alg::SHA256).u32(0x0002_0002).tpm2b(&[]).u16(24);
        p.tpm2b(b"").tpm2b(&public);
    });
    Response::parse(&wire.transact(&define.bytes())?, 0)?.ok("NV_DefineSpace")?;
    let data: Vec<u8> = (0..24).map(|i| 0xA0 ^ i).collect();
    let write = Command::new(cc::NV_WRITE).handle(rh::OWNER).handle(index).pw().with(|p| {
        p.tpm2b(&data).u16(0);
    });
    Response::parse(&wire.transact(&write.bytes())?, 0)?.ok("NV_Write")?;
    let nv_name = {
        let response = Response::parse(
            &wire.transact(&Command::new(cc::NV_READ_PUBLIC).handle(index).bytes())?,
            0,
        )?
        .ok("NV_ReadPublic")?;
        let mut r = response.reader();
        r.tpm2b()?;
        r.tpm2b()?.to_vec()
    };
    for _ in 0..2 {
        let mut read = Command::new(cc::NV_READ).handle(rh::OWNER).handle(index).with(|p| {
            p.u16(24).u16(0);
        });
        let owner = rh::OWNER.to_be_bytes();
        session.authorize(&mut read, &[&owner, &nv_name], &[], CONTINUE | ENCRYPT);
        let raw = wire.transact(&read.bytes())?;
        let mut response = Response::parse(&raw, 0)?.ok("NV_Read in a salted XOR session")?;
        let on_wire = response.params.clone();
        session.verify(cc::NV_READ, &mut response, &[], ParamCipher::Xor)?;
        ensure!(on_wire[2..] != data[..], "NV_Read response was not encrypted");
        ensure!(
            response.params[2..] == data[..],
            "XOR-decrypted NV data {}",
            hex(&response.params)
        );
    }
    wire.transact(&flush_context(session.handle).bytes())?;
    wire.transact(
        &Command::new(cc::NV_UNDEFINE_SPACE).handle(rh::OWNER).handle(index).pw().bytes(),
    )?;
    wire.transact(&flush_context(salt_key.handle).bytes())?;
    Ok(())
}

/// One TPM property's value (TPM_PT), read through `wire`.
fn property(wire: &mut Wire, pt: u32) -> Result<u32> {
    let response =
        Response::parse(&wire.transact(&get_capability(cap::TPM_PROPERTIES, pt, 1).bytes())?, 0)?
            .ok("GetCapability(TPM_PROPERTIES)")?;
    let mut r = response.reader();
    r.take(1 + 4 + 4)?;
    ensure!(r.u32()? == pt, "property {pt:#x} not returned");
    r.u32()
}

const PT_HR_ACTIVE: u32 = 0x205;

/// Each connection is a client of its own: the sessions it leaves go away
/// when it ends, by SESSION_END or by a plain close (tpm2-tss never sends
/// SESSION_END, tpm.md §7.4); other clients' work goes on undisturbed.
/// (Transient objects are private to their client in our engine, so their
/// flushing cannot be observed from another connection.)
pub fn client_isolation(server: &Server) -> Result<()> {
    let mut observer = server.wire()?;
    let sessions = property(&mut observer, PT_HR_ACTIVE)?;
    let mut kept = Session::start(&mut observer, None, ParamCipher::None, 4)?;
    for polite in [true, false] {
        let mut client = server.wire()?;
        Session::start(&mut client, None, ParamCipher::None, 3)?;
        ensure!(
            property(&mut observer, PT_HR_ACTIVE)? == sessions + 2,
            "the other client's session is not counted"
        );
        if polite {
            client.close()?;
        } else {
            drop(client);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while property(&mut observer, PT_HR_ACTIVE)? != sessions + 1 {
            ensure!(
                Instant::now() < deadline,
                "a closed connection's session is still active (closed {})",
                if polite { "with SESSION_END" } else { "without SESSION_END" }
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The observer's own session survived the others leaving.
    let mut command = pcr_extend(16, b"still here");
    kept.authorize(&mut command, &[&16u32.to_be_bytes()], &[], CONTINUE);
    let mut response = Response::parse(&observer.transact(&command.bytes())?, 0)?
        .ok("PCR_Extend in the surviving session")?;
    kept.verify(cc::PCR_EXTEND, &mut response, &[], ParamCipher::None)?;
    observer.transact(&flush_context(kept.handle).bytes())?;
    Ok(())
}
