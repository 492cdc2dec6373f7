//! Running a vCPU: the exits the launcher handles, the [`Vcpu`] trait that
//! hides KVM (so the run loop is tested with scripted exits), the two devices
//! (COM1 on stdout, the 0x501 debug-exit port) and how a run ends.
//!
//! The loop never trusts the guest: unknown ports read as 0xff, MMIO reads
//! as all-ones, and every way the guest can stop becomes an [`Ending`] with a
//! clear description, not a panic.

use std::fmt;
use std::io::Write;

use abi::ghcb::{GhcbField, MsrDecodeError, MsrRequest, TerminationReason};
use kvm_ioctls::{VcpuExit, VcpuFd};
use thiserror::Error;

use crate::guest_memory::GuestMemory;
use crate::watchdog::Watchdog;

/// COM1's first port (data register).
pub const SERIAL_BASE: u16 = abi::layout::SERIAL_PORT;
/// COM1's line-status register.
pub const SERIAL_LSR: u16 = SERIAL_BASE + 5;
/// LSR value: transmit holding register and transmitter empty.
pub const LSR_THR_EMPTY: u8 = 0x60;
/// The debug-exit device (two ports, as QEMU's `iosize=2`).
pub const DEBUG_EXIT: u16 = abi::layout::DEBUG_EXIT_PORT;
/// Process exit status for a launcher error (bad input, KVM failure).
pub const STATUS_ERROR: i32 = 2;
/// Process exit status when the guest stops without writing the exit port.
pub const STATUS_GUEST_STOPPED: i32 = 4;
/// Process exit status when the watchdog ends the run (as timeout(1)).
pub const STATUS_TIMEOUT: i32 = 124;
/// KVM_EXIT_INTERNAL_ERROR suberror: instruction emulation failed.
pub const INTERNAL_ERROR_EMULATION: u32 = 1;
/// `KVM_SYSTEM_EVENT_SEV_TERM`: an SEV-ES/SNP guest asked to terminate.
pub const SYSTEM_EVENT_SEV_TERM: u32 = 6;

/// One exit from KVM_RUN, with the data the handler may fill.
#[derive(Debug)]
pub enum Exit<'a> {
    /// Port output.
    IoOut {
        /// Port.
        port: u16,
        /// Bytes written.
        data: &'a [u8],
    },
    /// Port input; the handler fills `data`.
    IoIn {
        /// Port.
        port: u16,
        /// Bytes to return.
        data: &'a mut [u8],
    },
    /// MMIO read; the handler fills `data`.
    MmioRead {
        /// Address.
        addr: u64,
        /// Bytes to return.
        data: &'a mut [u8],
    },
    /// MMIO write.
    MmioWrite {
        /// Address.
        addr: u64,
        /// Bytes written.
        data: &'a [u8],
    },
    /// A hypercall forwarded to userspace (SNP page-state changes).
    Hypercall {
        /// Hypercall number.
        nr: u64,
        /// Arguments.
        args: [u64; 6],
        /// Result returned to the guest.
        ret: &'a mut u64,
    },
    /// The guest touched memory whose private/shared state differs.
    MemoryFault {
        /// Address.
        gpa: u64,
        /// Size.
        size: u64,
        /// `KVM_MEMORY_EXIT_FLAG_*`.
        flags: u64,
    },
    /// A system event (SEV termination, reset, shutdown, crash).
    SystemEvent {
        /// `KVM_SYSTEM_EVENT_*`.
        kind: u32,
        /// Event data.
        data: Vec<u64>,
    },
    /// HLT.
    Hlt,
    /// Triple fault.
    Shutdown,
    /// KVM could not go on (see [`Vcpu::internal_error`]).
    InternalError,
    /// VM entry failed.
    FailEntry {
        /// Hardware reason.
        reason: u64,
    },
    /// KVM_RUN returned EINTR (the watchdog's signal).
    Interrupted,
    /// An exit reason kvm-ioctls does not decode (e.g. planes events).
    Unsupported(u32),
    /// Any other exit, by name.
    Other(String),
}

