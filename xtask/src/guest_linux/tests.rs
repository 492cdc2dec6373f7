//! Host tests of the payload, the output parsing and the replay check.

use super::*;

fn lines(text: &str) -> Vec<TimedLine> {
    text.lines()
        .enumerate()
        .map(|(i, t)| TimedLine { at: Duration::from_millis(100 * i as u64), text: t.to_string() })
        .collect()
}

const FIXTURE_LOG: &[u8] =
    include_bytes!("../../../tests/linux/fixtures/swtpm-ovmf/binary_bios_measurements");
const FIXTURE_PCRS: &str = include_str!("../../../tests/linux/fixtures/swtpm-ovmf/pcrs.txt");

#[test]
fn output_is_parsed_from_tagged_lines() {
    let text = "\
[INFO ] SVSM kernel: platform Dev
\u{1b}[2J\u{1b}[01;01HGUEST-INIT kernel=6.12.117+deb13-amd64 uptime=2.69
GUEST-PCR sha256 0 0101271704CCC2360DDBB08438D591C23FB8A0A9CB0CEBC60CEFEA7868833F8E
GUEST-PCR sha1 7 4037336fa7bc0eabe3778fcfff5fcd0ee6adcde3
GUEST-EVENTLOG-BEGIN
00010203
[    3.1] a kernel message in between
0405
GUEST-EVENTLOG-END
GUEST-TPM-READS count=50 start=3.20 end=3.70
GUEST-PROBE-VALUE 0x00000000
GUEST-POWEROFF uptime=3.90
[INFO ] vTPM PCR sha256 0 00ff
";
    let out = parse_output(&lines(text)).unwrap();
    assert_eq!(out.init_at, Some(Duration::from_millis(100)));
    assert_eq!(out.poweroff_at, Some(Duration::from_millis(1100)));
    assert_eq!(out.guest_pcrs[&eventlog::TPM_ALG_SHA256][0][..2], [0x01, 0x01]);
    assert_eq!(out.guest_pcrs[&eventlog::TPM_ALG_SHA1][7][..2], [0x40, 0x37]);
    assert_eq!(out.event_log.as_deref(), Some(&[0, 1, 2, 3, 4, 5][..]));
    let (count, seconds) = out.tpm_reads.unwrap();
    assert_eq!(count, 50);
    assert!((seconds - 0.5).abs() < 1e-9);
    assert_eq!(out.probe_value.as_deref(), Some("0x00000000"));
    assert_eq!(out.svsm_pcrs[&eventlog::TPM_ALG_SHA256][0], [0x00, 0xFF]);
}

#[test]
fn malformed_tagged_lines_are_errors() {
    for bad in [
        "GUEST-PCR sha256 0",
        "GUEST-PCR sha3 0 00",
        "GUEST-PCR sha256 24 00",
        "GUEST-PCR sha256 0 0g",
    ] {
        assert!(parse_output(&lines(bad)).is_err(), "{bad}");
    }
    let odd = "GUEST-EVENTLOG-BEGIN\n012\nGUEST-EVENTLOG-END";
    assert!(parse_output(&lines(odd)).is_err());
}

#[test]
fn replay_check_accepts_the_real_boot_and_names_a_wrong_pcr() {
    let out = parse_output(&lines(FIXTURE_PCRS)).unwrap();
    let check = check_replay(FIXTURE_LOG, &out.guest_pcrs).unwrap();
    assert_eq!(check.events, 28);
    assert_eq!(check.banks, ["sha1", "sha256", "sha384", "sha512"]);
    let mut wrong = out.guest_pcrs.clone();
    wrong.get_mut(&eventlog::TPM_ALG_SHA256).unwrap()[4][0] ^= 1;
    let error = check_replay(FIXTURE_LOG, &wrong).unwrap_err().to_string();
    assert!(error.contains("sha256 PCR 4"), "{error}");
    assert!(check_replay(FIXTURE_LOG, &Banks::new()).is_err(), "no PCRs is no pass");
}

#[test]
fn the_newest_trixie_6_12_kernel_is_chosen() {
    let search = "\
linux-image-6.12.107+deb13-amd64 - Linux 6.12 for 64-bit PCs (signed)
linux-image-6.12.117+deb13-amd64 - Linux 6.12 for 64-bit PCs (signed)
linux-image-6.12.117+deb13-cloud-amd64 - Linux 6.12 for x86-64 cloud (signed)
linux-image-6.12.99+deb13-amd64 - Linux 6.12 for 64-bit PCs (signed)
";
    assert_eq!(newest_kernel_package(search).as_deref(), Some("linux-image-6.12.117+deb13-amd64"));
    assert_eq!(newest_kernel_package(""), None);
}

#[test]
fn the_altered_kernel_differs_in_its_pe_time_stamp_only() {
    let dir = std::env::temp_dir().join(format!("guest-linux-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut image = vec![0u8; 0x200];
    image[..2].copy_from_slice(b"MZ");
    image[0x3C..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    image[0x80..0x84].copy_from_slice(b"PE\0\0");
    image[0x88] = 0xFF;
    std::fs::write(dir.join("k"), &image).unwrap();
    altered_kernel(&dir.join("k"), &dir.join("k2")).unwrap();
    let altered = std::fs::read(dir.join("k2")).unwrap();
    let differing: Vec<usize> = (0..image.len()).filter(|&i| image[i] != altered[i]).collect();
    assert_eq!(differing, [0x88]);
    std::fs::write(dir.join("not-pe"), [0u8; 0x100]).unwrap();
    assert!(altered_kernel(&dir.join("not-pe"), &dir.join("x")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The members of a newc archive: (name, mode, rdev major, rdev minor, data).
fn members(archive: &[u8]) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        let field = |i: usize| {
            let text = std::str::from_utf8(&archive[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap();
            u32::from_str_radix(text, 16).unwrap() as usize
        };
        assert_eq!(&archive[at..at + 6], b"070701");
        let (mode, size, major, minor, name_size) =
            (field(1), field(6), field(9), field(10), field(11));
        let name =
            std::str::from_utf8(&archive[at + 110..at + 110 + name_size - 1]).unwrap().to_string();
        let data_at = (at + 110 + name_size).next_multiple_of(4);
        if name == "TRAILER!!!" {
            return out;
        }
        out.push((
            name,
            mode as u32,
            major as u32,
            minor as u32,
            archive[data_at..data_at + size].to_vec(),
        ));
        at = (data_at + size).next_multiple_of(4);
    }
}

#[test]
fn the_initramfs_has_init_busybox_and_the_device_nodes() {
    let archive = initramfs(b"\x7fELF busybox");
    let members = members(&archive);
    let find =
        |name: &str| members.iter().find(|m| m.0 == name).unwrap_or_else(|| panic!("no {name}"));
    assert_eq!(find("init").1, 0o100755);
    assert_eq!(find("init").4, INIT_SCRIPT.as_bytes());
    assert_eq!(find("bin/busybox").4, b"\x7fELF busybox");
    assert_eq!(find("bin/sh").4, b"busybox");
    assert_eq!(
        (find("dev/console").1, find("dev/console").2, find("dev/console").3),
        (0o020600, 5, 1)
    );
    assert_eq!((find("dev/mem").2, find("dev/mem").3), (1, 1));
    for dir in ["proc", "sys", "tmp", "dev", "bin"] {
        assert_eq!(find(dir).1 & 0o170000, 0o040000, "{dir}");
    }
}

#[test]
fn the_probe_goes_on_the_command_line() {
    assert_eq!(command_line(&BootOptions::default()), KERNEL_COMMAND_LINE);
    let probed = BootOptions { probe: Some(0x920_0000), ..BootOptions::default() };
    assert!(command_line(&probed).ends_with(" svsm_probe=0x9200000"));
}

/// A run whose VM exited with `code` (`None`: killed at the timeout).
fn run_log_ending(text: &str, code: Option<i32>) -> RunLog {
    use std::os::unix::process::ExitStatusExt;
    RunLog {
        lines: lines(text),
        status: code.map(|code| std::process::ExitStatus::from_raw(code << 8)),
        elapsed: Duration::from_secs(9),
        stderr: String::new(),
    }
}

/// A run the SVSM ended with success.
fn run_log(text: &str) -> RunLog {
    run_log_ending(text, Some(exit_status(EXIT_SUCCESS)))
}

#[test]
fn a_boot_is_judged_on_replay_and_the_vtpms_own_pcrs() {
    let mut text = String::from(
        "[INFO ] SVSM kernel: platform Dev\n\
         [INFO ] vTPM: manufactured in 1 M TSC cycles; EK RSA-2048 (314 byte public area); state in SVSM memory at 0x917b000: 9 KiB\n\
         [INFO ] starting the guest firmware at VMPL2\n\
         [INFO ] CRB: first PCR_Extend (the guest's first measurement)\n\
         GUEST-INIT kernel=6.12\n",
    );
    text.push_str(FIXTURE_PCRS);
    text.push_str("GUEST-EVENTLOG-BEGIN\n");
    text.push_str(&hex(FIXTURE_LOG));
    text.push_str("\nGUEST-EVENTLOG-END\n");
    for line in FIXTURE_PCRS.lines() {
        text.push_str(&line.replace("GUEST-PCR", "[INFO ] vTPM PCR"));
        text.push('\n');
    }
    let boot = SvsmBoot::analyse(run_log(&text)).unwrap();
    assert_eq!(boot.vtpm_state_address, Some(0x917_b000));
    assert!(boot.replay.is_ok());
    assert_eq!(boot.pcr_disagreements().unwrap(), Vec::<String>::new());
    boot.verdict().unwrap();
    let summary = boot.summary();
    assert!(summary.contains("event log replay: matches PCR 0-7 (28 events"), "{summary}");
    assert!(summary.contains("first measurement 0.3 s"), "{summary}");

    // The vTPM disagreeing on one PCR fails the boot.
    let tampered = text.replacen("[INFO ] vTPM PCR sha256 9 8", "[INFO ] vTPM PCR sha256 9 9", 1);
    let boot = SvsmBoot::analyse(run_log(&tampered)).unwrap();
    assert_eq!(boot.pcr_disagreements().unwrap(), ["sha256 PCR 9"]);
    assert!(boot.verdict().is_err());

    // A VM that did not end through the SVSM (killed at the timeout, or
    // QEMU ending it on the guest's power-off) fails the boot.
    for code in [None, Some(0), Some(exit_status(EXIT_FAILURE))] {
        let boot = SvsmBoot::analyse(run_log_ending(&text, code)).unwrap();
        let error = boot.verdict().unwrap_err().to_string();
        assert!(error.contains("did not end through the SVSM"), "{code:?}: {error}");
    }

    // No vTPM report at all is not a pass either.
    let without: String =
        text.lines().filter(|l| !l.contains("vTPM PCR")).map(|l| format!("{l}\n")).collect();
    let boot = SvsmBoot::analyse(run_log(&without)).unwrap();
    assert!(boot.verdict().is_err());
}

#[test]
fn a_boot_without_a_guest_says_what_the_dev_platform_needs() {
    let text = "[INFO ] SVSM kernel: platform Native\n\
                [INFO ] SVSM ready on the Native platform; no guest to run (the platform runs none)\n";
    let boot = SvsmBoot::analyse(run_log(text)).unwrap();
    let error = boot.verdict().unwrap_err().to_string();
    assert!(
        error.contains("started no guest") && error.contains("--cpu EPYC-v4,+svm,+npt"),
        "{error}"
    );
}

#[test]
fn tcg_feature_warnings_are_left_out_of_qemu_messages() {
    let stderr = "qemu-system-x86_64: warning: TCG doesn't support requested feature: CPUID.0DH:EAX.xsavec [bit 1]\n\
                  qemu-system-x86_64: -kernel /x: No such file\n";
    assert_eq!(qemu_messages(stderr), "qemu-system-x86_64: -kernel /x: No such file");
}
