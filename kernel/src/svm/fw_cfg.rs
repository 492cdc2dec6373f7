//! The guest's view of QEMU's firmware configuration device (fw_cfg) on
//! the dev platform: everything passes through to the device, except that
//! the guest's memory map (`etc/e820`) shows the SVSM's region as reserved
//! instead of RAM, and DMA never reaches memory the guest may not touch.
//!
//! Stock OVMF learns its RAM from `etc/e820`, which QEMU fills with all of
//! the VM's RAM, the SVSM's region included (see [`filter_e820`] for how
//! the guest's version keeps it out). The dev platform intercepts
//! the fw_cfg ports (selector 0x510, data 0x511, DMA address 0x514/0x518)
//! and serves its own copies of two items: the file directory (key 0x19,
//! where the size of `etc/e820` changes) and `etc/e820` itself. Reads and
//! DMA of every other item go to the device. A DMA descriptor is copied
//! out of guest memory and handed to the device from SVSM memory (the guest
//! cannot change it meanwhile), and only after its buffer was checked to be
//! memory the guest's VMPL may access that way ([`VmplMemory`]: guest RAM,
//! not the SVSM's, no page the SVSM holds, and the RMP permission: WRITE
//! for a READ into guest memory, READ for a WRITE out of it); a rejected
//! one completes with the error bit, as the device reports a failed
//! transfer, and touches no memory. The device then moves the data itself,
//! straight between the buffer and the item (not through SVSM memory), so
//! the caller must keep the permissions checked fixed until the filter
//! returns: the dev platform holds its guest-memory lock, which every
//! RMPADJUST takes, across the check and the transfer. A page the SVSM
//! takes from the guest (CREATE_VCPU's VMSA, DEPOSIT_MEM) is revoked in
//! the RMP before the SVSM reads it, so a transfer either ends before the
//! revoke or is refused.
//!
//! Layouts (QEMU `docs/specs/fw_cfg.rst`): the file directory is a
//! big-endian u32 count and 64-byte entries {u32 size, u16 select, u16
//! reserved, `name[56]`}, all big-endian; a DMA descriptor is {u32 control,
//! u32 length, u64 address}, big-endian, with control bits error (0), read
//! (1), skip (2), select (3, key in bits 16-31) and write (4); `etc/e820`
//! holds little-endian {u64 address, u64 length, u32 type} entries.
//!
//! The items the filter serves behave as QEMU's (`hw/nvram/fw_cfg.c`):
//! the read offset never passes the end of the item; a port read past the
//! end gives 0, a DMA read past the end zero-fills the rest of the buffer,
//! a skip past the end stops at the end, a DMA write fails. A selector is
//! looked up without its write-channel bit (0x4000), as QEMU does, so no
//! alias of a filtered item reaches the device's unfiltered copy. A byte
//! read of the selector port reads data, as on QEMU's combined x86 ports.

use alloc::vec;
use alloc::vec::Vec;

use abi::boot::MemoryRange;
use abi::snp_instr::VmplPermissions;

use crate::guest_mem::{GuestMemory, InvalidGpa};
use crate::svm::rmp::VmplMemory;

/// The selector port (16-bit writes).
pub const SELECTOR_PORT: u16 = 0x510;
/// The data port (8-bit reads).
pub const DATA_PORT: u16 = 0x511;
/// DMA address, high half (big-endian 32-bit write).
pub const DMA_HIGH_PORT: u16 = 0x514;
/// DMA address, low half; writing it starts the transfer.
pub const DMA_LOW_PORT: u16 = 0x518;
/// The ports the dev platform intercepts.
pub const PORTS: core::ops::RangeInclusive<u16> = 0x510..=0x51B;

/// Selector bit QEMU ignores when it looks an item up (the old write
/// channel; QEMU's `FW_CFG_ENTRY_MASK` clears it and the arch bit keeps its
/// own table).
const WRITE_CHANNEL: u16 = 0x4000;