/// A KVM failure, with the operation that failed.
#[derive(Debug, Error)]
#[error("{op} failed: {source}")]
pub struct KvmError {
    /// What was attempted.
    pub op: &'static str,
    /// The errno.
    #[source]
    pub source: std::io::Error,
}

impl KvmError {
    /// Wraps an errno from kvm-ioctls.
    pub fn new(op: &'static str, e: vmm_sys_util::errno::Error) -> Self {
        KvmError { op, source: std::io::Error::from_raw_os_error(e.errno()) }
    }
}

/// What the run loop needs from a vCPU.
pub trait Vcpu {
    /// Enters the guest until the next exit.
    fn run(&mut self) -> Result<Exit<'_>, KvmError>;
    /// After [`Exit::InternalError`]: the suberror and its data words.
    fn internal_error(&mut self) -> (u32, Vec<u64>);
    /// After [`Exit::Unsupported`]: the raw exit-union bytes of `kvm_run`.
    fn exit_union(&mut self) -> [u8; 256];
    /// A register dump for reports (or why there is none).
    fn state_dump(&mut self, memory: Option<&GuestMemory>) -> String;
}

/// A KVM vCPU.
pub struct KvmVcpu {
    fd: VcpuFd,
}

impl KvmVcpu {
    /// Wraps a vCPU fd.
    pub fn new(fd: VcpuFd) -> Self {
        KvmVcpu { fd }
    }

    /// The vCPU fd, for setting up state.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }
}

impl Vcpu for KvmVcpu {
    fn run(&mut self) -> Result<Exit<'_>, KvmError> {
        let exit = match self.fd.run() {
            Ok(VcpuExit::IoOut(port, data)) => Exit::IoOut { port, data },
            Ok(VcpuExit::IoIn(port, data)) => Exit::IoIn { port, data },
            Ok(VcpuExit::MmioRead(addr, data)) => Exit::MmioRead { addr, data },
            Ok(VcpuExit::MmioWrite(addr, data)) => Exit::MmioWrite { addr, data },
            Ok(VcpuExit::Hypercall(h)) => Exit::Hypercall { nr: h.nr, args: h.args, ret: h.ret },
            Ok(VcpuExit::MemoryFault { flags, gpa, size }) => {
                Exit::MemoryFault { gpa, size, flags }
            }
            Ok(VcpuExit::SystemEvent(kind, data)) => {
                Exit::SystemEvent { kind, data: data.to_vec() }
            }
            Ok(VcpuExit::Hlt) => Exit::Hlt,
            Ok(VcpuExit::Shutdown) => Exit::Shutdown,
            Ok(VcpuExit::InternalError) => Exit::InternalError,
            Ok(VcpuExit::FailEntry(reason, _)) => Exit::FailEntry { reason },
            Ok(VcpuExit::Intr) => Exit::Interrupted,
            Ok(VcpuExit::Unsupported(reason)) => Exit::Unsupported(reason),
            Ok(other) => Exit::Other(format!("{other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Exit::Interrupted,
            Err(e) => return Err(KvmError::new("KVM_RUN", e)),
        };
        Ok(exit)
    }

    fn internal_error(&mut self) -> (u32, Vec<u64>) {
        let run = self.fd.get_kvm_run();
        // SAFETY: reading a plain-data union member of kvm_run after
        // KVM_EXIT_INTERNAL_ERROR, which is the member KVM filled.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let n = (internal.ndata as usize).min(internal.data.len());
        (internal.suberror, internal.data[..n].to_vec())
    }

    fn exit_union(&mut self) -> [u8; 256] {
        let run = self.fd.get_kvm_run();
        // SAFETY: the union's `padding` member covers all 256 bytes and any
        // bit pattern is a valid byte array.
        let padding = unsafe { run.__bindgen_anon_1.padding };
        padding.map(|b| b as u8)
    }

    fn state_dump(&mut self, memory: Option<&GuestMemory>) -> String {
        let regs = match self.fd.get_regs() {
            Ok(r) => r,
            Err(e) => {
                return format!("  (registers unavailable: {e}; SEV-ES/SNP state is encrypted)");
            }
        };
        let mut out = format!(
            "  rip {:#018x}  rsp {:#018x}  rflags {:#010x}\n  rax {:#018x}  rbx {:#018x}  rcx {:#018x}  rdx {:#018x}\n  rsi {:#018x}  rdi {:#018x}  rbp {:#018x}",
            regs.rip,
            regs.rsp,
            regs.rflags,
            regs.rax,
            regs.rbx,
            regs.rcx,
            regs.rdx,
            regs.rsi,
            regs.rdi,
            regs.rbp
        );
        if let Ok(s) = self.fd.get_sregs() {
            out.push_str(&format!(
                "\n  cr0 {:#x}  cr2 {:#x}  cr3 {:#x}  cr4 {:#x}  efer {:#x}\n  cs {:#06x} base {:#x} l={} db={}  ss {:#06x}  gdt {:#x}/{:#x}  idt {:#x}/{:#x}",
                s.cr0,
                s.cr2,
                s.cr3,
                s.cr4,
                s.efer,
                s.cs.selector,
                s.cs.base,
                s.cs.l,
                s.cs.db,
                s.ss.selector,
                s.gdt.base,
                s.gdt.limit,
                s.idt.base,
                s.idt.limit
            ));
            let linear = if s.cs.l == 1 { regs.rip } else { s.cs.base.wrapping_add(regs.rip) };
            let bytes = self
                .fd
                .translate_gva(linear)
                .ok()
                .filter(|t| t.valid != 0)
                .and_then(|t| memory?.slice(t.physical_address, 16).ok());
            if let Some(bytes) = bytes {
                out.push_str(&format!("\n  code at rip: {bytes:02x?}"));
            }
        }
        out
    }
}

/// How an SEV-ES/SNP guest asked to terminate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Termination {
    /// The GHCB MSR value KVM reported (data[0]).
    pub ghcb_msr: Option<u64>,
    /// Reason set and code, when they could be decoded.
    pub reason: Option<TerminationReason>,
}

