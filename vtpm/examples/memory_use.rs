//! Heap held by one TPM, measured by a counting global allocator: after
//! manufacture, after Startup, and with 3 loaded keys (ECC P-256, ECC
//! P-384 and RSA-2048 primaries) and 3 HMAC sessions. `cargo xtask bench
//! vtpm` runs it and prints the figures; run it alone with
//! `cargo run --release -p vtpm --example memory_use`.
//!
//! Output: one line per stage, `memory <stage> live=<bytes> peak=<bytes>
//! estimate=<bytes>` (`estimate` is the engine's own `memory_in_use`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use vtpm::{ClientId, OsEntropy, Tpm};

/// The system allocator, counting the bytes currently allocated and the
/// high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to the system allocator with the caller's
// own arguments, so the GlobalAlloc contract holds exactly as for System;
// the counters are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds alloc's contract (non-zero size layout).
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller passes a block this allocator (System) returned
        // with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A command: tag, size (filled in), code, then `body`.
fn command(tag: u16, code: u32, body: &[u8]) -> Vec<u8> {
    let size = u32::try_from(10 + body.len()).expect("small command");
    let mut out = Vec::new();
    out.extend_from_slice(&tag.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|d| u8::from_str_radix(std::str::from_utf8(d).expect("ASCII"), 16).expect("hex"))
        .collect()
}

/// CreatePrimary(owner, empty password) of a storage key with `public`
/// (a TPM2B_PUBLIC, hex).
fn create_primary(public: &str) -> Vec<u8> {
    let body = [
        hex("40000001 00000009 40000009 0000 00 0000"), // owner, password session
        hex("0004 0000 0000"),                          // inSensitive: no auth, no data
        hex(public),
        hex("0000 00000000"), // outsideInfo, creationPCR
    ]
    .concat();
    command(0x8002, 0x131, &body)
}

/// ECC storage keys (AES-128-CFB, no scheme, KDF NULL) on `curve`, and an
/// RSA-2048 storage key; all restricted decrypt, fixedTPM/Parent, noDA.
const ATTRIBUTES: &str = "00030472";
fn ecc_storage(curve: &str) -> String {
    format!("001a 0023 000b {ATTRIBUTES} 0000 0006 0080 0043 0010 {curve} 0010 0000 0000")
}
fn rsa_storage() -> String {
    format!("001a 0001 000b {ATTRIBUTES} 0000 0006 0080 0043 0010 0800 00000000 0000")
}

/// StartAuthSession(HMAC, unbound, unsalted, no symmetric, SHA-256).
fn start_hmac_session() -> Vec<u8> {
    let nonce = "0020 0101010101010101010101010101010101010101010101010101010101010101";
    let body = [hex("40000007 40000007"), hex(nonce), hex("0000 00 0010 000b")].concat();
    command(0x8001, 0x176, &body)
}

fn run(tpm: &mut Tpm, command: &[u8]) {
    let response = tpm.execute(ClientId(1), 0, command);
    let rc = u32::from_be_bytes([response[6], response[7], response[8], response[9]]);
    assert_eq!(rc, 0, "command {command:02x?} failed with {rc:#x}");
}

/// Prints the heap held since `baseline` (bytes live before manufacture).
fn report(stage: &str, tpm: &Tpm, baseline: usize) {
    println!(
        "memory {stage} live={} peak={} estimate={}",
        LIVE.load(Ordering::Relaxed).saturating_sub(baseline),
        PEAK.load(Ordering::Relaxed).saturating_sub(baseline),
        tpm.memory_in_use()
    );
}

fn main() {
    // Commands are built before the baseline so they do not count.
    let startup = command(0x8001, 0x144, &[0, 0]);
    let primaries: Vec<Vec<u8>> = [ecc_storage("0003"), ecc_storage("0004"), rsa_storage()]
        .iter()
        .map(|public| create_primary(public))
        .collect();
    let session = start_hmac_session();
    // stdout allocates its buffer at the first print: before the baseline.
    println!("vtpm heap in bytes (live now, peak so far, engine's estimate)");
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);

    let mut tpm = Tpm::manufacture(Box::new(OsEntropy)).expect("the OS has entropy");
    report("manufactured", &tpm, baseline);
    tpm.power_on();
    run(&mut tpm, &startup);
    report("started", &tpm, baseline);
    for primary in &primaries {
        run(&mut tpm, primary);
    }
    report("3-keys", &tpm, baseline);
    for _ in 0..3 {
        run(&mut tpm, &session);
    }
    report("3-keys-3-sessions", &tpm, baseline);
}
