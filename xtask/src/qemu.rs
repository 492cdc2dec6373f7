//! Booting an image under QEMU: q35 with the `-bios` ROM wrapper, serial
//! on the terminal and captured, the isa-debug-exit device as the exit
//! status, and a timeout that ends only the QEMU process group it started.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use abi::layout::{DEBUG_EXIT_PORT, EXIT_FAILURE, EXIT_SUCCESS, exit_status};
use anyhow::{Context, Result};

/// How QEMU runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// Software emulation (works everywhere; the default here).
    Tcg,
    /// Hardware virtualization through /dev/kvm.
    Kvm,
}

/// The QEMU CPU model of the dev platform: an EPYC with SVM and nested
/// paging, which the SVSM uses to run the guest.
pub const DEV_PLATFORM_CPU: &str = "EPYC-v4,+svm,+npt";

/// QEMU settings.
#[derive(Clone, Debug)]
pub struct QemuOptions {
    pub accel: Accel,
    /// `-cpu` model, e.g. `EPYC-v4` or `EPYC-v4,+svm,+npt`.
    pub cpu: String,
    /// `-m` value.
    pub memory: String,
    /// vCPU count.
    pub cpus: u32,
    /// Kill the guest after this long.
    pub timeout: Duration,
    /// Copy the serial output to our stdout as it arrives.
    pub echo: bool,
    /// Further arguments, after the standard ones (e.g. `-fw_cfg
    /// name=opt/...,string=...` to hand the guest a setting).
    pub extra_args: Vec<String>,
    /// Stop QEMU as soon as the serial output shows this text (for guests
    /// that wait forever once they are where they should be).
    pub stop_when: Option<String>,
}

impl Default for QemuOptions {
    fn default() -> Self {
        QemuOptions {
            accel: Accel::Tcg,
            cpu: "EPYC-v4".into(),
            memory: "512M".into(),
            cpus: 1,
            timeout: Duration::from_secs(120),
            echo: true,
            extra_args: Vec::new(),
            stop_when: None,
        }
    }
}

/// How the SVSM ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It wrote EXIT_SUCCESS to the exit port.
    Success,
    /// It wrote EXIT_FAILURE to the exit port.
    Failure,
    /// It wrote another value to the exit port.
    ExitValue(u8),
    /// QEMU exited without the exit port (reset, shutdown, triple fault
    /// with -no-reboot) with this status.
    QemuExit(i32),
    /// QEMU was killed by a signal.
    Killed,
    /// The timeout expired.
    Timeout,
    /// The serial output showed the `stop_when` text, and QEMU was stopped.
    Stopped,
}

impl Ending {
    fn from_status(status: std::process::ExitStatus) -> Ending {
        match status.code() {
            Some(code) if code == exit_status(EXIT_SUCCESS) => Ending::Success,
            Some(code) if code == exit_status(EXIT_FAILURE) => Ending::Failure,
            Some(code) if code & 1 == 1 && code > 1 => Ending::ExitValue((code >> 1) as u8),
            Some(code) => Ending::QemuExit(code),
            None => Ending::Killed,
        }
    }

    /// Whether the SVSM reported success.
    pub fn is_success(&self) -> bool {
        *self == Ending::Success
    }

    /// One line for the user.
    pub fn describe(&self, timeout: Duration) -> String {
        match self {
            Ending::Success => format!(
                "SVSM ended: SUCCESS (exit port {DEBUG_EXIT_PORT:#x} value {EXIT_SUCCESS:#x})"
            ),
            Ending::Failure => format!(
                "SVSM ended: FAILURE (exit port {DEBUG_EXIT_PORT:#x} value {EXIT_FAILURE:#x})"
            ),
            Ending::ExitValue(v) => {
                format!("SVSM ended: FAILURE (unexpected exit port value {v:#x})")
            }
            Ending::QemuExit(code) => format!(
                "SVSM ended: FAILURE (QEMU exited with status {code} without the exit port: reset, shutdown or triple fault)"
            ),
            Ending::Killed => "SVSM ended: FAILURE (QEMU was killed by a signal)".to_string(),
            Ending::Timeout => format!("SVSM ended: TIMEOUT after {} s", timeout.as_secs()),
            Ending::Stopped => {
                "SVSM still running: QEMU stopped once the console showed what was awaited"
                    .to_string()
            }
        }
    }
}