impl Termination {
    /// Decodes KVM's SEV_TERM data: an MSR-protocol termination request
    /// (0x100 with the reason set in bits 15:12 and the code in 23:16), or
    /// the GPA of a GHCB whose SW_EXITINFO1 holds the set in bits 3:0 and the
    /// code in 11:4. The layouts and the codes' meanings are `abi::ghcb`'s.
    pub fn decode(data: &[u64], memory: Option<&GuestMemory>) -> Self {
        let ghcb_msr = data.first().copied();
        let reason = ghcb_msr.and_then(|v| match MsrRequest::decode(v) {
            Ok(MsrRequest::Terminate(reason)) => Some(reason),
            Err(MsrDecodeError::GhcbGpa(gpa)) => {
                let offset = GhcbField::SwExitInfo1.offset() as u64;
                let info = memory?.slice(gpa.checked_add(offset)?, 8).ok()?;
                let info = u64::from_le_bytes(info.try_into().ok()?);
                Some(TerminationReason::from_exit_info1(info))
            }
            _ => None,
        });
        Termination { ghcb_msr, reason }
    }
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.reason, self.ghcb_msr) {
            (Some(reason), _) => write!(
                f,
                "reason set {}, code {:#x} ({})",
                reason.set,
                reason.code,
                reason.meaning()
            ),
            (None, Some(v)) => write!(f, "undecoded GHCB value {v:#x}"),
            (None, None) => {
                f.write_str("no reason given (KVM ended the guest, e.g. after a triple fault)")
            }
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The guest wrote `value` to the debug-exit port.
    DebugExit {
        /// The value written.
        value: u64,
    },
    /// HLT with nothing to wake it.
    Halted {
        /// Register dump.
        state: String,
    },
    /// Triple fault.
    Shutdown {
        /// Register dump.
        state: String,
    },
    /// KVM internal error (on KVM-PVM: an instruction its emulator lacks).
    InternalError {
        /// Suberror.
        suberror: u32,
        /// Explanation.
        detail: String,
        /// Register dump.
        state: String,
    },
    /// VM entry failed.
    FailEntry {
        /// Hardware reason.
        reason: u64,
        /// Register dump.
        state: String,
    },
    /// The SEV-ES/SNP guest asked to terminate.
    SnpTermination(Termination),
    /// Another system event.
    SystemEvent {
        /// `KVM_SYSTEM_EVENT_*`.
        kind: u32,
        /// Data.
        data: Vec<u64>,
    },
    /// The watchdog fired.
    Timeout {
        /// Seconds allowed.
        seconds: u64,
        /// Register dump.
        state: String,
    },
}

