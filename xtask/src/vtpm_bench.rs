//! `cargo xtask bench vtpm`: the same client workload against our engine
//! (release `vtpm-sim`, mssim protocol) and against swtpm (its raw data
//! socket) in one run; the median round-trip latency of each command, sent
//! as raw bytes from Rust over loopback TCP so that the TPM is measured, not
//! tool start-up; then the engine's heap use (`vtpm/examples/memory_use.rs`,
//! a counting global allocator).
//!
//! Every timed command's response is checked (success, and for sessions the
//! response HMAC); a failing row is reported and fails the run.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::env::Env;
use crate::vtpm_checks::ecc_primary;
use crate::vtpm_cmd::{
    Command, Marshal, Response, alg, attr, cc, create_primary, pcr_selection, public_area, rh,
};
use crate::vtpm_procs::{Server, build_vtpm_sim, ensure_packages};
use crate::vtpm_session::{CONTINUE, ParamCipher, PendingSession, SaltKey, Session};
use crate::vtpm_tools::{BANKS, digest};
use crate::vtpm_wire::{Wire, response_code};

/// One benchmark row: a name, how many timed runs, and how to set up the
/// workload on one TPM.
struct Row {
    name: &'static str,
    iterations: usize,
    prepare: fn(&mut Wire) -> Result<Prepared>,
}

const ROWS: &[Row] = &[
    Row { name: "PCR_Extend (3 banks, password)", iterations: 1000, prepare: pcr_extend },
    Row { name: "PCR_Read (SHA-256, PCR 0-7)", iterations: 1000, prepare: pcr_read },
    Row { name: "GetRandom (32 bytes)", iterations: 1000, prepare: get_random },
    Row { name: "Hash (SHA-256, 1 KiB)", iterations: 1000, prepare: hash },
    Row { name: "PCR_Extend in an HMAC session", iterations: 1000, prepare: hmac_session },
    Row { name: "CreatePrimary ECC P-256", iterations: 30, prepare: create_primary_ecc },
    Row {
        name: "CreatePrimary RSA-2048 (same template)",
        iterations: 10,
        prepare: create_primary_rsa,
    },
    Row {
        name: "CreatePrimary RSA-2048 (new unique)",
        iterations: 10,
        prepare: create_primary_rsa_new,
    },
    Row { name: "Sign ECDSA P-256", iterations: 100, prepare: sign_ecc },
    Row { name: "Sign RSASSA-2048", iterations: 50, prepare: sign_rsa },
    Row { name: "Quote (ECDSA P-256, 8 PCRs)", iterations: 100, prepare: quote },
    Row { name: "StartAuthSession (ECC-salted)", iterations: 100, prepare: start_salted },
    Row { name: "Unseal (password)", iterations: 1000, prepare: unseal },
];

/// Untimed runs before the timed ones (caches, libtpms' first-use RETRY).
const WARM_UP: usize = 2;

/// Runs per turn of each TPM.
const BLOCK: usize = 25;

/// What one timed step does.
enum Workload {
    /// The same command every time.
    Fixed(Vec<u8>),
    /// CreatePrimary(owner) of `public(i)`, flushed after each.
    Primary(fn(usize) -> Vec<u8>),
    /// PCR_Extend authorized by this HMAC session.
    HmacSession(Session),
    /// StartAuthSession salted with this key, flushed after each.
    Salted(SaltKey),
}

/// A workload set up on one TPM, and the handles to flush at the end.
struct Prepared {
    workload: Workload,
    loaded: Vec<u32>,
}

impl Prepared {
    fn new(workload: Workload, loaded: &[u32]) -> Prepared {
        Prepared { workload, loaded: loaded.to_vec() }
    }
}

pub fn run(env: &Env) -> Result<()> {
    ensure_packages(&["swtpm", "swtpm-tools"])?;
    let binary = build_vtpm_sim(env, true)?;
    let work = env.build.join("vtpm-bench");
    std::fs::create_dir_all(&work)?;
    let ours = Server::vtpm(&binary, &work.join("vtpm-sim.log"), "")?;
    let swtpm = Server::swtpm(&work.join("swtpm.state"), &work.join("swtpm.log"))?;
    ours.startup()?;
    swtpm.startup()?;
    let mut wires = [ours.wire()?, swtpm.wire()?];

    println!("vtpm bench: median round trip per command, raw commands over loopback TCP,");
    println!("  the two TPMs taking turns every {BLOCK} commands (load average now: {})", load());
    println!("  ours: vtpm-sim (release, mssim); reference: swtpm {} (libtpms)", swtpm_version());
    println!(
        "{:<40} {:>6} {:>10} {:>10} {:>11}",
        "command", "runs", "ours ms", "swtpm ms", "ours/swtpm"
    );
    let mut failures = 0;
    for row in ROWS {
        match measure(row, &mut wires) {
            Ok([a, b]) => println!(
                "{:<40} {:>6} {:>10.3} {:>10.3} {:>11.2}",
                row.name,
                row.iterations,
                ms(a),
                ms(b),
                a.as_secs_f64() / b.as_secs_f64()
            ),
            Err(e) => {
                failures += 1;
                println!("{:<40} FAILED: {e:#}", row.name);
            }
        }
    }
    drop(wires);
    ours.check_alive()?;
    memory(env)?;
    ensure!(failures == 0, "{failures} benchmark row(s) failed");
    Ok(())
}

