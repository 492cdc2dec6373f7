//! The test-guest boots of `cargo xtask test`: builds the test guest
//! (`tests/guest`), packages it in place of OVMF into the IGVM file, and
//! boots the SVSM under QEMU TCG on the dev platform (`EPYC-v4,+svm,+npt`),
//! once per mode of these:
//!
//! - `calls`: every core call, valid and hostile; the guest prints one line
//!   per case and `N passed, N failed`, then exits through the debug-exit
//!   port. Every case must pass and the count must be the guest's.
//! - `read-svsm` / `write-svsm`: the guest announces an access to SVSM
//!   memory and makes it; the SVSM must stop the guest and report it (D1's
//!   line `guest stopped: vCPU <apic> rip=0x.. gpa=0x.. <read|write>, owner
//!   svsm` naming the announced GPA and access), and the guest must not live
//!   on to say it was not stopped.
//!
//! The `attest` mode is booted by `attest_e2e`, `bench` by `bench_call`.
//! The mode reaches the guest through a QEMU fw_cfg file
//! (`test_guest::mode`). Output lines are read with `test_guest::report`,
//! the same code that writes them.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use test_guest::layout;
use test_guest::mode::Mode;
use test_guest::report::{self, Access, Verdict};

use crate::builder::{self, BuildOptions, BuiltImage, FirmwareChoice, KERNEL_FEATURES};
use crate::env::Env;
use crate::firmware::GuestFirmware;
use crate::qemu::{self, BootResult, Ending, QemuOptions};
use crate::setup;

/// vCPUs: the boot vCPU and the AP the guest creates.
const CPUS: u32 = 2;
/// How long one boot may take.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// `cargo xtask test`, test-guest part: fails unless every case passes.
pub fn run(env: &Env) -> Result<()> {
    let image = build_image(env)?;
    let mut tally = Tally::new("guest-tests");
    let calls = boot(&image.rom, Mode::Calls, CPUS)?;
    check_cases(&calls, Mode::Calls, report::CALL_CASES, &mut tally);
    for access in [Access::Read, Access::Write] {
        let mode = if access == Access::Read { Mode::ReadSvsm } else { Mode::WriteSvsm };
        let output = boot(&image.rom, mode, 1)?;
        check_touch(&output, access, &mut tally);
    }
    println!("guest-tests: {} passed, {} failed", tally.passed, tally.failed);
    if tally.failed > 0 || tally.passed == 0 {
        bail!("the test guest's checks failed ({} of {})", tally.failed, tally.total());
    }
    Ok(())
}

/// Builds the guest, checks its SEV metadata, and packages it with the
/// SVSM into `build/test-guest/` (IGVM file and `-bios` ROM).
pub fn build_image(env: &Env) -> Result<BuiltImage> {
    setup::ensure_bare_metal_target()?;
    setup::ensure_binutils()?;
    setup::ensure_boot_tools(env)?;
    let elf = builder::build_bare_metal(env, "test-guest", "bare-metal")?;
    let out = env.build.join("test-guest");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let image_path = out.join("test-guest.fd");
    let elf_bytes = std::fs::read(&elf).with_context(|| format!("reading {}", elf.display()))?;
    std::fs::write(&image_path, flat_image(&elf_bytes)?)
        .with_context(|| format!("writing {}", image_path.display()))?;
    let firmware = GuestFirmware::ovmf(&image_path)?;
    check_metadata(&firmware)?;
    builder::build(
        env,
        &BuildOptions {
            kernel_features: KERNEL_FEATURES.to_string(),
            firmware: FirmwareChoice::Image(firmware),
            out_dir: out,
            id_key: None,
        },
    )
}

/// The firmware image from the guest's ELF: every segment with file data
/// stored (LMA) inside the image, which ends at 4 GiB.
pub fn flat_image(elf_bytes: &[u8]) -> Result<Vec<u8>> {
    let elf =
        abi::elf::Elf::parse(elf_bytes).map_err(|e| anyhow::anyhow!("test-guest ELF: {e}"))?;
    let mut image = vec![0u8; layout::IMAGE_SIZE as usize];
    for segment in elf.segments().filter(|s| !s.file_data.is_empty()) {
        let end = segment.paddr + segment.file_data.len() as u64;
        ensure!(
            segment.paddr >= layout::IMAGE_BASE && end <= 1 << 32,
            "test-guest segment stored at {:#x}..{end:#x} lies outside its image {:#x}..4 GiB (guest.ld)",
            segment.paddr,
            layout::IMAGE_BASE
        );
        let at = (segment.paddr - layout::IMAGE_BASE) as usize;
        image[at..at + segment.file_data.len()].copy_from_slice(segment.file_data);
    }
    Ok(image)
}

