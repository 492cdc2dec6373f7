//! The watchdog that bounds a boot: after the timeout it marks itself expired
//! and sends SIGUSR1 to the vCPU thread until that thread stops it, so a
//! KVM_RUN that never returns (a spinning guest, or KVM-PVM's emulator stuck
//! on a read-only GDT) comes back with EINTR and the run loop reports a
//! timeout with a register dump.
//!
//! The signal is resent every [`RESEND`], because a signal that arrives while
//! the thread is outside KVM_RUN is consumed by the no-op handler; the run
//! loop checks [`Watchdog::expired`] before every entry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;
use std::{io, thread};

/// How often the signal is repeated after expiry.
const RESEND: Duration = Duration::from_millis(50);

extern "C" fn ignore_signal(_: libc::c_int) {}

fn install_handler() -> io::Result<()> {
    static RESULT: OnceLock<i32> = OnceLock::new();
    let rc = *RESULT.get_or_init(|| {
        // SAFETY: `sigaction` is plain data; zeroed is a valid empty mask and
        // flags value, then the handler is set.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = ignore_signal as *const () as usize;
        // No SA_RESTART: KVM_RUN must return EINTR.
        action.sa_flags = 0;
        // SAFETY: installs an async-signal-safe no-op handler for SIGUSR1;
        // `action` is valid for the call and the old action is not wanted.
        unsafe { libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()) }
    });
    if rc == 0 { Ok(()) } else { Err(io::Error::other("installing the SIGUSR1 handler failed")) }
}

struct Shared {
    stopped: Mutex<bool>,
    wake: Condvar,
    expired: AtomicBool,
}

/// A running watchdog for the calling thread; dropping it stops it.
pub struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    timeout: Duration,
}

/// A thread id that can be sent to the watchdog thread.
#[derive(Clone, Copy)]
struct Target(libc::pthread_t);

impl Watchdog {
    /// Starts a watchdog that interrupts the calling thread after `timeout`.
    pub fn start(timeout: Duration) -> io::Result<Self> {
        install_handler()?;
        // SAFETY: pthread_self has no preconditions.
        let target = Target(unsafe { libc::pthread_self() });
        let shared = Arc::new(Shared {
            stopped: Mutex::new(false),
            wake: Condvar::new(),
            expired: AtomicBool::new(false),
        });
        let worker = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || watch(&worker, target, timeout))?;
        Ok(Watchdog { shared, thread: Some(thread), timeout })
    }

    /// Whether the timeout has passed.
    pub fn expired(&self) -> bool {
        self.shared.expired.load(Ordering::SeqCst)
    }

    /// The timeout this watchdog enforces.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

fn watch(shared: &Shared, target: Target, timeout: Duration) {
    let Ok(guard) = shared.stopped.lock() else {
        return;
    };
    let Ok((mut stopped, _)) = shared.wake.wait_timeout_while(guard, timeout, |stopped| !*stopped)
    else {
        return;
    };
    if *stopped {
        return;
    }
    shared.expired.store(true, Ordering::SeqCst);
    while !*stopped {
        // SAFETY: the target thread owns this watchdog and joins this thread
        // (in `Drop`) before it can exit, so the id is valid; SIGUSR1 has a
        // no-op handler installed.
        unsafe { libc::pthread_kill(target.0, libc::SIGUSR1) };
        match shared.wake.wait_timeout(stopped, RESEND) {
            Ok((next, _)) => stopped = next,
            Err(_) => return,
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Ok(mut stopped) = self.shared.stopped.lock() {
            *stopped = true;
        }
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            // A panic in the watchdog thread has nothing left to report.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn expires_and_interrupts_a_blocking_call() {
        let dog = Watchdog::start(Duration::from_millis(100)).unwrap();
        let start = Instant::now();
        // A blocking sleep that only a signal (EINTR) ends early.
        let mut remaining = libc::timespec { tv_sec: 30, tv_nsec: 0 };
        let request = remaining;
        // SAFETY: both pointers are to valid timespec values.
        let rc = unsafe { libc::nanosleep(&request, &mut remaining) };
        assert_eq!(rc, -1, "the sleep was not interrupted");
        assert!(dog.expired());
        assert!(start.elapsed() < Duration::from_secs(25));
    }

    #[test]
    fn stopping_before_the_timeout_does_not_expire() {
        let dog = Watchdog::start(Duration::from_secs(60)).unwrap();
        assert!(!dog.expired());
        drop(dog);
    }
}