/// Key of the file directory.
pub const FILE_DIR_KEY: u16 = 0x19;
/// Name of the memory-map file.
pub const E820_FILE: &[u8] = b"etc/e820";
const FILE_ENTRY_SIZE: usize = 64;
const FILE_NAME_SIZE: usize = 56;
const E820_ENTRY_SIZE: usize = 20;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;

/// DMA control bits.
pub mod dma {
    /// The transfer failed.
    pub const ERROR: u32 = 1 << 0;
    /// Copy the item to guest memory.
    pub const READ: u32 = 1 << 1;
    /// Skip bytes of the item.
    pub const SKIP: u32 = 1 << 2;
    /// Select the item in bits 16-31 first.
    pub const SELECT: u32 = 1 << 3;
    /// Copy guest memory to the item.
    pub const WRITE: u32 = 1 << 4;
}

/// The device behind the filter.
pub trait FwCfgDevice {
    /// Selects item `key`.
    fn select(&mut self, key: u16);
    /// Reads the next byte of the selected item.
    fn read_data(&mut self) -> u8;
    /// Runs one DMA operation from a descriptor in SVSM memory; returns the
    /// control word the device left in it.
    fn dma(&mut self, control: u32, length: u32, address: u64) -> u32;
    /// Reads a port of the device as the guest asked.
    fn port_in(&mut self, port: u16, size: u8) -> u32;
    /// Writes a port of the device as the guest asked.
    fn port_out(&mut self, port: u16, size: u8, value: u32);
}

/// Why the filter could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FwCfgError {
    /// The file directory lists no `etc/e820`.
    NoE820,
    /// The file directory lists no file of that name.
    NoFile,
    /// The file directory or `etc/e820` is malformed.
    Malformed,
}

/// One item the filter serves itself.
struct VirtualItem {
    key: u16,
    bytes: Vec<u8>,
}

/// A device file the guest sees with bytes appended, read from the device
/// only when the guest first selects it.
struct PendingAppend {
    key: u16,
    size: usize,
    extra: Vec<u8>,
}

/// The filter's state.
pub struct FwCfgFilter {
    items: Vec<VirtualItem>,
    pending: Vec<PendingAppend>,
    selected: u16,
    offset: usize,
    dma_high: u32,
    e820_seen: bool,
}

fn read_bytes(device: &mut impl FwCfgDevice, key: u16, len: usize) -> Vec<u8> {
    device.select(key);
    (0..len).map(|_| device.read_data()).collect()
}

/// The entries of a file directory: (entry offset, size, key, name).
fn file_entries(dir: &[u8]) -> impl Iterator<Item = (usize, u32, u16, &[u8])> {
    dir.get(4..).unwrap_or(&[]).chunks_exact(FILE_ENTRY_SIZE).enumerate().map(|(i, entry)| {
        let size = u32::from_be_bytes(entry[0..4].try_into().expect("4 bytes"));
        let key = u16::from_be_bytes([entry[4], entry[5]]);
        let name = &entry[8..8 + FILE_NAME_SIZE];
        let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(FILE_NAME_SIZE)];
        (4 + i * FILE_ENTRY_SIZE, size, key, name)
    })
}

