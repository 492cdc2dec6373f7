//! What one boot of the test guest does, chosen by the xtask through a
//! QEMU fw_cfg file (`-fw_cfg name=opt/svsm/test-guest-mode,string=MODE`).
//! A deliberate access to SVSM memory stops the guest, so each such access
//! gets a boot of its own.
//!
//! fw_cfg (QEMU docs/specs/fw_cfg.rst): selector port 0x510 (16-bit),
//! data port 0x511; selector 0x19 is the file directory: a big-endian u32
//! count, then 64-byte entries {size be32, select be16, reserved u16,
//! name[56] NUL-terminated}.

/// The fw_cfg file naming the mode.
pub const FW_CFG_FILE: &str = "opt/svsm/test-guest-mode";
/// fw_cfg selector port.
pub const FW_CFG_SELECTOR_PORT: u16 = 0x510;
/// fw_cfg data port.
pub const FW_CFG_DATA_PORT: u16 = 0x511;
/// Selector of the signature ("QEMU").
pub const FW_CFG_SIGNATURE: u16 = 0x0000;
/// Selector of the file directory.
pub const FW_CFG_FILE_DIR: u16 = 0x0019;
/// Size of a directory entry.
pub const FW_CFG_DIR_ENTRY_SIZE: usize = 64;

/// What the guest does in this boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every call case, then exit through the debug-exit port.
    Calls,
    /// Read SVSM memory (must be stopped by the SVSM).
    ReadSvsm,
    /// Write SVSM memory (must be stopped by the SVSM).
    WriteSvsm,
    /// The call benchmark, then exit.
    Bench,
    /// The attestation protocol and the vTPM's EK; the outputs go to the
    /// console for the xtask to verify.
    Attest,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 5] =
        [Mode::Calls, Mode::ReadSvsm, Mode::WriteSvsm, Mode::Bench, Mode::Attest];

    /// The fw_cfg string for the mode.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Calls => "calls",
            Mode::ReadSvsm => "read-svsm",
            Mode::WriteSvsm => "write-svsm",
            Mode::Bench => "bench",
            Mode::Attest => "attest",
        }
    }

    /// The mode a fw_cfg file's content names (trailing NULs and newlines
    /// ignored).
    pub fn from_bytes(bytes: &[u8]) -> Option<Mode> {
        let end = bytes.iter().position(|&b| b == 0 || b == b'\n').unwrap_or(bytes.len());
        Mode::ALL.into_iter().find(|m| m.name().as_bytes() == &bytes[..end])
    }

    /// The value of QEMU's `-fw_cfg` option that selects the mode.
    pub fn fw_cfg_value(self) -> &'static str {
        match self {
            Mode::Calls => "name=opt/svsm/test-guest-mode,string=calls",
            Mode::ReadSvsm => "name=opt/svsm/test-guest-mode,string=read-svsm",
            Mode::WriteSvsm => "name=opt/svsm/test-guest-mode,string=write-svsm",
            Mode::Bench => "name=opt/svsm/test-guest-mode,string=bench",
            Mode::Attest => "name=opt/svsm/test-guest-mode,string=attest",
        }
    }
}

/// If the directory entry names `file`, its (selector, size).
pub fn directory_entry_for(entry: &[u8; FW_CFG_DIR_ENTRY_SIZE], file: &str) -> Option<(u16, u32)> {
    let size = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
    let select = u16::from_be_bytes([entry[4], entry[5]]);
    let name = &entry[8..];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    (&name[..end] == file.as_bytes()).then_some((select, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_round_trip() {
        for mode in Mode::ALL {
            assert_eq!(Mode::from_bytes(mode.name().as_bytes()), Some(mode));
            assert!(mode.fw_cfg_value().starts_with("name=opt/svsm/test-guest-mode,string="));
            assert!(mode.fw_cfg_value().ends_with(mode.name()));
        }
        assert_eq!(Mode::from_bytes(b"bench\n\0\0"), Some(Mode::Bench));
        assert_eq!(Mode::from_bytes(b"benchmark"), None);
        assert_eq!(Mode::from_bytes(b""), None);
    }

    #[test]
    fn directory_entries_are_big_endian() {
        let mut entry = [0u8; 64];
        entry[0..4].copy_from_slice(&5u32.to_be_bytes());
        entry[4..6].copy_from_slice(&0x0025u16.to_be_bytes());
        entry[8..8 + FW_CFG_FILE.len()].copy_from_slice(FW_CFG_FILE.as_bytes());
        assert_eq!(directory_entry_for(&entry, FW_CFG_FILE), Some((0x25, 5)));
        assert_eq!(directory_entry_for(&entry, "opt/svsm/test-guest"), None);
        entry[8 + FW_CFG_FILE.len()] = b'x';
        assert_eq!(directory_entry_for(&entry, FW_CFG_FILE), None);
    }
}
