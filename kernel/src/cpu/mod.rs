//! The CPU: registers, port I/O, descriptor tables, exceptions, per-CPU data.

pub mod gdt;
pub mod io;
pub mod registers;

#[cfg(target_os = "none")]
pub mod extable;
#[cfg(target_os = "none")]
pub mod idt;
#[cfg(target_os = "none")]
pub mod percpu;
