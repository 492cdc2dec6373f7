//! The loader's console: COM1 on the native platform; nothing on SNP, where
//! port I/O would raise #VC before any handler exists (errors end the VM
//! through the GHCB MSR termination request instead).

use abi::boot::{BootParams, PlatformType};
use abi::layout::{BOOT_PARAMS_GPA, DEBUG_EXIT_PORT, EXIT_FAILURE, SERIAL_PORT};

use crate::snp;

pub struct Console {
    serial: bool,
}

fn outb(port: u16, value: u8) {
    // SAFETY: writing to COM1 or the debug-exit port has no effect on
    // memory; callers only do it on platforms where port I/O is direct.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack))
    }
}

fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: reading the COM1 line-status register has no side effects.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack))
    }
    value
}

impl Console {
    pub fn serial() -> Console {
        Console { serial: true }
    }

    pub fn silent() -> Console {
        Console { serial: false }
    }

    /// Before the boot parameters are read: serial unless the entry found
    /// SNP active (a C-bit), where port I/O would raise #VC.
    pub fn for_c_bit(c_bit_mask: u64) -> Console {
        Console { serial: c_bit_mask == 0 }
    }

    /// For the panic handler, which does not know the platform: serial
    /// unless the boot parameters say SNP.
    pub fn serial_if_safe() -> Console {
        let field = BOOT_PARAMS_GPA + core::mem::offset_of!(BootParams, platform) as u64;
        // SAFETY: the boot-parameter page is identity mapped and never
        // written while stage2 runs; `field` is its aligned platform field.
        let platform = unsafe { core::ptr::read_volatile(field as *const u32) };
        Console { serial: platform != PlatformType::Snp as u32 }
    }

    fn put(&self, byte: u8) {
        // Wait for the transmit holding register to be empty (LSR bit 5).
        for _ in 0..100_000 {
            if inb(SERIAL_PORT + 5) & 0x20 != 0 {
                break;
            }
        }
        outb(SERIAL_PORT, byte);
    }

    /// Ends the VM with a failure status.
    pub fn exit_failure(&self) -> ! {
        if self.serial {
            outb(DEBUG_EXIT_PORT, EXIT_FAILURE);
        } else {
            snp::terminate();
        }
        loop {
            // SAFETY: halting with interrupts off just stops this CPU.
            unsafe { core::arch::asm!("cli; hlt", options(nomem, nostack)) }
        }
    }
}

impl core::fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        if self.serial {
            for byte in s.bytes() {
                if byte == b'\n' {
                    self.put(b'\r');
                }
                self.put(byte);
            }
        }
        Ok(())
    }
}
