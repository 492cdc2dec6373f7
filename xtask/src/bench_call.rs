//! `cargo xtask bench call`: how fast the SVSM answers a call. Boots the
//! test guest in its `bench` mode on the dev platform (QEMU TCG), which
//! times, with the TSC calibrated against the PIT:
//!
//! - an SVSM call: QUERY_PROTOCOL through the calling area (GHCB MSR
//!   Run-VMPL request, VMGEXIT, the request loop's dispatch, the result);
//! - a bare VMGEXIT round trip of the same shape (GHCB MSR write, VMGEXIT,
//!   MSR read) that the dev platform answers before any dispatch (the GHCB
//!   MSR protocol's SEV-information request).
//!
//! Prints both, calls per second, and the dispatch overhead as a share of
//! the bare round trip (goal: under 50%). Figures only: nothing here
//! asserts a time.

use anyhow::{Context, Result, bail};
use test_guest::mode::Mode;
use test_guest::report::{self, BenchFigures};

use crate::env::Env;
use crate::guest_tests;

/// The goal for the dispatch overhead, in percent of the bare round trip.
const OVERHEAD_GOAL_PERCENT: f64 = 50.0;

/// Runs the benchmark and prints its figures.
pub fn run(env: &Env) -> Result<()> {
    let image = guest_tests::build_image(env)?;
    let output = guest_tests::boot(&image.rom, Mode::Bench, 1)?;
    let figures = output.serial.lines().find_map(report::parse_bench).with_context(|| {
        format!(
            "the test guest printed no benchmark line ({:?}); its output is above",
            output.ending
        )
    })?;
    for line in describe(&figures)? {
        println!("{line}");
    }
    Ok(())
}

/// The lines the benchmark prints.
pub fn describe(f: &BenchFigures) -> Result<Vec<String>> {
    if f.tsc_hz == 0 || f.call_cycles == 0 || f.bare_cycles == 0 {
        bail!("implausible benchmark figures from the guest: {f:?}");
    }
    let hz = f.tsc_hz as f64;
    let micros = |cycles: u64| cycles as f64 * 1e6 / hz;
    let overhead = f.call_cycles as f64 - f.bare_cycles as f64;
    let percent = overhead / f.bare_cycles as f64 * 100.0;
    let verdict = if percent < OVERHEAD_GOAL_PERCENT { "goal met" } else { "goal missed" };
    Ok(vec![
        format!(
            "bench call: TSC {:.3} GHz (PIT-calibrated), {} round trips per figure",
            hz / 1e9,
            f.iterations
        ),
        format!(
            "bench call: SVSM call (QUERY_PROTOCOL)   {:>9} cycles  {:>8.2} us  {:>9.0} calls/s",
            f.call_cycles,
            micros(f.call_cycles),
            hz / f.call_cycles as f64
        ),
        format!(
            "bench call: bare VMGEXIT round trip      {:>9} cycles  {:>8.2} us  {:>9.0} round trips/s",
            f.bare_cycles,
            micros(f.bare_cycles),
            hz / f.bare_cycles as f64
        ),
        format!(
            "bench call: dispatch overhead {:.0} cycles = {percent:.1}% of the bare round trip (goal < {OVERHEAD_GOAL_PERCENT}%: {verdict})",
            overhead
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_described() {
        let f = BenchFigures {
            tsc_hz: 2_000_000_000,
            iterations: 2000,
            call_cycles: 60_000,
            bare_cycles: 50_000,
        };
        let lines = describe(&f).unwrap();
        assert!(
            lines[1].contains("30.00 us") && lines[1].contains("33333 calls/s"),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains("25.00 us") && lines[2].contains("40000"), "{}", lines[2]);
        assert!(lines[3].contains("20.0% of the bare round trip") && lines[3].contains("goal met"));
        let slow = BenchFigures { call_cycles: 100_000, ..f };
        assert!(
            describe(&slow).unwrap()[3].contains("100.0%")
                && describe(&slow).unwrap()[3].contains("goal missed")
        );
        assert!(describe(&BenchFigures { tsc_hz: 0, ..f }).is_err());
    }
}