/// The metadata the SVSM will act on must be what the guest expects.
fn check_metadata(firmware: &GuestFirmware) -> Result<()> {
    let sev = firmware.sev.as_ref().context("the test guest image has no SEV metadata")?;
    let expected = (
        layout::SECRETS_GPA,
        layout::CPUID_GPA,
        layout::CALLING_AREA_GPA,
        vec![abi::boot::MemoryRange {
            base: layout::PREVALIDATED_BASE,
            size: layout::PREVALIDATED_SIZE,
        }],
    );
    let found = (sev.secrets_gpa, sev.cpuid_gpa, sev.calling_area_gpa, sev.prevalidated.clone());
    ensure!(
        found == expected,
        "the test guest's SEV metadata {found:x?} differs from its layout {expected:x?}"
    );
    Ok(())
}

/// Boots the image with the guest in `mode` (chosen through the fw_cfg
/// file the guest reads); the serial output is echoed as it arrives.
pub fn boot(rom: &Path, mode: Mode, cpus: u32) -> Result<BootResult> {
    let options = QemuOptions {
        cpu: qemu::DEV_PLATFORM_CPU.to_string(),
        cpus,
        timeout: BOOT_TIMEOUT,
        extra_args: vec!["-fw_cfg".to_string(), mode.fw_cfg_value().to_string()],
        ..QemuOptions::default()
    };
    println!("guest-tests: booting the test guest in mode {}", mode.name());
    qemu::boot(rom, &options)
}

/// Named checks, one printed line each, counted.
pub struct Tally {
    prefix: &'static str,
    passed: u32,
    failed: u32,
}

impl Tally {
    /// An empty tally whose lines start with `prefix`.
    pub fn new(prefix: &'static str) -> Tally {
        Tally { prefix, passed: 0, failed: 0 }
    }

    /// Checks that passed.
    pub fn passed(&self) -> u32 {
        self.passed
    }

    /// Checks that failed.
    pub fn failed(&self) -> u32 {
        self.failed
    }

    /// All checks.
    pub fn total(&self) -> u32 {
        self.passed + self.failed
    }

    /// Records and prints one check.
    pub fn check(&mut self, name: &str, ok: bool, detail: &str) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        println!("{}: {name}: {}: {detail}", self.prefix, if ok { "PASS" } else { "FAIL" });
    }
}

/// Findings of the `calls` boot.
#[derive(Debug, PartialEq, Eq)]
pub struct CallsReport {
    /// Case lines that passed.
    pub passed: u32,
    /// Names of case lines that failed.
    pub failed: Vec<String>,
    /// The guest's closing line, if printed.
    pub summary: Option<(u32, u32)>,
}

/// Reads the case lines and the closing line of a `calls` boot.
pub fn parse_calls(serial: &str) -> CallsReport {
    let mut report = CallsReport { passed: 0, failed: Vec::new(), summary: None };
    for line in serial.lines() {
        if let Some(case) = report::parse_case(line) {
            match case.verdict {
                Verdict::Pass => report.passed += 1,
                Verdict::Fail => report.failed.push(case.name.to_string()),
            }
        } else if let Some(summary) = report::parse_summary(line) {
            report.summary = Some(summary);
        }
    }
    report
}

/// Checks a case-running boot (`calls`, `attest`): every case line passed,
/// the guest ran exactly `expected` cases, its closing line agrees, and it
/// ended through the debug-exit port with success. `mode` names the checks.
pub fn check_cases(output: &BootResult, mode: Mode, expected: u32, tally: &mut Tally) {
    let report = parse_calls(&output.serial);
    let seen = report.passed + report.failed.len() as u32;
    let mode = mode.name();
    for name in &report.failed {
        tally.check(&format!("{mode}/{name}"), false, "see the guest's line above");
    }
    tally.passed += report.passed;
    tally.check(
        &format!("{mode}/closing-line"),
        report.summary == Some((report.passed, report.failed.len() as u32)),
        &format!(
            "the guest's `N passed, N failed` {:?} matches its {seen} case lines",
            report.summary
        ),
    );
    tally.check(
        &format!("{mode}/case-count"),
        seen == expected,
        &format!("{seen} cases ran, the guest has {expected}"),
    );
    tally.check(
        &format!("{mode}/exit"),
        output.ending.is_success(),
        &format!(
            "{} after {:.1} s (expected the guest's success exit)",
            output.ending.describe(BOOT_TIMEOUT),
            output.elapsed.as_secs_f64()
        ),
    );
}

