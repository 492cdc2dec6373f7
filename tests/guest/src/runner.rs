//! Counting and printing case results, and ending a run that cannot go on.

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use abi::svsm::SvsmError;

use crate::console;
use crate::report::{self, Verdict};
use crate::snp::CallOutcome;

static PASSED: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);
static CONSOLE_READY: AtomicBool = AtomicBool::new(false);

/// Records that the console works from now on.
pub fn console_ready() {
    CONSOLE_READY.store(true, Ordering::SeqCst);
}

/// Records and prints one case.
pub fn record(name: &str, ok: bool, detail: fmt::Arguments<'_>) -> bool {
    let verdict = if ok { Verdict::Pass } else { Verdict::Fail };
    if ok { &PASSED } else { &FAILED }.fetch_add(1, Ordering::SeqCst);
    console::with_console(|out| {
        let _ = report::write_case(out, name, verdict, detail);
    });
    ok
}

/// A result code with its spec name, for case lines.
pub struct Code(pub u32);

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, SvsmError::from_code(self.0)) {
            (0, _) => write!(f, "{:#x} SVSM_SUCCESS", self.0),
            (code, Some(SvsmError::Protocol(_))) => write!(f, "{code:#x} (protocol-specific)"),
            (code, Some(error)) => write!(f, "{code:#x} {}", error.name()),
            (code, None) => write!(f, "{code:#x}"),
        }
    }
}

/// Records a case that expects the call to reach the SVSM and return
/// exactly `expected`.
pub fn expect_code(name: &str, outcome: &CallOutcome, expected: u32) -> bool {
    if !outcome.delivered() {
        return record(
            name,
            false,
            format_args!(
                "call not completed (Run-VMPL response {:#x}, CALL_PENDING after {}), expected {}",
                outcome.msr_response,
                outcome.pending_after,
                Code(expected)
            ),
        );
    }
    let got = outcome.code();
    record(name, got == expected, format_args!("expected {}, got {}", Code(expected), Code(got)))
}

/// Records a failure if the run did not have exactly `expected` cases (a
/// case skipped by mistake must not go unnoticed).
pub fn check_count(expected: u32) {
    let ran = PASSED.load(Ordering::SeqCst) + FAILED.load(Ordering::SeqCst);
    if ran != expected {
        record("cases/all-ran", false, format_args!("{ran} cases ran, {expected} expected"));
    }
}

/// Prints the closing line; returns whether every case passed.
pub fn summary() -> bool {
    let (passed, failed) = (PASSED.load(Ordering::SeqCst), FAILED.load(Ordering::SeqCst));
    console::with_console(|out| {
        let _ = report::write_summary(out, passed, failed);
    });
    failed == 0 && passed > 0
}

/// Ends the run with a failure that stops the sequence (an exception, a
/// panic, a broken environment).
pub fn abort(args: fmt::Arguments<'_>) -> ! {
    if !CONSOLE_READY.load(Ordering::SeqCst) && crate::snp::encryption_active() {
        // On SNP the console needs the GHCB; without it, ask the host to stop.
        crate::snp::terminate();
    }
    FAILED.fetch_add(1, Ordering::SeqCst);
    crate::println!("{}FAIL: {args}", report::PREFIX);
    summary();
    console::exit(false)
}