/// Medians of one row for [ours, swtpm]. The TPMs take turns in blocks of
/// [`BLOCK`] runs, so that background load hits both alike while each
/// server stays busy through its block (a server left idle between single
/// commands wakes up tens of microseconds slower, whichever it is).
fn measure(row: &Row, wires: &mut [Wire; 2]) -> Result<[Duration; 2]> {
    let names = ["our vTPM", "swtpm"];
    let mut prepared = Vec::new();
    for (wire, name) in wires.iter_mut().zip(names) {
        let mut p = (row.prepare)(wire).with_context(|| format!("{name}: setting up"))?;
        for i in 0..WARM_UP {
            step(wire, &mut p.workload, i, true).with_context(|| format!("{name}: warm-up"))?;
        }
        prepared.push(p);
    }
    let mut times = [Vec::new(), Vec::new()];
    let mut i = WARM_UP;
    while times[0].len() < row.iterations {
        let block = BLOCK.min(row.iterations - times[0].len());
        for (k, (wire, p)) in wires.iter_mut().zip(prepared.iter_mut()).enumerate() {
            for j in 0..block {
                times[k].push(step(wire, &mut p.workload, i + j, false).context(names[k])?);
            }
        }
        i += block;
    }
    for (wire, p) in wires.iter_mut().zip(&prepared) {
        if let Workload::HmacSession(session) = &p.workload {
            flush(wire, session.handle)?;
        }
        for handle in p.loaded.iter().rev() {
            flush(wire, *handle)?;
        }
    }
    Ok([median(&times[0]), median(&times[1])])
}

/// One run of a workload; returns the round-trip time of the timed command
/// (client-side session arithmetic and cleanup are outside the clock).
fn step(wire: &mut Wire, workload: &mut Workload, i: usize, warm_up: bool) -> Result<Duration> {
    match workload {
        Workload::Fixed(command) if warm_up => {
            // libtpms answers TPM_RC_RETRY on a key's first use.
            let started = Instant::now();
            let response = wire.transact_retrying(command)?;
            ensure!(response_code(&response) == 0, "TPM answered {:#x}", response_code(&response));
            Ok(started.elapsed())
        }
        Workload::Fixed(command) => timed(wire, command).map(|(t, _)| t),
        Workload::Primary(public) => {
            let command = create_primary(rh::OWNER, &public(i));
            let (took, raw) = timed(wire, &command.bytes())?;
            flush(wire, Response::parse(&raw, 1)?.handles[0])?;
            Ok(took)
        }
        Workload::HmacSession(session) => {
            let mut command = Command::new(cc::PCR_EXTEND).handle(16).with(|p| {
                p.u32(1).u16(alg::SHA256).bytes(&digest(alg::SHA256, b"in a session"));
            });
            session.authorize(&mut command, &[&16u32.to_be_bytes()], &[], CONTINUE);
            let (took, raw) = timed(wire, &command.bytes())?;
            let mut response = Response::parse(&raw, 0)?;
            session.verify(cc::PCR_EXTEND, &mut response, &[], ParamCipher::None)?;
            Ok(took)
        }
        Workload::Salted(key) => {
            let pending = PendingSession::prepare(Some(key), ParamCipher::None, i as u8)?;
            let (took, raw) = timed(wire, &pending.command)?;
            flush(wire, pending.finish(&raw)?.handle)?;
            Ok(took)
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn swtpm_version() -> String {
    std::process::Command::new("swtpm")
        .arg("--version")
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.split(',').next().unwrap_or_default().replace("TPM emulator version ", "")
        })
        .unwrap_or_default()
}

/// Sends `command` and times the round trip; the TPM must succeed.
fn timed(wire: &mut Wire, command: &[u8]) -> Result<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let response = wire.transact(command)?;
    let took = started.elapsed();
    let rc = response_code(&response);
    ensure!(rc == 0, "TPM answered {rc:#x}");
    Ok((took, response))
}

