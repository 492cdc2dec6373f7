//! `cargo xtask bench call`: how fast the SVSM answers a call. Boots the
//! test guest in its `bench` mode on the dev platform (QEMU TCG), which
//! times, with the TSC calibrated against the PIT, in one run:
//!
//! - an SVSM call: QUERY_PROTOCOL through the calling area (GHCB MSR
//!   Run-VMPL request, VMGEXIT, the request loop's dispatch, the result);
//! - a protocol switch without dispatch: a GHCB MSR round trip of the same
//!   shape (WRMSR, VMGEXIT, RDMSR: three exits) that the dev platform
//!   answers in its exit handler (the SEV-information request);
//! - a single exit: the dev platform's null exit, one plain VMMCALL that the
//!   exit handler returns from at once (`abi::vmcb::DEV_NULL_EXIT_RAX`; see
//!   `kernel::platform::dev`): the literal "bare VMMCALL exit-and-return".
//!
//! Prints each per round trip, calls per second, the ratios of the call to
//! each baseline and the overhead over each in percent against the issue's
//! goal (overhead under 50% of the bare round trip). Figures only: nothing
//! here asserts a time.

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
    if f.tsc_hz == 0 || f.call_cycles == 0 || f.bare_cycles == 0 || f.exit_cycles == 0 {
        bail!("implausible benchmark figures from the guest: {f:?}");
    }
    let hz = f.tsc_hz as f64;
    let figure = |name: &str, cycles: u64, unit: &str| {
        format!(
            "bench call: {name:<46} {cycles:>9} cycles  {:>8.2} us  {:>9.0} {unit}/s",
            cycles as f64 * 1e6 / hz,
            hz / cycles as f64
        )
    };
    let against = |baseline: &str, cycles: u64| {
        let ratio = f.call_cycles as f64 / cycles as f64;
        let overhead = f.call_cycles as f64 - cycles as f64;
        let percent = overhead / cycles as f64 * 100.0;
        let verdict = if percent < OVERHEAD_GOAL_PERCENT { "met" } else { "missed" };
        format!(
            "bench call: call / {baseline} = {ratio:.2}: overhead {overhead:.0} cycles = \
             {percent:.1}% of it (goal < {OVERHEAD_GOAL_PERCENT}%: {verdict})"
        )
    };
    Ok(vec![
        format!(
            "bench call: TSC {:.3} GHz (PIT-calibrated), {} round trips per figure",
            hz / 1e9,
            f.iterations
        ),
        figure("SVSM call (QUERY_PROTOCOL: 3 exits + dispatch)", f.call_cycles, "calls"),
        figure("protocol switch, no dispatch (3 exits)", f.bare_cycles, "round trips"),
        figure("single VMMCALL exit-and-return (null exit)", f.exit_cycles, "exits"),
        against("protocol switch", f.bare_cycles),
        against("single exit", f.exit_cycles),
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
            exit_cycles: 20_000,
        };
        let lines = describe(&f).unwrap();
        assert!(
            lines[1].contains("30.00 us") && lines[1].contains("33333 calls/s"),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains("25.00 us") && lines[2].contains("40000"), "{}", lines[2]);
        assert!(
            lines[3].contains("10.00 us") && lines[3].contains("100000 exits/s"),
            "{}",
            lines[3]
        );
        assert!(
            lines[4].contains("protocol switch = 1.20")
                && lines[4].contains("10000 cycles = 20.0%")
                && lines[4].contains("met"),
            "{}",
            lines[4]
        );
        assert!(
            lines[5].contains("single exit = 3.00")
                && lines[5].contains("200.0%")
                && lines[5].contains("missed"),
            "{}",
            lines[5]
        );
        assert!(describe(&BenchFigures { tsc_hz: 0, ..f }).is_err());
        assert!(describe(&BenchFigures { exit_cycles: 0, ..f }).is_err());
    }
}