/// `etc/e820` as the guest may see it: no RAM inside `hide`, and no RAM
/// below 4 GiB above the lowest hidden range either: both become reserved
/// entries.
///
/// OVMF takes the end of the highest RAM entry below 4 GiB as the size of a
/// single low-memory block, so a hole in the middle of low RAM would not
/// keep it out; low RAM must end where the SVSM's region begins. (QEMU's
/// `-machine max-ram-below-4g=<end of the SVSM region>` moves the rest of
/// the RAM above 4 GiB, so nothing is lost.)
pub fn filter_e820(table: &[u8], hide: &[MemoryRange]) -> Vec<u8> {
    const FOUR_GIB: u64 = 1 << 32;
    let low_end = hide.iter().map(|h| h.base).filter(|b| *b < FOUR_GIB).min();
    let mut cuts: Vec<(u64, u64)> = hide.iter().filter_map(|h| Some((h.base, h.end()?))).collect();
    if let Some(low_end) = low_end {
        cuts.push((low_end, FOUR_GIB));
    }
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut emit = |base: u64, end: u64, kind: u32| {
        if end > base {
            out.extend_from_slice(&base.to_le_bytes());
            out.extend_from_slice(&(end - base).to_le_bytes());
            out.extend_from_slice(&kind.to_le_bytes());
        }
    };
    for entry in table.chunks_exact(E820_ENTRY_SIZE) {
        let base = u64::from_le_bytes(entry[0..8].try_into().expect("8 bytes"));
        let size = u64::from_le_bytes(entry[8..16].try_into().expect("8 bytes"));
        let kind = u32::from_le_bytes(entry[16..20].try_into().expect("4 bytes"));
        let end = base.saturating_add(size);
        if kind != E820_RAM {
            emit(base, end, kind);
            continue;
        }
        // Walk the entry: RAM between the cuts, reserved inside them.
        let mut at = base;
        for &(from, to) in &cuts {
            let (from, to) = (from.clamp(at, end), to.clamp(at, end));
            emit(at, from, E820_RAM);
            emit(from, to, E820_RESERVED);
            at = at.max(to);
        }
        emit(at, end, E820_RAM);
    }
    out
}

impl FwCfgFilter {
    /// Reads the device's file directory and memory map and prepares the
    /// guest's versions, in which `hide` is not RAM.
    pub fn new(
        device: &mut impl FwCfgDevice,
        hide: &[MemoryRange],
    ) -> Result<FwCfgFilter, FwCfgError> {
        let count_bytes = read_bytes(device, FILE_DIR_KEY, 4);
        let count = u32::from_be_bytes(count_bytes[..4].try_into().expect("4 bytes")) as usize;
        if count > 0x1000 {
            return Err(FwCfgError::Malformed);
        }
        let mut dir = read_bytes(device, FILE_DIR_KEY, 4 + count * FILE_ENTRY_SIZE);
        let (entry_offset, e820_size, e820_key, _) = file_entries(&dir)
            .find(|(_, _, _, name)| *name == E820_FILE)
            .ok_or(FwCfgError::NoE820)?;
        if !(e820_size as usize).is_multiple_of(E820_ENTRY_SIZE) || e820_size > 0x1_0000 {
            return Err(FwCfgError::Malformed);
        }
        let e820 = filter_e820(&read_bytes(device, e820_key, e820_size as usize), hide);
        dir[entry_offset..entry_offset + 4].copy_from_slice(&(e820.len() as u32).to_be_bytes());
        device.select(0);
        Ok(FwCfgFilter {
            items: vec![
                VirtualItem { key: FILE_DIR_KEY, bytes: dir },
                VirtualItem { key: e820_key, bytes: e820 },
            ],
            pending: Vec::new(),
            selected: 0,
            offset: 0,
            dma_high: 0,
            e820_seen: false,
        })
    }

    /// Adds a file the device does not have (e.g. ACPI tables for an
    /// emulated device), under the next free key.
    pub fn add_file(&mut self, name: &[u8], bytes: Vec<u8>) -> Result<(), FwCfgError> {
        if name.len() >= FILE_NAME_SIZE {
            return Err(FwCfgError::Malformed);
        }
        let dir = &self.items[0].bytes;
        let count = u32::from_be_bytes(dir[..4].try_into().expect("4 bytes"));
        if file_entries(dir).any(|(_, _, _, existing)| existing == name) {
            return Err(FwCfgError::Malformed);
        }
        let key = file_entries(dir).map(|(_, _, key, _)| key).max().unwrap_or(0x1F) + 1;
        let mut entry = [0u8; FILE_ENTRY_SIZE];
        entry[0..4].copy_from_slice(&(bytes.len() as u32).to_be_bytes());
        entry[4..6].copy_from_slice(&key.to_be_bytes());
        entry[8..8 + name.len()].copy_from_slice(name);
        let dir = &mut self.items[0].bytes;
        dir[..4].copy_from_slice(&(count + 1).to_be_bytes());
        dir.extend_from_slice(&entry);
        self.items.push(VirtualItem { key, bytes });
        Ok(())
    }

