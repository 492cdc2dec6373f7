//! The ROM loader: a `-bios` image for QEMU versions without an IGVM loader
//! (Debian's QEMU 10.0). Its reset code does for the IGVM file's native
//! platform what an IGVM loader does: copy the pages to their addresses,
//! fill the parameter areas from QEMU's fw_cfg, check the required memory,
//! and start the native VP context.
//!
//! The xtask converts the IGVM file into a simple load table ([`table`])
//! placed in the ROM in front of this loader's code. Everything here except
//! the reset and mode-switch code (`main.rs`, bare metal only) is a plain
//! library, tested on the host against fakes of fw_cfg and guest memory.

#![cfg_attr(target_os = "none", no_std)]

pub mod fw_cfg;
pub mod loader;
pub mod table;