/// The verdict on a deliberate SVSM-memory access: the SVSM's report line
/// naming the address, or why the check failed.
pub fn judge_touch(serial: &str, access: Access) -> Result<String, String> {
    let mut announced = None;
    let mut report_line = None;
    for line in serial.lines() {
        if let Some((seen_access, gpa)) = report::parse_touch(line) {
            announced = Some((seen_access, gpa));
            continue;
        }
        if line.starts_with(report::NOT_STOPPED) {
            return Err("the guest was not stopped: it read or wrote SVSM memory".to_string());
        }
        if let Some((seen, gpa)) = announced {
            let lower = line.to_ascii_lowercase();
            if !line.starts_with(report::PREFIX)
                && lower.contains("guest stopped")
                && names_address(&lower, gpa)
                && lower.contains(seen.word())
                && lower.contains("owner svsm")
            {
                report_line = Some(line.trim().to_string());
            }
        }
    }
    match (announced, report_line) {
        (None, _) => Err("the guest never announced the access".to_string()),
        (Some((seen, _)), _) if seen != access => {
            Err(format!("the guest announced a {} instead of a {}", seen.word(), access.word()))
        }
        (Some((_, gpa)), None) => {
            Err(format!("no SVSM line reports the guest stopped at {gpa:#x}"))
        }
        (Some(_), Some(line)) => Ok(line),
    }
}

/// Whether `line` names `gpa` as a whole hex number (0x8000000 is not in
/// 0x80000000).
fn names_address(line: &str, gpa: u64) -> bool {
    let wanted = format!("{gpa:#x}");
    line.match_indices(&wanted)
        .any(|(at, _)| !line[at + wanted.len()..].starts_with(|c: char| c.is_ascii_hexdigit()))
}

fn check_touch(output: &BootResult, access: Access, tally: &mut Tally) {
    let name = format!("svsm-memory/{}", access.word());
    match judge_touch(&output.serial, access) {
        Ok(line) => tally.check(
            &name,
            !matches!(output.ending, Ending::Timeout | Ending::Killed),
            &format!(
                "stopped and reported by the SVSM: \"{line}\" ({})",
                output.ending.describe(BOOT_TIMEOUT)
            ),
        ),
        Err(why) => tally.check(&name, false, &why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_output_is_counted() {
        let serial = "SVSM: booting\r\n\
            test-guest: case a/b: PASS: expected 0x0 SVSM_SUCCESS, got 0x0 SVSM_SUCCESS\r\n\
            test-guest: case a/c: FAIL: expected 0x80000003, got 0x80000005\r\n\
            test-guest: case d: PASS: x\r\n\
            test-guest: 2 passed, 1 failed\r\n";
        assert_eq!(
            parse_calls(serial),
            CallsReport { passed: 2, failed: vec!["a/c".to_string()], summary: Some((2, 1)) }
        );
    }

    #[test]
    fn touch_needs_the_svsm_report_after_the_announcement() {
        let stopped = "test-guest: touching SVSM memory: write gpa=0x8200000\n\
                       guest stopped: vCPU 0 rip=0xabc gpa=0x8200000 write, owner svsm\n";
        assert_eq!(
            judge_touch(stopped, Access::Write),
            Ok("guest stopped: vCPU 0 rip=0xabc gpa=0x8200000 write, owner svsm".to_string())
        );
        assert!(judge_touch(stopped, Access::Read).is_err(), "wrong access");
        let survived = "test-guest: touching SVSM memory: read gpa=0x8000000\n\
                        test-guest: FAIL: the SVSM-memory access was not stopped (read 0x0)\n";
        assert!(judge_touch(survived, Access::Read).unwrap_err().contains("not stopped"));
        let silent = "test-guest: touching SVSM memory: read gpa=0x8000000\n";
        assert!(judge_touch(silent, Access::Read).unwrap_err().contains("no SVSM line"));
        let other_address = "test-guest: touching SVSM memory: read gpa=0x8000000\n\
                             guest stopped: vCPU 0 rip=0x1 gpa=0x80000000 read, owner svsm\n";
        assert!(judge_touch(other_address, Access::Read).is_err());
        assert!(judge_touch("", Access::Read).unwrap_err().contains("never announced"));
    }

    /// The guest's SEV metadata block and GUIDed table, placed where its
    /// linker script puts them, read by the same parser the IGVM builder
    /// uses for OVMF.
    #[test]
    fn guest_metadata_parses_with_the_ovmf_parser() {
        let mut image = vec![0u8; layout::IMAGE_SIZE as usize];
        let at = |gpa: u64| (gpa - layout::IMAGE_BASE) as usize;
        let metadata = layout::sev_metadata_bytes();
        let metadata_at = at(layout::SEV_METADATA_GPA);
        image[metadata_at..metadata_at + metadata.len()].copy_from_slice(&metadata);
        let table = layout::guid_table_area();
        let table_at = at(layout::GUID_TABLE_AREA_GPA);
        image[table_at..table_at + table.len()].copy_from_slice(&table);
        let sev = crate::firmware::parse_sev_metadata(&image).unwrap();
        let firmware = GuestFirmware { name: "test guest".into(), image, sev: Some(sev) };
        check_metadata(&firmware).unwrap();
    }

    #[test]
    fn flat_image_rejects_segments_outside_the_image() {
        assert!(flat_image(b"not an elf").is_err());
    }
}