fn flush(wire: &mut Wire, handle: u32) -> Result<()> {
    let command = Command::new(cc::FLUSH_CONTEXT).with(|p| {
        p.u32(handle);
    });
    let response = wire.transact(&command.bytes())?;
    ensure!(response_code(&response) == 0, "FlushContext({handle:#x}) failed");
    Ok(())
}

fn pcr_extend(_: &mut Wire) -> Result<Prepared> {
    let command = Command::new(cc::PCR_EXTEND).handle(16).pw().with(|p| {
        p.u32(BANKS.len() as u32);
        for bank in BANKS {
            p.u16(bank.alg).bytes(&digest(bank.alg, b"benchmark"));
        }
    });
    Ok(Prepared::new(Workload::Fixed(command.bytes()), &[]))
}

fn pcr_read(_: &mut Wire) -> Result<Prepared> {
    let command = Command::new(cc::PCR_READ)
        .with(|p| pcr_selection(p, &[alg::SHA256], &[0, 1, 2, 3, 4, 5, 6, 7]));
    Ok(Prepared::new(Workload::Fixed(command.bytes()), &[]))
}

fn get_random(_: &mut Wire) -> Result<Prepared> {
    let command = Command::new(cc::GET_RANDOM).with(|p| {
        p.u16(32);
    });
    Ok(Prepared::new(Workload::Fixed(command.bytes()), &[]))
}

fn hash(_: &mut Wire) -> Result<Prepared> {
    let command = Command::new(cc::HASH).with(|p| {
        p.tpm2b(&[0x61; 1024]).u16(alg::SHA256).u32(rh::NULL);
    });
    Ok(Prepared::new(Workload::Fixed(command.bytes()), &[]))
}

/// PCR_Extend authorized by an unsalted HMAC session: the command HMAC is
/// computed before the clock starts, the response HMAC checked after.
fn hmac_session(wire: &mut Wire) -> Result<Prepared> {
    let session = Session::start(wire, None, ParamCipher::None, 7)?;
    Ok(Prepared::new(Workload::HmacSession(session), &[]))
}

const STORAGE: u32 = attr::FIXED_TPM
    | attr::FIXED_PARENT
    | attr::SENSITIVE_DATA_ORIGIN
    | attr::USER_WITH_AUTH
    | attr::NO_DA
    | attr::RESTRICTED
    | attr::DECRYPT;
const SIGNING: u32 = attr::FIXED_TPM
    | attr::FIXED_PARENT
    | attr::SENSITIVE_DATA_ORIGIN
    | attr::USER_WITH_AUTH
    | attr::NO_DA
    | attr::SIGN;

/// TPMT_PUBLIC parameters + unique of an RSA-2048 key (symmetric AES-128-CFB
/// for storage keys, NULL for signing keys; scheme NULL; exponent 65537).
fn rsa_params(storage: bool, unique: &[u8]) -> Vec<u8> {
    let mut params = Vec::new();
    if storage {
        params.u16(alg::AES).u16(128).u16(alg::CFB);
    } else {
        params.u16(alg::NULL);
    }
    params.u16(alg::NULL).u16(2048).u32(0).tpm2b(unique);
    params
}

/// The same for an ECC P-256 key (KDF NULL, empty unique point).
fn ecc_params(storage: bool) -> Vec<u8> {
    let mut params = Vec::new();
    if storage {
        params.u16(alg::AES).u16(128).u16(alg::CFB);
    } else {
        params.u16(alg::NULL);
    }
    params.u16(alg::NULL).u16(0x0003).u16(alg::NULL).tpm2b(&[]).tpm2b(&[]);
    params
}

fn create_primary_ecc(_: &mut Wire) -> Result<Prepared> {
    Ok(Prepared::new(Workload::Primary(|_| public_area(alg::ECC, STORAGE, &ecc_params(true))), &[]))
}

fn create_primary_rsa(_: &mut Wire) -> Result<Prepared> {
    Ok(Prepared::new(
        Workload::Primary(|_| public_area(alg::RSA, STORAGE, &rsa_params(true, &[]))),
        &[],
    ))
}

/// A different unique field each time: a new key each time, so no cache of
/// derived primaries can answer (the TPM must search for primes).
fn create_primary_rsa_new(_: &mut Wire) -> Result<Prepared> {
    Ok(Prepared::new(
        Workload::Primary(|i| {
            let unique = format!("benchmark key {i}");
            public_area(alg::RSA, STORAGE, &rsa_params(true, unique.as_bytes()))
        }),
        &[],
    ))
}

/// Creates a primary from `public` and returns its handle.
fn load_primary(wire: &mut Wire, public: &[u8]) -> Result<u32> {
    let response = wire.transact_retrying(&create_primary(rh::OWNER, public).bytes())?;
    Ok(Response::parse(&response, 1)?.ok("CreatePrimary")?.handles[0])
}