impl Ending {
    /// The process exit status: `(v << 1) | 1` for the debug-exit port
    /// (QEMU's isa-debug-exit), 124 for a timeout, 4 for any other stop.
    pub fn exit_status(&self) -> i32 {
        match self {
            Ending::DebugExit { value } => (((*value << 1) | 1) & 0xff) as i32,
            Ending::Timeout { .. } => STATUS_TIMEOUT,
            _ => STATUS_GUEST_STOPPED,
        }
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::DebugExit { value } => write!(
                f,
                "the guest wrote {value:#x} to the exit port {DEBUG_EXIT:#x} (exit status {})",
                self.exit_status()
            ),
            Ending::Halted { state } => {
                write!(f, "the guest halted (HLT) without writing the exit port\n{state}")
            }
            Ending::Shutdown { state } => {
                write!(f, "the guest shut down (triple fault)\n{state}")
            }
            Ending::InternalError { suberror, detail, state } => {
                write!(f, "KVM internal error, suberror {suberror}: {detail}\n{state}")
            }
            Ending::FailEntry { reason, state } => {
                write!(f, "VM entry failed, hardware reason {reason:#x}\n{state}")
            }
            Ending::SnpTermination(t) => write!(f, "the SNP guest requested termination: {t}"),
            Ending::SystemEvent { kind, data } => {
                write!(f, "the guest raised system event {kind} (data {data:x?})")
            }
            Ending::Timeout { seconds, state } => write!(
                f,
                "the watchdog stopped the guest after {seconds} s (raise --timeout if it is just slow)\n{state}"
            ),
        }
    }
}

/// The launcher's I/O ports: COM1 to the console and the debug-exit port.
pub struct PortBus<'a> {
    console: &'a mut dyn Write,
}

impl<'a> PortBus<'a> {
    /// Ports whose serial output goes to `console`.
    pub fn new(console: &'a mut dyn Write) -> Self {
        PortBus { console }
    }

    /// Handles a port write; returns the value written to the exit port.
    fn io_out(&mut self, port: u16, data: &[u8]) -> Option<u64> {
        match port {
            SERIAL_BASE => {
                // A console that cannot be written must not stop the guest.
                let _ = self.console.write_all(data).and_then(|()| self.console.flush());
                None
            }
            p if p == DEBUG_EXIT || p == DEBUG_EXIT + 1 => {
                let mut value = [0u8; 8];
                let n = data.len().min(8);
                value[..n].copy_from_slice(&data[..n]);
                Some(u64::from_le_bytes(value))
            }
            p if (SERIAL_BASE..SERIAL_BASE + 8).contains(&p) => None,
            p => {
                log::debug!("ignored write of {data:02x?} to port {p:#x}");
                None
            }
        }
    }

    /// Handles a port read: COM1 registers read as an idle UART whose
    /// transmitter is always empty, anything else as all-ones.
    fn io_in(&mut self, port: u16, data: &mut [u8]) {
        if !(SERIAL_BASE..SERIAL_BASE + 8).contains(&port) {
            data.fill(0xff);
            return;
        }
        data.fill(0);
        if port == SERIAL_LSR
            && let Some(first) = data.first_mut()
        {
            *first = LSR_THR_EMPTY;
        }
    }
}

