//! `cargo xtask bench call`, guest side: times, with the TSC calibrated
//! against the PIT,
//! - SVSM calls (QUERY_PROTOCOL through the calling area: Run-VMPL request,
//!   VMGEXIT, the request loop's dispatch, the result);
//! - a protocol switch without dispatch: a GHCB MSR round trip of the same
//!   shape (WRMSR, VMGEXIT, RDMSR: three exits) that the platform answers
//!   without the request loop (the SEV-information request);
//! - a single exit: the dev platform's null exit (one plain VMMCALL the
//!   platform returns from at once; dev platform only).
//!
//! Prints the figures; judging them is the xtask's (and the reader's)
//! business.

use abi::ghcb::{MsrRequest, MsrResponse};
use abi::svsm::{
    CORE_PROTOCOL_VERSION, CoreCall, PROTOCOL_CORE, SVSM_SUCCESS, query_protocol_request,
};

use crate::arch::{inb, null_exit, outb, rdtsc, relax};
use crate::console;
use crate::env::Env;
use crate::report::{self, BenchFigures};
use crate::snp::{self, CallRegs};

/// Round trips per timed loop.
const ITERATIONS: u64 = 2000;
/// Untimed round trips first.
const WARM_UP: u64 = 50;
/// PIT input clock.
const PIT_HZ: u64 = 1_193_182;
/// PIT ticks of the calibration window (50 ms).
const PIT_TICKS: u64 = 59_659;

/// Runs the benchmark and exits.
pub fn run(env: &Env) -> ! {
    let tsc_hz = calibrate_tsc();
    let query = CallRegs::core(
        CoreCall::QueryProtocol,
        query_protocol_request(PROTOCOL_CORE, CORE_PROTOCOL_VERSION),
        0,
        0,
    );
    let call = || {
        let outcome = snp::svsm_call(env.calling_area, query);
        outcome.delivered() && outcome.code() == SVSM_SUCCESS
    };
    let bare = || {
        let response = snp::msr_protocol(MsrRequest::SevInfo.encode());
        matches!(MsrResponse::decode(response), Ok(MsrResponse::SevInfo { .. }))
    };
    if !(0..WARM_UP).all(|_| call()) {
        crate::abort(format_args!("bench: the SVSM call (QUERY_PROTOCOL) fails"));
    }
    if !(0..WARM_UP).all(|_| bare()) {
        crate::abort(format_args!(
            "bench: the bare round trip (GHCB MSR SEV-information request) gets no SEV-information response"
        ));
    }
    // A platform without the null exit raises #UD (or #VC), which ends the
    // test guest with a report.
    let exit = || {
        null_exit();
        true
    };
    (0..WARM_UP).for_each(|_| {
        exit();
    });
    let call_cycles = time(call);
    let bare_cycles = time(bare);
    let exit_cycles = time(exit);
    let figures =
        BenchFigures { tsc_hz, iterations: ITERATIONS, call_cycles, bare_cycles, exit_cycles };
    console::with_console(|out| {
        let _ = report::write_bench(out, &figures);
    });
    console::exit(true)
}

/// Cycles per round trip of `round_trip`, over [`ITERATIONS`].
fn time(round_trip: impl Fn() -> bool) -> u64 {
    let start = rdtsc();
    let mut ok = true;
    for _ in 0..ITERATIONS {
        ok &= round_trip();
    }
    let cycles = rdtsc().wrapping_sub(start) / ITERATIONS;
    if !ok {
        crate::abort(format_args!("bench: a timed round trip failed"));
    }
    cycles
}

/// The TSC frequency, measured over 50 ms of PIT channel 2 (mode 0, gate
/// through port 0x61).
fn calibrate_tsc() -> u64 {
    outb(0x61, (inb(0x61) & !0x02) | 0x01); // gate on, speaker off
    outb(0x43, 0xB0); // channel 2, lobyte/hibyte, mode 0, binary
    outb(0x42, PIT_TICKS as u8);
    outb(0x42, (PIT_TICKS >> 8) as u8);
    let start = rdtsc();
    let mut spins = 0u64;
    while inb(0x61) & 0x20 == 0 {
        spins += 1;
        if spins > 1_000_000_000 {
            crate::abort(format_args!("bench: PIT channel 2 never counted down"));
        }
        relax();
    }
    let cycles = rdtsc().wrapping_sub(start);
    cycles * PIT_HZ / PIT_TICKS
}
