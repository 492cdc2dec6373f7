//! Running a VM and keeping its serial output line by line, each line with
//! the time it arrived (the figures are read off these time stamps). The VM
//! runs in its own process group; on timeout only that group is killed.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// One line of serial output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedLine {
    /// Time since the VM was started.
    pub at: Duration,
    /// The line, without its line end.
    pub text: String,
}

/// A finished (or killed) run.
#[derive(Debug)]
pub struct RunLog {
    /// Every serial line.
    pub lines: Vec<TimedLine>,
    /// How the VM exited (`None`: killed at the timeout).
    pub status: Option<ExitStatus>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// What the VMM printed on stderr.
    pub stderr: String,
}

impl RunLog {
    /// The first line containing `needle`.
    pub fn find(&self, needle: &str) -> Option<&TimedLine> {
        self.lines.iter().find(|line| line.text.contains(needle))
    }
}

/// Runs `command` (stdout = the serial console), echoing its output if
/// `echo`, and kills its process group after `timeout`.
pub fn run(mut command: Command, timeout: Duration, echo: bool) -> Result<RunLog> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let started = Instant::now();
    let mut child = command.spawn().with_context(|| format!("starting {command:?}"))?;
    let stdout = child.stdout.take().context("the VM's stdout")?;
    let mut stderr = child.stderr.take().context("the VM's stderr")?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let lines = Arc::clone(&lines);
        std::thread::spawn(move || read_lines(stdout, started, &lines, echo))
    };
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for the VM")? {
            break Some(status);
        }
        if started.elapsed() >= timeout {
            kill_group(child.id());
            child.wait().context("reaping the VM")?;
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    let _ = reader.join();
    let stderr = stderr_reader.join().unwrap_or_default();
    let lines = std::mem::take(&mut *lines.lock().expect("the reader thread has ended"));
    Ok(RunLog { lines, status, elapsed, stderr })
}

fn read_lines(stream: impl Read, started: Instant, lines: &Mutex<Vec<TimedLine>>, echo: bool) {
    let mut reader = BufReader::new(stream);
    let mut buffer = Vec::new();
    while let Ok(n) = reader.read_until(b'\n', &mut buffer) {
        if n == 0 {
            break;
        }
        let at = started.elapsed();
        if echo {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&buffer);
            let _ = out.flush();
        }
        let text = String::from_utf8_lossy(&buffer).trim_end_matches(['\r', '\n']).to_string();
        lines.lock().expect("only this thread writes").push(TimedLine { at, text });
        buffer.clear();
    }
}

/// SIGKILL to the process group the VM leads (spawned with
/// `process_group(0)`: the group is the VM's alone).
fn kill_group(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill(2) has no memory-safety preconditions; the negative pid
    // names the process group our child leads.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_time_stamped_in_order() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo one; sleep 0.2; printf 'two\\r\\nthree'"]);
        let log = run(command, Duration::from_secs(10), false).unwrap();
        let texts: Vec<_> = log.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["one", "two", "three"]);
        assert!(log.lines[1].at >= log.lines[0].at + Duration::from_millis(150));
        assert!(log.status.is_some_and(|s| s.success()));
        assert_eq!(log.find("thr").map(|l| l.text.as_str()), Some("three"));
    }

    #[test]
    fn a_run_past_its_timeout_is_killed() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo started; sleep 30"]);
        let log = run(command, Duration::from_millis(300), false).unwrap();
        assert!(log.status.is_none());
        assert!(log.elapsed < Duration::from_secs(10));
        assert_eq!(log.lines.len(), 1);
    }
}
