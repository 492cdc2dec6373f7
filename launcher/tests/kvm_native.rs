//! Smoke boots of the native platform under this host's /dev/kvm: tiny
//! guests built by `launcher::sample`, each bounded by the watchdog. They need
//! a usable /dev/kvm and fail (loudly, with the reason) without one. On
//! KVM-PVM hosts the guests still run, because they are a few dozen
//! instructions; the time each boot takes is printed, not asserted.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use launcher::igvm_load::Platform;
use launcher::snp::PlanesMode;
use launcher::vcpu::Ending;
use launcher::{RunOptions, host, sample};

/// Fails the test, with the reason, when this host has no usable KVM.
fn require_kvm() {
    if let Err(reason) = host::open_kvm() {
        panic!("this KVM boot test cannot run: {reason}");
    }
    if let Some(pvm) = host::detect_pvm(None) {
        eprintln!("note: {pvm}");
    }
}

/// A sample IGVM file in the temporary directory, removed when dropped.
struct TempIgvm(PathBuf);

impl Drop for TempIgvm {
    fn drop(&mut self) {
        // Nothing to do if it is already gone.
        let _ = std::fs::remove_file(&self.0);
    }
}

fn write_igvm(name: &str, code: &[u8]) -> TempIgvm {
    let path = std::env::temp_dir().join(format!("launcher-test-{}-{name}", std::process::id()));
    std::fs::write(&path, sample::sample_file(code)).expect("writing the sample IGVM file");
    TempIgvm(path)
}

fn boot(name: &str, code: &[u8], timeout: Duration) -> (Ending, Vec<u8>) {
    require_kvm();
    let file = write_igvm(name, code);
    let options = RunOptions {
        igvm: file.0.clone(),
        platform: Platform::Native,
        memory: 64 << 20,
        cpus: 1,
        timeout,
        host_data: [0; 32],
        planes: PlanesMode::Off,
    };
    let mut console = Vec::new();
    let started = Instant::now();
    let ending = launcher::run(&options, &mut console).expect("the launcher runs");
    eprintln!("{name}: {:.2} ms, {ending}", started.elapsed().as_secs_f64() * 1e3);
    (ending, console)
}

#[test]
fn smoke_guest_prints_reads_its_parameters_and_exits_33() {
    let (ending, console) = boot("smoke.igvm", &sample::smoke_guest(), Duration::from_secs(30));
    assert_eq!(String::from_utf8_lossy(&console), "boot ok `\n");
    assert_eq!(ending, Ending::DebugExit { value: 0x10 }, "{ending}");
    assert_eq!(ending.exit_status(), 33);
}

#[test]
fn a_halting_guest_is_reported_with_its_registers() {
    let (ending, _) = boot("halt.igvm", &sample::halt_guest(), Duration::from_secs(30));
    let Ending::Halted { state } = &ending else { panic!("expected a halt, got: {ending}") };
    assert!(state.contains("rip 0x0000000000100001"), "{state}");
    assert_eq!(ending.exit_status(), 4);
}

#[test]
fn the_watchdog_stops_a_spinning_guest() {
    let (ending, _) = boot("spin.igvm", &sample::spin_guest(), Duration::from_secs(1));
    let Ending::Timeout { state, .. } = &ending else {
        panic!("expected a timeout, got: {ending}")
    };
    assert!(state.contains("rip 0x0000000000100000"), "{state}");
    assert_eq!(ending.exit_status(), 124);
}

#[test]
fn the_binary_exits_with_the_guests_status() {
    require_kvm();
    let file = write_igvm("binary.igvm", &sample::smoke_guest());
    let output = Command::new(env!("CARGO_BIN_EXE_launcher"))
        .args(["run", "--memory", "64M", "--timeout", "30"])
        .arg(&file.0)
        .output()
        .expect("running the launcher binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(33), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "boot ok `\n");
    assert!(stderr.contains("exit status 33"), "{stderr}");
}

#[test]
fn the_binary_rejects_a_corrupt_file_with_status_2() {
    let file = write_igvm("corrupt.igvm", &sample::smoke_guest());
    let mut bytes = std::fs::read(&file.0).expect("reading back");
    bytes.truncate(100);
    std::fs::write(&file.0, bytes).expect("truncating");
    let output = Command::new(env!("CARGO_BIN_EXE_launcher"))
        .arg("run")
        .arg(&file.0)
        .output()
        .expect("running the launcher binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("the IGVM file is invalid"), "{stderr}");
}