fn sign_command(key: u32, scheme: u16) -> Vec<u8> {
    Command::new(cc::SIGN)
        .handle(key)
        .pw()
        .with(|p| {
            p.tpm2b(&digest(alg::SHA256, b"benchmark"))
                .u16(scheme)
                .u16(alg::SHA256)
                .u16(0x8024)
                .u32(rh::NULL)
                .tpm2b(&[]);
        })
        .bytes()
}

fn sign_ecc(wire: &mut Wire) -> Result<Prepared> {
    let key = load_primary(wire, &public_area(alg::ECC, SIGNING, &ecc_params(false)))?;
    Ok(Prepared::new(Workload::Fixed(sign_command(key, alg::ECDSA)), &[key]))
}

fn sign_rsa(wire: &mut Wire) -> Result<Prepared> {
    let key = load_primary(wire, &public_area(alg::RSA, SIGNING, &rsa_params(false, &[])))?;
    Ok(Prepared::new(Workload::Fixed(sign_command(key, alg::RSASSA)), &[key]))
}

fn quote(wire: &mut Wire) -> Result<Prepared> {
    let key = load_primary(wire, &public_area(alg::ECC, SIGNING, &ecc_params(false)))?;
    let command = Command::new(cc::QUOTE).handle(key).pw().with(|p| {
        p.tpm2b(b"attestation nonce").u16(alg::ECDSA).u16(alg::SHA256);
        pcr_selection(p, &[alg::SHA256], &[0, 1, 2, 3, 4, 5, 6, 7]);
    });
    Ok(Prepared::new(Workload::Fixed(command.bytes()), &[key]))
}

/// StartAuthSession salted with an ECC P-256 storage key: the client's ECDH
/// happens before the clock starts; each session is flushed after.
fn start_salted(wire: &mut Wire) -> Result<Prepared> {
    let key = ecc_primary(wire)?;
    let handle = key.handle;
    Ok(Prepared::new(Workload::Salted(key), &[handle]))
}

/// Unseal of a sealed data object (created and loaded under an ECC storage
/// primary, which is flushed so that libtpms' 3 object slots suffice).
fn unseal(wire: &mut Wire) -> Result<Prepared> {
    let parent = ecc_primary(wire)?.handle;
    let mut params = Vec::new();
    params.u16(alg::NULL).tpm2b(&[]);
    let sealed = public_area(
        alg::KEYEDHASH,
        attr::FIXED_TPM | attr::FIXED_PARENT | attr::USER_WITH_AUTH | attr::NO_DA,
        &params,
    );
    let create = Command::new(cc::CREATE).handle(parent).pw().with(|p| {
        let mut sensitive = Vec::new();
        sensitive.tpm2b(&[]).tpm2b(b"sealed benchmark secret");
        p.tpm2b(&sensitive).bytes(&sealed).tpm2b(&[]).u32(0);
    });
    let created = Response::parse(&wire.transact_retrying(&create.bytes())?, 0)?.ok("Create")?;
    let mut r = created.reader();
    let (private, public) = (r.tpm2b()?.to_vec(), r.tpm2b()?.to_vec());
    let load = Command::new(cc::LOAD).handle(parent).pw().with(|p| {
        p.tpm2b(&private).tpm2b(&public);
    });
    let object =
        Response::parse(&wire.transact_retrying(&load.bytes())?, 1)?.ok("Load")?.handles[0];
    flush(wire, parent)?;
    let command = Command::new(cc::UNSEAL).handle(object).pw().bytes();
    let unsealed = Response::parse(&wire.transact_retrying(&command)?, 0)?.ok("Unseal")?;
    ensure!(unsealed.reader().tpm2b()? == b"sealed benchmark secret", "unsealed data differs");
    Ok(Prepared::new(Workload::Fixed(command), &[object]))
}

/// Runs the counting-allocator example and prints its figures.
fn memory(env: &Env) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["run", "--quiet", "--release", "-p", "vtpm", "--example", "memory_use"])
        .current_dir(&env.root)
        .output()
        .context("running the memory_use example")?;
    if !out.status.success() {
        bail!("memory_use failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    println!("engine heap (counting allocator; the engine's own estimate in brackets):");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(rest) = line.strip_prefix("memory ") else { continue };
        let field = |key: &str| -> Result<f64> {
            let value = rest
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .with_context(|| format!("no {key} in {line:?}"))?;
            Ok(value.parse::<f64>()? / 1024.0)
        };
        let stage = rest.split_whitespace().next().unwrap_or_default();
        println!(
            "  {stage:<20} {:>7.1} KiB live, {:>7.1} KiB peak  [{:.1} KiB]",
            field("live=")?,
            field("peak=")?,
            field("estimate=")?
        );
    }
    Ok(())
}
