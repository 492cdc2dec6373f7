//! The kernel console: a 16550 UART on COM1 behind the `log` facade.
//!
//! Output goes through the platform's [`IoPort`], so the same driver works
//! with direct port I/O and, on SNP, through the GHCB. Until a port is
//! installed the console drops output.

use core::fmt::{self, Write};

use abi::layout::SERIAL_PORT;
use spin::Mutex;

use crate::cpu::io::IoPort;

/// A 16550-compatible UART.
pub struct Serial {
    io: Option<&'static dyn IoPort>,
    base: u16,
}

const LINE_STATUS: u16 = 5;
const THR_EMPTY: u8 = 0x20;

impl Serial {
    const fn new(base: u16) -> Serial {
        Serial { io: None, base }
    }

    /// Programs 115200 8N1 with FIFOs and starts using `io`.
    fn init(&mut self, io: &'static dyn IoPort) {
        let base = self.base;
        io.outb(base + 1, 0x00); // no interrupts
        io.outb(base + 3, 0x80); // divisor latch
        io.outb(base, 0x01); // 115200 baud
        io.outb(base + 1, 0x00);
        io.outb(base + 3, 0x03); // 8N1
        io.outb(base + 2, 0xC7); // FIFOs on, cleared
        io.outb(base + 4, 0x03); // DTR, RTS
        self.io = Some(io);
    }

    fn put(&self, io: &dyn IoPort, byte: u8) {
        for _ in 0..100_000 {
            if io.inb(self.base + LINE_STATUS) & THR_EMPTY != 0 {
                break;
            }
        }
        io.outb(self.base, byte);
    }
}

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let Some(io) = self.io else { return Ok(()) };
        for byte in s.bytes() {
            if byte == b'\n' {
                self.put(io, b'\r');
            }
            self.put(io, byte);
        }
        Ok(())
    }
}

static CONSOLE: Mutex<Serial> = Mutex::new(Serial::new(SERIAL_PORT));

/// Starts console output through `io`.
pub fn init(io: &'static dyn IoPort) {
    CONSOLE.lock().init(io);
}

/// Writes formatted text to the console.
pub fn print(args: fmt::Arguments<'_>) {
    let _ = CONSOLE.lock().write_fmt(args);
}

/// Writes formatted text even if the console lock is held (for the panic
/// and fatal-exception paths, which may interrupt a holder on this CPU).
pub fn print_emergency(args: fmt::Arguments<'_>) {
    match CONSOLE.try_lock() {
        Some(mut console) => {
            let _ = console.write_fmt(args);
        }
        None => {
            // SAFETY: the SVSM runs its console on one CPU at a time, and
            // this path ends the VM; overlapping output with an interrupted
            // holder is the worst that can happen.
            unsafe { CONSOLE.force_unlock() };
            let _ = CONSOLE.lock().write_fmt(args);
        }
    }
}

/// `print!` to the kernel console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// `println!` to the kernel console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

struct ConsoleLogger;

impl log::Log for ConsoleLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let level = match record.level() {
                log::Level::Error => "ERROR",
                log::Level::Warn => "WARN ",
                log::Level::Info => "INFO ",
                log::Level::Debug => "DEBUG",
                log::Level::Trace => "TRACE",
            };
            print(format_args!("[{level}] {}\n", record.args()));
        }
    }

    fn flush(&self) {}
}

static LOGGER: ConsoleLogger = ConsoleLogger;

/// Installs the console as the `log` backend.
pub fn init_logging(level: log::LevelFilter) {
    // A second call (there is none) would keep the first logger.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