/// The outcome of one boot.
#[derive(Clone, Debug)]
pub struct BootResult {
    pub ending: Ending,
    /// Everything the guest wrote to COM1 (the boot tests read it; `run`
    /// shows it live instead).
    pub serial: String,
    /// When each chunk of `serial` arrived: (offset of the chunk's end,
    /// time since QEMU started), in order.
    serial_arrivals: Vec<(usize, Duration)>,
    /// QEMU's own messages.
    pub qemu_stderr: String,
    pub elapsed: Duration,
}

impl BootResult {
    /// When the serial output first contained `text`, measured from QEMU's
    /// start (to the arrival of the chunk that completed it). Offsets are
    /// those of the text as received; the console writes ASCII.
    pub fn time_to(&self, text: &str) -> Option<Duration> {
        let end = self.serial.find(text)? + text.len();
        let arrived = self.serial_arrivals.iter().find(|(chunk_end, _)| *chunk_end >= end);
        arrived.map(|(_, at)| *at)
    }
}

/// The QEMU command line for `rom`.
pub fn command(rom: &Path, options: &QemuOptions) -> Command {
    let mut command = Command::new("qemu-system-x86_64");
    let accel = match options.accel {
        Accel::Tcg => "tcg",
        Accel::Kvm => "kvm",
    };
    command
        // The SVSM's region (kernel region, firmware staging, dev PSP
        // hand-over) ends at 210 MiB; QEMU puts the RAM above it above
        // 4 GiB, so the guest's firmware, which sees low RAM end where the
        // SVSM region begins, loses none (docs/dev-platform.md).
        .args(["-machine", "q35,max-ram-below-4g=210M"])
        .args(["-accel", accel, "-cpu", &options.cpu, "-m", &options.memory])
        .args(["-smp", &options.cpus.to_string()])
        .arg("-bios")
        .arg(rom)
        .args(["-device", &format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=2")])
        .args([
            "-serial",
            "stdio",
            "-display",
            "none",
            "-monitor",
            "none",
            "-nodefaults",
            "-no-reboot",
        ])
        .args(&options.extra_args);
    command
}

/// Boots `rom`, captures the serial output and returns how it ended.
pub fn boot(rom: &Path, options: &QemuOptions) -> Result<BootResult> {
    use std::os::unix::process::CommandExt;
    let mut command = command(rom, options);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let started = Instant::now();
    let mut child = command
        .spawn()
        .context("starting qemu-system-x86_64 (run `cargo xtask setup` to install QEMU)")?;
    let serial = Arc::new(Mutex::new(CapturedStream::default()));
    let stdout = child.stdout.take().context("QEMU's stdout")?;
    let stderr = child.stderr.take().context("QEMU's stderr")?;
    let echo = options.echo;
    let serial_reader = {
        let serial = Arc::clone(&serial);
        std::thread::spawn(move || copy_stream(stdout, &serial, started, echo))
    };
    let stderr_buffer = Arc::new(Mutex::new(CapturedStream::default()));
    let stderr_reader = {
        let buffer = Arc::clone(&stderr_buffer);
        std::thread::spawn(move || copy_stream(stderr, &buffer, started, false))
    };
    let ending = loop {
        if let Some(status) = child.try_wait().context("waiting for QEMU")? {
            break Ending::from_status(status);
        }
        if started.elapsed() >= options.timeout {
            kill_process_group(child.id());
            child.wait().context("reaping QEMU")?;
            break Ending::Timeout;
        }
        if let Some(text) = &options.stop_when
            && serial.lock().expect("the reader does not panic").contains(text.as_bytes())
        {
            kill_process_group(child.id());
            child.wait().context("reaping QEMU")?;
            break Ending::Stopped;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    let _ = serial_reader.join();
    let _ = stderr_reader.join();
    let take = |buffer: Arc<Mutex<CapturedStream>>| {
        std::mem::take(&mut *buffer.lock().expect("reader threads have ended"))
    };
    let (serial, qemu_stderr) = (take(serial), take(stderr_buffer));
    Ok(BootResult {
        ending,
        serial: String::from_utf8_lossy(&serial.bytes).into_owned(),
        serial_arrivals: serial.arrivals,
        qemu_stderr: String::from_utf8_lossy(&qemu_stderr.bytes).into_owned(),
        elapsed,
    })
}

/// A stream's bytes and when they arrived.
#[derive(Default)]
struct CapturedStream {
    bytes: Vec<u8>,
    /// (length of `bytes` after a chunk, time since QEMU started).
    arrivals: Vec<(usize, Duration)>,
    /// How far `contains` has looked without a match.
    searched: usize,
}

impl CapturedStream {
    /// Whether the stream has shown `text` (each call looks only at what
    /// arrived since the last, plus an overlap).
    fn contains(&mut self, text: &[u8]) -> bool {
        let from = self.searched.saturating_sub(text.len());
        let found = self.bytes[from..].windows(text.len()).any(|w| w == text);
        self.searched = self.bytes.len();
        found
    }
}

fn copy_stream(mut stream: impl Read, into: &Mutex<CapturedStream>, started: Instant, echo: bool) {
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
        {
            let mut captured = into.lock().expect("only this thread writes");
            captured.bytes.extend_from_slice(&chunk[..n]);
            let end = captured.bytes.len();
            captured.arrivals.push((end, started.elapsed()));
        }
        if echo {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&chunk[..n]);
            let _ = out.flush();
        }
    }
}

/// Sends SIGKILL to the process group QEMU leads (it was spawned with
/// `process_group(0)`, so the group is QEMU's and nothing else's).
fn kill_process_group(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill(2) has no memory-safety preconditions; the negative pid
    // names the process group our child created and leads.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exit_statuses_map_to_endings() {
        let status = |code: i32| std::process::ExitStatus::from_raw(code << 8);
        assert_eq!(Ending::from_status(status(33)), Ending::Success);
        assert_eq!(Ending::from_status(status(35)), Ending::Failure);
        assert_eq!(Ending::from_status(status(0x63)), Ending::ExitValue(0x31));
        assert_eq!(Ending::from_status(status(0)), Ending::QemuExit(0));
        assert_eq!(Ending::from_status(status(1)), Ending::QemuExit(1));
        assert_eq!(Ending::from_status(std::process::ExitStatus::from_raw(9)), Ending::Killed);
    }

    #[test]
    fn time_to_is_the_arrival_of_the_chunk_that_completes_the_text() {
        let at = Duration::from_millis;
        let boot = BootResult {
            ending: Ending::Success,
            serial: "stage2\nSVSM kernel: up\n3 passed\n".into(),
            serial_arrivals: vec![(7, at(10)), (15, at(20)), (23, at(30)), (32, at(40))],
            qemu_stderr: String::new(),
            elapsed: at(50),
        };
        assert_eq!(boot.time_to("stage2"), Some(at(10)));
        assert_eq!(boot.time_to("SVSM kernel: up"), Some(at(30)));
        assert_eq!(boot.time_to("passed"), Some(at(40)));
        assert_eq!(boot.time_to("missing"), None);
    }

    #[test]
    fn captured_text_is_found_across_chunks() {
        let mut stream = CapturedStream::default();
        stream.bytes.extend_from_slice(b"UEFI Sh");
        assert!(!stream.contains(b"Shell> "));
        stream.bytes.extend_from_slice(b"ell\r\nShe");
        assert!(!stream.contains(b"Shell> "));
        stream.bytes.extend_from_slice(b"ll> ");
        assert!(stream.contains(b"Shell> "));
    }

    #[test]
    fn command_line_has_the_devices() {
        let command = command(Path::new("/tmp/x.bios"), &QemuOptions::default());
        let args: Vec<_> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let line = args.join(" ");
        assert!(
            line.contains("-machine q35,max-ram-below-4g=210M -accel tcg -cpu EPYC-v4 -m 512M"),
            "{line}"
        );
        assert!(line.contains("-bios /tmp/x.bios"));
        assert!(line.contains("isa-debug-exit,iobase=0x501,iosize=2"));
        assert!(line.contains("-no-reboot"));
        let fw_cfg = ["-fw_cfg".to_string(), "name=opt/x,string=y".to_string()];
        let options = QemuOptions { extra_args: fw_cfg.to_vec(), ..QemuOptions::default() };
        let args: Vec<_> = super::command(Path::new("/tmp/x.bios"), &options)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[args.len() - 2..], fw_cfg, "extra arguments come last, in order");
    }
}
