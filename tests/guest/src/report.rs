//! The lines the test guest prints and the xtask reads back: one line per
//! case, the closing `N passed, N failed` line, the announcement of a
//! deliberate access to SVSM memory, and the benchmark figures. Written
//! and parsed here, once.

use core::fmt::{self, Write};

/// Prefix of every line the guest prints.
pub const PREFIX: &str = "test-guest: ";
/// Prefix of a case line.
pub const CASE: &str = "test-guest: case ";
/// Prefix of the announcement of a deliberate SVSM-memory access.
pub const TOUCH: &str = "test-guest: touching SVSM memory: ";
/// What the guest prints if that access was not stopped.
pub const NOT_STOPPED: &str = "test-guest: FAIL: the SVSM-memory access was not stopped";
/// Prefix of the benchmark line.
pub const BENCH: &str = "test-guest: bench ";

/// Number of cases the `calls` mode runs (the guest checks it ran them all;
/// the xtask checks it saw them all): the core-protocol cases and the vTPM
/// ones.
pub const CALL_CASES: u32 = 92 + crate::vtpm_commands::VTPM_CASES;
/// Number of cases the `attest` mode runs.
pub const ATTEST_CASES: u32 = 49;

/// How a case ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// As expected.
    Pass,
    /// Not as expected.
    Fail,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
        }
    }
}

/// Writes one case line: `test-guest: case NAME: PASS|FAIL: DETAIL`.
pub fn write_case(
    out: &mut impl Write,
    name: &str,
    verdict: Verdict,
    detail: fmt::Arguments<'_>,
) -> fmt::Result {
    writeln!(out, "{CASE}{name}: {}: {detail}", verdict.word())
}

/// Writes the closing line.
pub fn write_summary(out: &mut impl Write, passed: u32, failed: u32) -> fmt::Result {
    writeln!(out, "{PREFIX}{passed} passed, {failed} failed")
}

/// Which deliberate access the guest makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A load.
    Read,
    /// A store.
    Write,
}

impl Access {
    /// The word in the announcement.
    pub fn word(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// Writes the announcement of a deliberate access to SVSM memory.
pub fn write_touch(out: &mut impl Write, access: Access, gpa: u64) -> fmt::Result {
    writeln!(out, "{TOUCH}{} gpa={gpa:#x}", access.word())
}

/// The benchmark figures, in TSC cycles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchFigures {
    /// TSC frequency measured against the PIT.
    pub tsc_hz: u64,
    /// Round trips timed per loop.
    pub iterations: u64,
    /// Cycles per SVSM call (QUERY_PROTOCOL through the calling area).
    pub call_cycles: u64,
    /// Cycles per protocol switch without dispatch: a GHCB MSR round trip
    /// (WRMSR, VMGEXIT, RDMSR) answered without the request loop.
    pub bare_cycles: u64,
    /// Cycles per single exit: the dev platform's null exit (one VMMCALL).
    pub exit_cycles: u64,
}

/// Writes the benchmark line.
pub fn write_bench(out: &mut impl Write, f: &BenchFigures) -> fmt::Result {
    writeln!(
        out,
        "{BENCH}tsc_hz={} iterations={} call_cycles={} bare_cycles={} exit_cycles={}",
        f.tsc_hz, f.iterations, f.call_cycles, f.bare_cycles, f.exit_cycles
    )
}

/// A case line read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaseLine<'a> {
    /// The case's name.
    pub name: &'a str,
    /// Its verdict.
    pub verdict: Verdict,
    /// The rest of the line.
    pub detail: &'a str,
}

/// Parses a case line.
pub fn parse_case(line: &str) -> Option<CaseLine<'_>> {
    let rest = line.trim_end().strip_prefix(CASE)?;
    let (name, rest) = rest.split_once(": ")?;
    let (word, detail) = rest.split_once(": ").unwrap_or((rest, ""));
    let verdict = match word {
        "PASS" => Verdict::Pass,
        "FAIL" => Verdict::Fail,
        _ => return None,
    };
    Some(CaseLine { name, verdict, detail })
}

