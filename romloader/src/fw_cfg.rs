//! QEMU's firmware configuration device (fw_cfg), read through its I/O
//! ports: the vCPU count and the e820 memory map are what an IGVM loader
//! needs from the VMM.
//!
//! Protocol (QEMU docs/specs/fw_cfg.rst): write a 16-bit item key to the
//! selector port, then read the item's bytes one at a time from the data
//! port. The file directory (key 0x19) lists named items such as
//! `etc/e820` with big-endian sizes and keys. The port access sits behind
//! [`FwCfgPorts`] so the parsing is tested on the host with a fake device.

/// Selector port (16-bit writes).
pub const SELECTOR_PORT: u16 = 0x510;
/// Data port (8-bit reads).
pub const DATA_PORT: u16 = 0x511;
/// Item key of the "QEMU" signature.
pub const KEY_SIGNATURE: u16 = 0x00;
/// Item key of the boot vCPU count (u16, little endian).
pub const KEY_NB_CPUS: u16 = 0x05;
/// Item key of the file directory.
pub const KEY_FILE_DIR: u16 = 0x19;
/// Name of the e820 memory-map file.
pub const E820_FILE: &[u8] = b"etc/e820";
/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// Size of one e820 record: address u64, length u64, type u32 (packed).
const E820_ENTRY_SIZE: u32 = 20;
/// Size of one file-directory record: size u32, select u16, reserved u16, name[56].
const FILE_ENTRY_SIZE: usize = 64;

/// Access to the fw_cfg ports.
pub trait FwCfgPorts {
    /// Selects an item (resets its read offset to 0).
    fn select(&mut self, key: u16);
    /// Reads the next byte of the selected item.
    fn read_byte(&mut self) -> u8;
}

/// An e820 record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct E820Entry {
    /// First address.
    pub address: u64,
    /// Length in bytes.
    pub length: u64,
    /// e820 type (1 = RAM).
    pub kind: u32,
}

/// Why fw_cfg could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FwCfgError {
    /// The signature item is not "QEMU": no fw_cfg device.
    NoDevice,
    /// The file directory has no `etc/e820`.
    NoE820,
    /// `etc/e820` is not a whole number of records.
    BadE820Size(u32),
    /// More e820 records than the loader keeps.
    TooManyE820Entries(u32),
}

impl core::fmt::Display for FwCfgError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FwCfgError::NoDevice => write!(f, "no QEMU fw_cfg device at ports 0x510/0x511"),
            FwCfgError::NoE820 => write!(f, "fw_cfg has no etc/e820 file"),
            FwCfgError::BadE820Size(size) => write!(f, "fw_cfg etc/e820 has odd size {size}"),
            FwCfgError::TooManyE820Entries(n) => write!(f, "fw_cfg etc/e820 has {n} entries"),
        }
    }
}

/// A fw_cfg device whose signature was checked.
pub struct FwCfg<P: FwCfgPorts> {
    ports: P,
}

impl<P: FwCfgPorts> FwCfg<P> {
    /// Checks the "QEMU" signature.
    pub fn new(mut ports: P) -> Result<FwCfg<P>, FwCfgError> {
        ports.select(KEY_SIGNATURE);
        let mut signature = [0u8; 4];
        signature.iter_mut().for_each(|b| *b = ports.read_byte());
        if &signature != b"QEMU" {
            return Err(FwCfgError::NoDevice);
        }
        Ok(FwCfg { ports })
    }

    fn read<const N: usize>(&mut self) -> [u8; N] {
        let mut bytes = [0u8; N];
        bytes.iter_mut().for_each(|b| *b = self.ports.read_byte());
        bytes
    }

    /// The number of vCPUs the VMM starts with.
    pub fn cpu_count(&mut self) -> u16 {
        self.ports.select(KEY_NB_CPUS);
        u16::from_le_bytes(self.read())
    }

    /// Finds a named item: its key and size.
    pub fn find_file(&mut self, name: &[u8]) -> Option<(u16, u32)> {
        self.ports.select(KEY_FILE_DIR);
        let count = u32::from_be_bytes(self.read());
        for _ in 0..count {
            let entry: [u8; FILE_ENTRY_SIZE] = self.read();
            let size = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
            let key = u16::from_be_bytes([entry[4], entry[5]]);
            let stored = &entry[8..];
            let len = stored.iter().position(|&b| b == 0).unwrap_or(stored.len());
            if &stored[..len] == name {
                return Some((key, size));
            }
        }
        None
    }

