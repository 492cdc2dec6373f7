//! Port I/O behind a trait: direct `in`/`out` on the native and dev
//! platforms; on SNP the platform supplies an implementation that goes
//! through the GHCB (a direct `out` would raise #VC).

/// Access to I/O ports.
pub trait IoPort: Sync {
    /// Writes a byte.
    fn outb(&self, port: u16, value: u8);
    /// Reads a byte.
    fn inb(&self, port: u16) -> u8;
    /// Writes a 16-bit word.
    fn outw(&self, port: u16, value: u16);
    /// Reads a 16-bit word.
    fn inw(&self, port: u16) -> u16;
    /// Writes a 32-bit word.
    fn outl(&self, port: u16, value: u32);
    /// Reads a 32-bit word.
    fn inl(&self, port: u16) -> u32;
}

/// The `in`/`out` instructions.
pub struct DirectIo;

impl IoPort for DirectIo {
    fn outb(&self, port: u16, value: u8) {
        // SAFETY: port writes touch no memory the compiler knows about; which
        // ports are written is the caller's (the device driver's) business.
        unsafe {
            core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack))
        }
    }

    fn inb(&self, port: u16) -> u8 {
        let value: u8;
        // SAFETY: as for `outb`.
        unsafe {
            core::arch::asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack))
        }
        value
    }

    fn outw(&self, port: u16, value: u16) {
        // SAFETY: as for `outb`.
        unsafe {
            core::arch::asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack))
        }
    }

    fn inw(&self, port: u16) -> u16 {
        let value: u16;
        // SAFETY: as for `outb`.
        unsafe {
            core::arch::asm!("in ax, dx", in("dx") port, out("ax") value, options(nomem, nostack))
        }
        value
    }

    fn outl(&self, port: u16, value: u32) {
        // SAFETY: as for `outb`.
        unsafe {
            core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack))
        }
    }

    fn inl(&self, port: u16) -> u32 {
        let value: u32;
        // SAFETY: as for `outb`.
        unsafe {
            core::arch::asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack))
        }
        value
    }
}