/// Errors that end a run loop without a guest-caused [`Ending`].
#[derive(Debug, Error)]
pub enum RunError {
    /// A KVM call failed.
    #[error(transparent)]
    Kvm(#[from] KvmError),
    /// An exit the platform does not handle.
    #[error("unexpected exit from KVM_RUN: {0}")]
    UnexpectedExit(String),
    /// A platform hook failed.
    #[error("{0}")]
    Hook(String),
}

/// Platform-specific exits: SNP page-state changes and planes events.
pub trait ExitHooks {
    /// A hypercall; returns the value for the guest.
    fn hypercall(&mut self, nr: u64, args: &[u64; 6]) -> Result<u64, RunError>;
    /// A memory fault (private/shared mismatch).
    fn memory_fault(&mut self, gpa: u64, size: u64, flags: u64) -> Result<(), RunError>;
    /// An exit kvm-ioctls does not decode; `union` is kvm_run's exit data.
    /// Returns false when the exit is not the hook's either.
    fn unsupported(&mut self, reason: u32, union: &[u8; 256]) -> Result<bool, RunError>;
}

/// Hooks for plain VMs: no hypercalls, no private memory, nothing else.
pub struct NoHooks;

/// `-KVM_ENOSYS`, the answer to an unknown hypercall.
pub const KVM_ENOSYS: u64 = (-1000i64) as u64;

impl ExitHooks for NoHooks {
    fn hypercall(&mut self, nr: u64, _args: &[u64; 6]) -> Result<u64, RunError> {
        log::debug!("hypercall {nr} is not handled");
        Ok(KVM_ENOSYS)
    }

    fn memory_fault(&mut self, gpa: u64, size: u64, flags: u64) -> Result<(), RunError> {
        Err(RunError::Hook(format!(
            "memory fault at {gpa:#x}+{size:#x} (flags {flags:#x}) in a VM without private memory"
        )))
    }

    fn unsupported(&mut self, _reason: u32, _union: &[u8; 256]) -> Result<bool, RunError> {
        Ok(false)
    }
}

/// Extra text for an internal error, from its suberror.
pub type InternalErrorNote<'a> = &'a dyn Fn(u32) -> String;

/// Runs `vcpu` until the guest stops, the watchdog fires or KVM fails.
pub fn run_vcpu(
    vcpu: &mut dyn Vcpu,
    ports: &mut PortBus<'_>,
    hooks: &mut dyn ExitHooks,
    watchdog: &Watchdog,
    memory: Option<&GuestMemory>,
    note: InternalErrorNote<'_>,
) -> Result<Ending, RunError> {
    loop {
        if watchdog.expired() {
            return Ok(Ending::Timeout {
                seconds: watchdog.timeout().as_secs(),
                state: vcpu.state_dump(memory),
            });
        }
        match vcpu.run()? {
            Exit::IoOut { port, data } => {
                if let Some(value) = ports.io_out(port, data) {
                    return Ok(Ending::DebugExit { value });
                }
            }
            Exit::IoIn { port, data } => ports.io_in(port, data),
            Exit::MmioRead { addr, data } => {
                log::debug!("MMIO read of {} bytes at {addr:#x} (no device)", data.len());
                data.fill(0xff);
            }
            Exit::MmioWrite { addr, data } => {
                log::debug!("MMIO write of {data:02x?} at {addr:#x} (no device)");
            }
            Exit::Hypercall { nr, args, ret } => *ret = hooks.hypercall(nr, &args)?,
            Exit::MemoryFault { gpa, size, flags } => hooks.memory_fault(gpa, size, flags)?,
            Exit::SystemEvent { kind, data } => {
                return Ok(if kind == SYSTEM_EVENT_SEV_TERM {
                    Ending::SnpTermination(Termination::decode(&data, memory))
                } else {
                    Ending::SystemEvent { kind, data }
                });
            }
            Exit::Hlt => {
                return Ok(Ending::Halted { state: vcpu.state_dump(memory) });
            }
            Exit::Shutdown => {
                return Ok(Ending::Shutdown { state: vcpu.state_dump(memory) });
            }
            Exit::InternalError => {
                let (suberror, data) = vcpu.internal_error();
                return Ok(Ending::InternalError {
                    suberror,
                    detail: format!("{} (data {data:x?})", note(suberror)),
                    state: vcpu.state_dump(memory),
                });
            }
            Exit::FailEntry { reason } => {
                return Ok(Ending::FailEntry { reason, state: vcpu.state_dump(memory) });
            }
            Exit::Interrupted => {}
            Exit::Unsupported(reason) => {
                let union = vcpu.exit_union();
                if !hooks.unsupported(reason, &union)? {
                    return Err(RunError::UnexpectedExit(format!("exit reason {reason}")));
                }
            }
            Exit::Other(name) => return Err(RunError::UnexpectedExit(name)),
        }
    }
}

/// A vCPU that replays a script of exits, for tests of the run loop and of
/// the SNP exit handling.
pub mod scripted {
    use super::*;