    /// Appends `extra` to the device's file `name` in the guest's view
    /// (e.g. commands for `etc/table-loader`). The device's own bytes are
    /// read when the guest first selects the file, not now: QEMU builds its
    /// ACPI tables on the first read of `etc/table-loader`, from the
    /// chipset's state at that moment (the PM base OVMF programs).
    pub fn append_file(&mut self, name: &[u8], extra: &[u8]) -> Result<(), FwCfgError> {
        let (entry_offset, size, key, _) = file_entries(&self.items[0].bytes)
            .find(|(_, _, _, existing)| *existing == name)
            .ok_or(FwCfgError::NoFile)?;
        if self.item(key).is_some() || size > 0x10_0000 {
            return Err(FwCfgError::Malformed);
        }
        let new_size = ((size as usize + extra.len()) as u32).to_be_bytes();
        self.items[0].bytes[entry_offset..entry_offset + 4].copy_from_slice(&new_size);
        self.pending.push(PendingAppend { key, size: size as usize, extra: extra.to_vec() });
        Ok(())
    }

    /// Reads a pending file from the device, now that the guest wants it.
    fn materialize(&mut self, key: u16, device: &mut impl FwCfgDevice) {
        if let Some(index) = self.pending.iter().position(|p| p.key == key) {
            let pending = self.pending.swap_remove(index);
            let mut bytes = read_bytes(device, key, pending.size);
            bytes.extend_from_slice(&pending.extra);
            self.items.push(VirtualItem { key, bytes });
        }
    }

    fn item(&self, key: u16) -> Option<&VirtualItem> {
        self.items.iter().find(|item| item.key == key)
    }

    /// Makes `key` (as the guest wrote it) the selected item; returns the
    /// key it names.
    fn select_virtual(&mut self, key: u16, device: &mut impl FwCfgDevice) -> u16 {
        let key = key & !WRITE_CHANNEL;
        self.materialize(key, device);
        self.selected = key;
        self.offset = 0;
        self.note_virtual_selection(key);
        key
    }

    fn select(&mut self, key: u16, device: &mut impl FwCfgDevice) {
        let key = self.select_virtual(key, device);
        if self.item(key).is_none() {
            device.select(key);
        }
    }

    /// Logs the first time the guest selects the memory map.
    fn note_virtual_selection(&mut self, key: u16) {
        match self.items.get(1) {
            Some(e820) if e820.key == key && !self.e820_seen => {
                self.e820_seen = true;
                let entries = e820.bytes.len() / E820_ENTRY_SIZE;
                log::info!(
                    "fw_cfg: the guest reads etc/e820 ({entries} entries, SVSM region reserved)"
                );
            }
            _ => {}
        }
    }

    /// The unread bytes of the selected item, if the filter serves it.
    fn virtual_rest(&self) -> Option<&[u8]> {
        let item = self.item(self.selected)?;
        Some(item.bytes.get(self.offset..).unwrap_or_default())
    }

    /// The guest reads `size` bytes at `port`.
    pub fn port_in(&mut self, port: u16, size: u8, device: &mut impl FwCfgDevice) -> u32 {
        // QEMU's x86 device answers a byte read of either port with data.
        if size == 1
            && (port == DATA_PORT || port == SELECTOR_PORT)
            && let Some(rest) = self.virtual_rest()
        {
            // Past the end: 0, and the offset stays at the end.
            let byte = rest.first().copied();
            self.offset += usize::from(byte.is_some());
            return u32::from(byte.unwrap_or(0));
        }
        device.port_in(port, size)
    }