/// Parses the closing line into (passed, failed).
pub fn parse_summary(line: &str) -> Option<(u32, u32)> {
    let rest = line.trim_end().strip_prefix(PREFIX)?;
    let (passed, rest) = rest.split_once(" passed, ")?;
    let failed = rest.strip_suffix(" failed")?;
    Some((passed.parse().ok()?, failed.parse().ok()?))
}

/// Parses an announcement into (access, gpa).
pub fn parse_touch(line: &str) -> Option<(Access, u64)> {
    let rest = line.trim_end().strip_prefix(TOUCH)?;
    let (word, gpa) = rest.split_once(" gpa=")?;
    let access = match word {
        "read" => Access::Read,
        "write" => Access::Write,
        _ => return None,
    };
    Some((access, parse_hex(gpa)?))
}

/// Parses the benchmark line.
pub fn parse_bench(line: &str) -> Option<BenchFigures> {
    let rest = line.trim_end().strip_prefix(BENCH)?;
    let mut figures =
        BenchFigures { tsc_hz: 0, iterations: 0, call_cycles: 0, bare_cycles: 0, exit_cycles: 0 };
    let mut seen = 0;
    for field in rest.split(' ') {
        let (key, value) = field.split_once('=')?;
        let value: u64 = value.parse().ok()?;
        let slot = match key {
            "tsc_hz" => &mut figures.tsc_hz,
            "iterations" => &mut figures.iterations,
            "call_cycles" => &mut figures.call_cycles,
            "bare_cycles" => &mut figures.bare_cycles,
            "exit_cycles" => &mut figures.exit_cycles,
            _ => return None,
        };
        *slot = value;
        seen += 1;
    }
    (seen == 5).then_some(figures)
}

/// Parses `0x`-prefixed hex.
pub fn parse_hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.strip_prefix("0x")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let mut s = String::new();
        write_case(&mut s, "pvalidate/list-in-svsm", Verdict::Pass, format_args!("got 0x80000003"))
            .unwrap();
        write_summary(&mut s, 41, 2).unwrap();
        write_touch(&mut s, Access::Write, 0x800_0000).unwrap();
        let figures = BenchFigures {
            tsc_hz: 2_100_000_000,
            iterations: 500,
            call_cycles: 90_000,
            bare_cycles: 70_000,
            exit_cycles: 20_000,
        };
        write_bench(&mut s, &figures).unwrap();
        let lines: Vec<_> = s.lines().collect();
        assert_eq!(lines[0], "test-guest: case pvalidate/list-in-svsm: PASS: got 0x80000003");
        assert_eq!(
            parse_case(lines[0]),
            Some(CaseLine {
                name: "pvalidate/list-in-svsm",
                verdict: Verdict::Pass,
                detail: "got 0x80000003"
            })
        );
        assert_eq!(lines[1], "test-guest: 41 passed, 2 failed");
        assert_eq!(parse_summary(lines[1]), Some((41, 2)));
        assert_eq!(parse_touch(lines[2]), Some((Access::Write, 0x800_0000)));
        assert_eq!(parse_bench(lines[3]), Some(figures));
    }

    #[test]
    fn other_lines_are_not_mistaken() {
        assert_eq!(parse_case("test-guest: case x: MAYBE: y"), None);
        assert_eq!(parse_summary("test-guest: many passed, 0 failed"), None);
        assert_eq!(parse_summary("SVSM: 3 passed, 0 failed"), None);
        assert_eq!(parse_touch("test-guest: touching SVSM memory: read gpa=12"), None);
        assert_eq!(parse_bench("test-guest: bench tsc_hz=1"), None);
        let without_exit = "test-guest: bench tsc_hz=1 iterations=2 call_cycles=3 bare_cycles=4";
        assert_eq!(parse_bench(without_exit), None, "all five figures are needed");
    }
}