    /// One scripted exit (owned data).
    #[derive(Clone, Debug)]
    pub enum Step {
        /// Port output.
        Out(u16, Vec<u8>),
        /// Port input of `n` bytes; what the loop returned is recorded.
        In(u16, usize),
        /// Hypercall; the returned value is recorded.
        Hypercall(u64, [u64; 6]),
        /// Memory fault.
        MemoryFault(u64, u64, u64),
        /// System event.
        SystemEvent(u32, Vec<u64>),
        /// HLT.
        Hlt,
        /// EINTR.
        Interrupted,
        /// Internal error with suberror.
        InternalError(u32),
        /// An undecoded exit with these union bytes.
        Unsupported(u32, Vec<u8>),
    }

    /// Replays [`Step`]s; after the script, every run is `Hlt`.
    pub struct ScriptedVcpu {
        steps: std::collections::VecDeque<Step>,
        buffer: Vec<u8>,
        ret: u64,
        last: Option<Step>,
        union: [u8; 256],
        suberror: u32,
        /// Values the loop returned for `In` steps and hypercalls.
        pub returned: Vec<u64>,
    }

    impl ScriptedVcpu {
        /// A vCPU that replays `steps`.
        pub fn new(steps: Vec<Step>) -> Self {
            ScriptedVcpu {
                steps: steps.into(),
                buffer: Vec::new(),
                ret: 0,
                last: None,
                union: [0; 256],
                suberror: 0,
                returned: Vec::new(),
            }
        }

        fn record_previous(&mut self) {
            match self.last.take() {
                Some(Step::In(..)) => {
                    let mut v = [0u8; 8];
                    let n = self.buffer.len().min(8);
                    v[..n].copy_from_slice(&self.buffer[..n]);
                    self.returned.push(u64::from_le_bytes(v));
                }
                Some(Step::Hypercall(..)) => self.returned.push(self.ret),
                _ => {}
            }
        }
    }

    impl Vcpu for ScriptedVcpu {
        fn run(&mut self) -> Result<Exit<'_>, KvmError> {
            self.record_previous();
            let step = self.steps.pop_front().unwrap_or(Step::Hlt);
            self.last = Some(step.clone());
            Ok(match step {
                Step::Out(port, data) => {
                    self.buffer = data;
                    Exit::IoOut { port, data: &self.buffer }
                }
                Step::In(port, n) => {
                    self.buffer = vec![0xAA; n];
                    Exit::IoIn { port, data: &mut self.buffer }
                }
                Step::Hypercall(nr, args) => Exit::Hypercall { nr, args, ret: &mut self.ret },
                Step::MemoryFault(gpa, size, flags) => Exit::MemoryFault { gpa, size, flags },
                Step::SystemEvent(kind, data) => Exit::SystemEvent { kind, data },
                Step::Hlt => Exit::Hlt,
                Step::Interrupted => Exit::Interrupted,
                Step::InternalError(sub) => {
                    self.suberror = sub;
                    Exit::InternalError
                }
                Step::Unsupported(reason, bytes) => {
                    self.union = [0; 256];
                    let n = bytes.len().min(256);
                    self.union[..n].copy_from_slice(&bytes[..n]);
                    Exit::Unsupported(reason)
                }
            })
        }