    /// The guest writes `value` (`size` bytes) at `port`. Every access to
    /// guest memory, the filter's and the device's DMA, goes by `memory`'s
    /// checks; its [RMP](crate::svm::rmp::Rmp) must not change until this
    /// returns.
    pub fn port_out(
        &mut self,
        port: u16,
        size: u8,
        value: u32,
        device: &mut impl FwCfgDevice,
        memory: &VmplMemory<'_>,
    ) {
        match (port, size) {
            (SELECTOR_PORT, 2) => self.select(value as u16, device),
            (DMA_HIGH_PORT, 4) => self.dma_high = u32::from_be(value),
            (DMA_LOW_PORT, 4) => {
                // The device forgets the address's high half once used.
                let high = core::mem::take(&mut self.dma_high);
                let descriptor = (u64::from(high) << 32) | u64::from(u32::from_be(value));
                self.dma(descriptor, device, memory);
            }
            _ => device.port_out(port, size, value),
        }
    }

    /// Runs the DMA operation whose descriptor is at guest address `gpa`.
    fn dma(&mut self, gpa: u64, device: &mut impl FwCfgDevice, memory: &VmplMemory<'_>) {
        let mut raw = [0u8; 16];
        if memory.read(gpa, &mut raw).is_err() {
            // Nowhere to report to: the device would not see it either.
            return;
        }
        let control = u32::from_be_bytes(raw[0..4].try_into().expect("4 bytes"));
        let length = u32::from_be_bytes(raw[4..8].try_into().expect("4 bytes"));
        let address = u64::from_be_bytes(raw[8..16].try_into().expect("8 bytes"));
        let select = control & dma::SELECT != 0;
        if select {
            // The device selects the key in the control word itself.
            self.select_virtual((control >> 16) as u16, device);
        }
        let status = if self.item(self.selected).is_some() {
            self.virtual_dma(control, length, address, memory)
        } else if buffer_allowed(control, length, address, memory) {
            device.dma(control, length, address)
        } else {
            // As QEMU fails a transfer: the selection stands, the buffer is
            // untouched.
            if select {
                device.select(self.selected);
            }
            dma::ERROR
        };
        // The control word is where the device reports; a guest that made
        // it unwritable gets no report.
        let _ = memory.write(gpa, &status.to_be_bytes());
    }

    /// One DMA operation on the selected item, which the filter serves:
    /// read (zero-filled past the end), else write (refused: the items are
    /// read-only), else skip, as QEMU ranks the control bits.
    fn virtual_dma(
        &mut self,
        control: u32,
        length: u32,
        address: u64,
        memory: &VmplMemory<'_>,
    ) -> u32 {
        let Some(rest) = self.virtual_rest() else { return dma::ERROR };
        let length = u64::from(length);
        let data = &rest[..rest.len().min(length as usize)];
        let taken = data.len();
        if control & dma::READ != 0 {
            if read_into(memory, address, length, data).is_err() {
                return dma::ERROR;
            }
        } else if control & dma::WRITE != 0 {
            return if length == 0 { 0 } else { dma::ERROR };
        } else if control & dma::SKIP == 0 {
            return 0;
        }
        self.offset += taken;
        0
    }
}

/// Whether the device may do the transfer `control` asks for with the
/// guest's `length`-byte buffer at `address`: a READ writes it, so the
/// guest must be allowed to write it; a WRITE reads it; a skip or a select
/// alone touches no memory. (QEMU ranks READ above WRITE.)
fn buffer_allowed(control: u32, length: u32, address: u64, memory: &VmplMemory<'_>) -> bool {
    let wanted = if control & dma::READ != 0 {
        VmplPermissions::WRITE
    } else if control & dma::WRITE != 0 {
        VmplPermissions::READ
    } else {
        return true;
    };
    memory.check_for(address, u64::from(length), wanted).is_ok()
}

/// Copies `data` to guest memory at `address` and zeros the rest of the
/// `length`-byte buffer, once the guest may write the whole buffer.
fn read_into(
    memory: &VmplMemory<'_>,
    address: u64,
    length: u64,
    data: &[u8],
) -> Result<(), InvalidGpa> {
    memory.check_for(address, length, VmplPermissions::WRITE)?;
    let zeros_at = address.checked_add(data.len() as u64).ok_or(InvalidGpa)?;
    memory.write(address, data)?;
    let zeros = length - data.len() as u64;
    if zeros > 0 {
        memory.zero(zeros_at, zeros)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
