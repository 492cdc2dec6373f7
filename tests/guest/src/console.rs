//! COM1 output (a 16550 UART at 0x3F8) shared by the BSP and the AP, and
//! the way out: the debug-exit port.

use core::fmt::{self, Write};

use abi::layout::{DEBUG_EXIT_PORT, EXIT_FAILURE, EXIT_SUCCESS, SERIAL_PORT};

use crate::arch::{inb, outb, relax};

static LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Sets COM1 to 115200 8N1 without interrupts.
pub fn init() {
    outb(SERIAL_PORT + 1, 0x00); // no interrupts
    outb(SERIAL_PORT + 3, 0x80); // DLAB
    outb(SERIAL_PORT, 0x01); // divisor 1: 115200 baud
    outb(SERIAL_PORT + 1, 0x00);
    outb(SERIAL_PORT + 3, 0x03); // 8N1
    outb(SERIAL_PORT + 2, 0xC7); // FIFO on, cleared
}

/// The UART as a `fmt::Write`.
pub struct Serial;

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                put(b'\r');
            }
            put(byte);
        }
        Ok(())
    }
}

fn put(byte: u8) {
    // Wait (boundedly) for the transmit holding register to empty.
    for _ in 0..100_000 {
        if inb(SERIAL_PORT + 5) & 0x20 != 0 {
            break;
        }
        relax();
    }
    outb(SERIAL_PORT, byte);
}

/// Prints under the console lock (lines from the BSP and the AP do not mix).
pub fn print(args: fmt::Arguments<'_>) {
    let _guard = LOCK.lock();
    let _ = Serial.write_fmt(args);
}

/// Runs `f` with the console locked, for multi-part lines.
pub fn with_console<R>(f: impl FnOnce(&mut Serial) -> R) -> R {
    let _guard = LOCK.lock();
    f(&mut Serial)
}

/// `print!` to COM1.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// `println!` to COM1.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Ends the VM through the debug-exit port: success or failure.
pub fn exit(success: bool) -> ! {
    outb(DEBUG_EXIT_PORT, if success { EXIT_SUCCESS } else { EXIT_FAILURE });
    halt_forever()
}

/// Stops this vCPU for good (used when even the exit port did not end the
/// VM).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: halting with interrupts off only stops this vCPU.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