        fn internal_error(&mut self) -> (u32, Vec<u64>) {
            (self.suberror, vec![])
        }

        fn exit_union(&mut self) -> [u8; 256] {
            self.union
        }

        fn state_dump(&mut self, _memory: Option<&GuestMemory>) -> String {
            "  (scripted vCPU)".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scripted::{ScriptedVcpu, Step};
    use super::*;
    use std::time::Duration;

    fn run(steps: Vec<Step>) -> (Result<Ending, RunError>, Vec<u8>, ScriptedVcpu) {
        let mut vcpu = ScriptedVcpu::new(steps);
        let mut console = Vec::new();
        let dog = Watchdog::start(Duration::from_secs(60)).unwrap();
        let ending =
            run_vcpu(&mut vcpu, &mut PortBus::new(&mut console), &mut NoHooks, &dog, None, &|s| {
                format!("suberror {s}")
            });
        (ending, console, vcpu)
    }

    #[test]
    fn serial_output_goes_to_the_console_and_the_exit_port_ends_the_run() {
        let (ending, console, _) = run(vec![
            Step::Out(0x3f8, b"hi".to_vec()),
            Step::Out(0x3f9, vec![1]),
            Step::Out(0x501, vec![0x10]),
        ]);
        let ending = ending.unwrap();
        assert_eq!(ending, Ending::DebugExit { value: 0x10 });
        assert_eq!(ending.exit_status(), 33);
        assert_eq!(console, b"hi");
        assert_eq!(Ending::DebugExit { value: 0x11 }.exit_status(), 35);
    }

    #[test]
    fn lsr_reads_thr_empty_and_unknown_ports_read_all_ones() {
        let (ending, _, vcpu) = run(vec![
            Step::In(0x3fd, 1),
            Step::In(0x3f8, 1),
            Step::In(0x60, 2),
            Step::Out(0x1234, vec![5]),
            Step::Hypercall(99, [0; 6]),
            Step::Interrupted,
            Step::Out(0x501, vec![0x11]),
        ]);
        assert_eq!(ending.unwrap().exit_status(), 35);
        assert_eq!(vcpu.returned, vec![0x60, 0, 0xffff, KVM_ENOSYS]);
    }

    #[test]
    fn halt_internal_error_and_unknown_exits_are_reported() {
        let (ending, _, _) = run(vec![Step::Hlt]);
        let ending = ending.unwrap();
        assert!(matches!(ending, Ending::Halted { .. }));
        assert_eq!(ending.exit_status(), STATUS_GUEST_STOPPED);
        assert!(ending.to_string().contains("halted"));

        let (ending, _, _) = run(vec![Step::InternalError(1)]);
        let text = ending.unwrap().to_string();
        assert!(text.contains("suberror 1"), "{text}");

        let (ending, _, _) = run(vec![Step::Unsupported(44, vec![])]);
        assert!(matches!(ending, Err(RunError::UnexpectedExit(_))));

        let (ending, _, _) = run(vec![Step::MemoryFault(0x1000, 0x1000, 8)]);
        assert!(matches!(ending, Err(RunError::Hook(_))));
    }

    #[test]
    fn sev_termination_reasons_are_decoded() {
        // MSR protocol: set 1, code 2 (Linux: PVALIDATE failed).
        let (ending, _, _) = run(vec![Step::SystemEvent(6, vec![0x0002_1100])]);
        let ending = ending.unwrap();
        assert_eq!(
            ending,
            Ending::SnpTermination(Termination {
                ghcb_msr: Some(0x0002_1100),
                reason: Some(TerminationReason { set: 1, code: 2 })
            })
        );
        assert!(ending.to_string().contains("PVALIDATE failed"));
        assert_eq!(ending.exit_status(), STATUS_GUEST_STOPPED);

        let t = Termination::decode(&[], None);
        assert!(t.to_string().contains("no reason"));
        let (ending, _, _) = run(vec![Step::SystemEvent(2, vec![])]);
        assert_eq!(ending.unwrap(), Ending::SystemEvent { kind: 2, data: vec![] });
    }

    #[test]
    fn the_svsm_s_own_reason_set_is_named() {
        // What stage2 sends when it cannot load the kernel: set 3, code 0x24,
        // built by the same abi type the SVSM uses.
        let msr = TerminationReason::SVSM_STAGE2_FAILED.msr_request();
        assert_eq!(msr, 0x0024_3100);
        let t = Termination::decode(&[msr], None);
        assert_eq!(t.reason, Some(TerminationReason::SVSM_STAGE2_FAILED));
        assert_eq!(
            t.to_string(),
            "reason set 3, code 0x24 (SVSM: stage2 could not validate or load the kernel)"
        );
        let t = Termination::decode(&[TerminationReason::SVSM_NOT_VMPL0.msr_request()], None);
        assert!(t.to_string().contains("SVSM: not running at VMPL0"), "{t}");
    }

    #[test]
    fn a_standard_reason_and_an_unknown_one() {
        // Set 0, code 2: the GHCB specification's general set.
        let t = Termination::decode(&[0x0002_0100], None);
        assert_eq!(t.reason, Some(TerminationReason::SNP_UNSUPPORTED));
        assert!(t.to_string().contains("SEV-SNP not supported or feature mismatch"), "{t}");
        // Set 5, code 0x77: decoded, but no meaning is known.
        let t = Termination::decode(&[0x0077_5100], None);
        assert_eq!(t.reason, Some(TerminationReason { set: 5, code: 0x77 }));
        assert_eq!(t.to_string(), "reason set 5, code 0x77 (no meaning known)");
        // Another MSR-protocol request is not a termination reason.
        let t = Termination::decode(&[0x002], None);
        assert_eq!(t.reason, None);
        assert!(t.to_string().contains("undecoded GHCB value 0x2"), "{t}");
    }

    #[test]
    fn ghcb_page_termination_reads_exitinfo1_from_shared_memory() {
        let layout = crate::layout::GuestLayout::new(4 << 20, None).unwrap();
        let mut mem = GuestMemory::new(&layout).unwrap();
        // SW_EXITINFO1 (GHCB offset 0x398): set 0, code 2.
        mem.write(0x5000 + 0x398, &0x20u64.to_le_bytes()).unwrap();
        let t = Termination::decode(&[0x5000], Some(&mem));
        assert_eq!(t.reason, Some(TerminationReason::SNP_UNSUPPORTED));
        // The SVSM's set through the page protocol.
        let info = TerminationReason::SVSM_GHCB_SETUP.exit_info1();
        mem.write(0x5000 + 0x398, &info.to_le_bytes()).unwrap();
        let t = Termination::decode(&[0x5000], Some(&mem));
        assert!(t.to_string().contains("SVSM: GHCB setup failed"), "{t}");
        // A GHCB address outside memory is reported, not dereferenced.
        let t = Termination::decode(&[0xdead_0000_0000], Some(&mem));
        assert_eq!(t.reason, None);
        assert!(t.to_string().contains("undecoded"));
        let t = Termination::decode(&[!0xfffu64], Some(&mem));
        assert_eq!(t.reason, None);
    }

    #[test]
    fn the_watchdog_turns_a_stuck_guest_into_a_timeout() {
        let mut vcpu = ScriptedVcpu::new(vec![Step::Interrupted; 1_000_000]);
        let mut console = Vec::new();
        let dog = Watchdog::start(Duration::from_millis(50)).unwrap();
        while !dog.expired() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let ending =
            run_vcpu(&mut vcpu, &mut PortBus::new(&mut console), &mut NoHooks, &dog, None, &|_| {
                String::new()
            })
            .unwrap();
        assert!(matches!(ending, Ending::Timeout { .. }));
        assert_eq!(ending.exit_status(), 124);
    }
}