    /// Reads `etc/e820` into `out`; returns the number of records.
    pub fn read_e820(&mut self, out: &mut [E820Entry]) -> Result<usize, FwCfgError> {
        let (key, size) = self.find_file(E820_FILE).ok_or(FwCfgError::NoE820)?;
        if size % E820_ENTRY_SIZE != 0 {
            return Err(FwCfgError::BadE820Size(size));
        }
        let count = size / E820_ENTRY_SIZE;
        if count as usize > out.len() {
            return Err(FwCfgError::TooManyE820Entries(count));
        }
        self.ports.select(key);
        for slot in out.iter_mut().take(count as usize) {
            let address = u64::from_le_bytes(self.read());
            let length = u64::from_le_bytes(self.read());
            let kind = u32::from_le_bytes(self.read());
            *slot = E820Entry { address, length, kind };
        }
        Ok(count as usize)
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A fake fw_cfg device holding items by key.

    use super::*;

    pub struct FakeFwCfg {
        items: Vec<(u16, Vec<u8>)>,
        selected: Vec<u8>,
        offset: usize,
    }

    impl FakeFwCfg {
        /// A device with a signature, a CPU count and the given named files.
        pub fn new(cpus: u16, files: &[(&str, Vec<u8>)]) -> FakeFwCfg {
            let mut items =
                vec![(KEY_SIGNATURE, b"QEMU".to_vec()), (KEY_NB_CPUS, cpus.to_le_bytes().to_vec())];
            let mut directory = (files.len() as u32).to_be_bytes().to_vec();
            for (i, (name, data)) in files.iter().enumerate() {
                let key = 0x20 + i as u16;
                directory.extend_from_slice(&(data.len() as u32).to_be_bytes());
                directory.extend_from_slice(&key.to_be_bytes());
                directory.extend_from_slice(&[0, 0]);
                let mut stored = [0u8; 56];
                stored[..name.len()].copy_from_slice(name.as_bytes());
                directory.extend_from_slice(&stored);
                items.push((key, data.clone()));
            }
            items.push((KEY_FILE_DIR, directory));
            FakeFwCfg { items, selected: Vec::new(), offset: 0 }
        }

        /// e820 bytes for (address, length, type) records.
        pub fn e820(entries: &[(u64, u64, u32)]) -> Vec<u8> {
            let mut bytes = Vec::new();
            for &(address, length, kind) in entries {
                bytes.extend_from_slice(&address.to_le_bytes());
                bytes.extend_from_slice(&length.to_le_bytes());
                bytes.extend_from_slice(&kind.to_le_bytes());
            }
            bytes
        }
    }

    impl FwCfgPorts for FakeFwCfg {
        fn select(&mut self, key: u16) {
            self.selected = self
                .items
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, d)| d.clone())
                .unwrap_or_default();
            self.offset = 0;
        }

        fn read_byte(&mut self) -> u8 {
            // Reads past an item's end return 0, as on QEMU.
            let byte = self.selected.get(self.offset).copied().unwrap_or(0);
            self.offset += 1;
            byte
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeFwCfg;
    use super::*;

    #[test]
    fn reads_cpu_count_and_e820() {
        let e820 = FakeFwCfg::e820(&[(0, 0x2000_0000, 1), (0xfeff_c000, 0x4000, 2)]);
        let device = FakeFwCfg::new(2, &[("etc/boot-order", vec![1, 2]), ("etc/e820", e820)]);
        let mut fw_cfg = FwCfg::new(device).unwrap();
        assert_eq!(fw_cfg.cpu_count(), 2);
        let mut out = [E820Entry::default(); 4];
        assert_eq!(fw_cfg.read_e820(&mut out), Ok(2));
        assert_eq!(out[0], E820Entry { address: 0, length: 0x2000_0000, kind: 1 });
        assert_eq!(out[1], E820Entry { address: 0xfeff_c000, length: 0x4000, kind: 2 });
    }

    #[test]
    fn rejects_missing_device_and_bad_e820() {
        struct Absent;
        impl FwCfgPorts for Absent {
            fn select(&mut self, _: u16) {}
            fn read_byte(&mut self) -> u8 {
                0xff
            }
        }
        assert!(matches!(FwCfg::new(Absent), Err(FwCfgError::NoDevice)));

        let mut out = [E820Entry::default(); 1];
        let no_file = FakeFwCfg::new(1, &[]);
        assert_eq!(FwCfg::new(no_file).unwrap().read_e820(&mut out), Err(FwCfgError::NoE820));
        let odd = FakeFwCfg::new(1, &[("etc/e820", vec![0; 21])]);
        assert_eq!(FwCfg::new(odd).unwrap().read_e820(&mut out), Err(FwCfgError::BadE820Size(21)));
        let many = FakeFwCfg::new(1, &[("etc/e820", vec![0; 40])]);
        assert_eq!(
            FwCfg::new(many).unwrap().read_e820(&mut out),
            Err(FwCfgError::TooManyE820Entries(2))
        );
    }
}
