//! The fw_cfg filter against a fake device and fake guest RAM.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::*;
use abi::snp_instr::{RmpAdjustAttributes, RmpPageSize};

use crate::guest_mem::{CheckedGuestMemory, GuestLayout, OwnedPages, RawGuestMemory};
use crate::host_doubles::FakeGuestRam;
use crate::svm::rmp::{PageState, Rmp};

const MIB: u64 = 1 << 20;
const SVSM: MemoryRange = MemoryRange { base: 128 * MIB, size: 80 * MIB };

fn e820(entries: &[(u64, u64, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(base, size, kind) in entries {
        out.extend_from_slice(&base.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
    }
    out
}

/// A fw_cfg device with a file directory, doing DMA into `ram`.
struct FakeDevice<'a> {
    items: BTreeMap<u16, Vec<u8>>,
    selected: u16,
    offset: usize,
    ram: &'a FakeGuestRam,
    dma_calls: Vec<(u32, u32, u64)>,
}

impl<'a> FakeDevice<'a> {
    fn new(ram: &'a FakeGuestRam, files: &[(&str, Vec<u8>)]) -> FakeDevice<'a> {
        let mut items = BTreeMap::new();
        let mut dir = (files.len() as u32).to_be_bytes().to_vec();
        for (i, (name, bytes)) in files.iter().enumerate() {
            let key = 0x20 + i as u16;
            let mut entry = [0u8; 64];
            entry[0..4].copy_from_slice(&(bytes.len() as u32).to_be_bytes());
            entry[4..6].copy_from_slice(&key.to_be_bytes());
            entry[8..8 + name.len()].copy_from_slice(name.as_bytes());
            dir.extend_from_slice(&entry);
            items.insert(key, bytes.clone());
        }
        items.insert(FILE_DIR_KEY, dir);
        FakeDevice { items, selected: 0, offset: 0, ram, dma_calls: Vec::new() }
    }
}

impl FwCfgDevice for FakeDevice<'_> {
    fn select(&mut self, key: u16) {
        self.selected = key;
        self.offset = 0;
    }

    fn read_data(&mut self) -> u8 {
        let byte = self.items.get(&self.selected).and_then(|b| b.get(self.offset)).copied();
        self.offset += 1;
        byte.unwrap_or(0)
    }

    fn dma(&mut self, control: u32, length: u32, address: u64) -> u32 {
        self.dma_calls.push((control, length, address));
        if control & dma::SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        if control & dma::READ != 0 {
            let bytes: Vec<u8> = (0..length).map(|_| self.read_data()).collect();
            self.ram.write(address, &bytes).unwrap();
        }
        0
    }

    fn port_in(&mut self, port: u16, _size: u8) -> u32 {
        if port == DATA_PORT { u32::from(self.read_data()) } else { 0xAA }
    }

    fn port_out(&mut self, _port: u16, _size: u8, _value: u32) {}
}

fn qemu_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("bootorder", b"/pci@i0cf8/x".to_vec()),
        ("etc/e820", e820(&[(0, 512 * MIB, 1), (0xFEFF_C000, 0x4000, 2)])),
        ("opt/svsm/test-guest-mode", b"calls".to_vec()),
    ]
}

/// The guest's VMPL on the dev platform.
const VMPL: u8 = 2;

struct Setup {
    ram: FakeGuestRam,
    layout: GuestLayout,
    owned: OwnedPages,
    /// Guest RAM validated, the guest's VMPL with every permission (as
    /// after the core protocol's PVALIDATE); the SVSM's region with none.
    rmp: Rmp,
}

fn setup() -> Setup {
    let guest = PageState::new(true, VmplPermissions::ALL);
    let svsm = PageState::new(true, VmplPermissions::NONE);
    let above = MemoryRange { base: SVSM.base + SVSM.size, size: 256 * MIB - SVSM.end().unwrap() };
    Setup {
        ram: FakeGuestRam::new(0, 256 * MIB),
        layout: GuestLayout::new(&[MemoryRange { base: 0, size: 256 * MIB }], &[SVSM]),
        owned: OwnedPages::new(),
        rmp: Rmp::new(&[
            (MemoryRange { base: 0, size: SVSM.base }, guest),
            (SVSM, svsm),
            (above, guest),
        ]),
    }
}

impl Setup {
    fn checked(&self) -> CheckedGuestMemory<'_> {
        CheckedGuestMemory::new(&self.layout, &self.owned, &self.ram)
    }

    fn vmpl<'a>(&'a self, checked: &'a CheckedGuestMemory<'a>) -> VmplMemory<'a> {
        VmplMemory::new(checked, &self.rmp, VMPL)
    }
}

fn port_read(filter: &mut FwCfgFilter, device: &mut FakeDevice, len: usize) -> Vec<u8> {
    (0..len).map(|_| filter.port_in(DATA_PORT, 1, device) as u8).collect()
}

#[test]
fn e820_low_ram_ends_where_the_svsm_region_begins() {
    let table = e820(&[
        (0, 0x9F000, 1),
        (0x10_0000, 511 * MIB, 1),
        (0xFEFF_C000, 0x4000, 2),
        (1 << 32, 512 * MIB, 1),
    ]);
    let filtered = filter_e820(&table, &[SVSM]);
    assert_eq!(
        filtered,
        e820(&[
            (0, 0x9F000, 1),
            (0x10_0000, 127 * MIB, 1),
            (128 * MIB, 80 * MIB, 2),
            (208 * MIB, 304 * MIB, 2),
            (0xFEFF_C000, 0x4000, 2),
            (1 << 32, 512 * MIB, 1),
        ])
    );
    // With QEMU's max-ram-below-4g at the region's end, nothing is lost.
    let filtered = filter_e820(&e820(&[(0, 208 * MIB, 1), (1 << 32, 304 * MIB, 1)]), &[SVSM]);
    assert_eq!(
        filtered,
        e820(&[(0, 128 * MIB, 1), (128 * MIB, 80 * MIB, 2), (1 << 32, 304 * MIB, 1)])
    );
    // Hostile: an entry that wraps keeps its (saturated) end; RAM that
    // starts inside the region.
    let filtered = filter_e820(&e820(&[(u64::MAX - 10, 100, 1)]), &[SVSM]);
    assert_eq!(filtered, e820(&[(u64::MAX - 10, 10, 1)]));
    let filtered = filter_e820(&e820(&[(150 * MIB, 100 * MIB, 1)]), &[SVSM]);
    assert_eq!(filtered, e820(&[(150 * MIB, 58 * MIB, 2), (208 * MIB, 42 * MIB, 2)]));
}

#[test]
fn the_guest_reads_the_filtered_directory_and_map_and_the_rest_unchanged() {
    let s = setup();
    let mut device = FakeDevice::new(&s.ram, &qemu_files());
    let checked = s.checked();
    let memory = s.vmpl(&checked);
    let mut filter = FwCfgFilter::new(&mut device, &[SVSM]).unwrap();
    filter.port_out(SELECTOR_PORT, 2, u32::from(FILE_DIR_KEY), &mut device, &memory);
    let dir = port_read(&mut filter, &mut device, 4 + 3 * 64);
    let entries: Vec<_> =
        file_entries(&dir).map(|(_, size, key, name)| (size, key, name.to_vec())).collect();
    assert_eq!(entries[1], (4 * 20, 0x21, b"etc/e820".to_vec()), "four entries now");
    assert_eq!(entries[2], (5, 0x22, b"opt/svsm/test-guest-mode".to_vec()));
    filter.port_out(SELECTOR_PORT, 2, 0x21, &mut device, &memory);
    let map = port_read(&mut filter, &mut device, 4 * 20 + 2);
    assert_eq!(
        &map[..80],
        &e820(&[
            (0, 128 * MIB, 1),
            (128 * MIB, 80 * MIB, 2),
            (208 * MIB, 304 * MIB, 2),
            (0xFEFF_C000, 0x4000, 2)
        ])[..]
    );
    assert_eq!(&map[80..], &[0, 0], "past the end reads zero");
    filter.port_out(SELECTOR_PORT, 2, 0x22, &mut device, &memory);
    assert_eq!(port_read(&mut filter, &mut device, 5), b"calls");
    assert_eq!(filter.port_in(0x514, 4, &mut device), 0xAA, "other ports pass through");
}

fn descriptor(ram: &FakeGuestRam, gpa: u64, control: u32, length: u32, address: u64) {
    let mut raw = [0u8; 16];
    raw[0..4].copy_from_slice(&control.to_be_bytes());
    raw[4..8].copy_from_slice(&length.to_be_bytes());
    raw[8..16].copy_from_slice(&address.to_be_bytes());
    ram.write(gpa, &raw).unwrap();
}

fn kick(filter: &mut FwCfgFilter, device: &mut FakeDevice, memory: &VmplMemory, gpa: u64) {
    // What OVMF writes: each half byte-swapped, high then low.
    filter.port_out(DMA_HIGH_PORT, 4, ((gpa >> 32) as u32).to_be(), device, memory);
    filter.port_out(DMA_LOW_PORT, 4, (gpa as u32).to_be(), device, memory);
}

fn control(ram: &FakeGuestRam, gpa: u64) -> u32 {
    let mut raw = [0u8; 4];
    ram.read(gpa, &mut raw).unwrap();
    u32::from_be_bytes(raw)
}

#[test]
fn dma_serves_virtual_items_and_forwards_the_rest_checked() {
    let s = setup();
    let mut device = FakeDevice::new(&s.ram, &qemu_files());
    let checked = s.checked();
    let memory = s.vmpl(&checked);
    let mut filter = FwCfgFilter::new(&mut device, &[SVSM]).unwrap();
    let desc = 0x1000;
    // Select etc/e820 and read it by DMA.
    descriptor(&s.ram, desc, (0x21 << 16) | dma::SELECT | dma::READ, 80, 0x2000);
    kick(&mut filter, &mut device, &memory, desc);
    assert_eq!(control(&s.ram, desc), 0);
    let mut map = [0u8; 80];
    s.ram.read(0x2000, &mut map).unwrap();
    assert_eq!(&map[20..40], &e820(&[(128 * MIB, 80 * MIB, 2)])[..]);
    assert!(device.dma_calls.is_empty(), "served without the device");
    // Writing a virtual item fails.
    descriptor(&s.ram, desc, dma::WRITE, 4, 0x2000);
    kick(&mut filter, &mut device, &memory, desc);
    assert_eq!(control(&s.ram, desc), dma::ERROR);
    // Another file: forwarded.
    descriptor(&s.ram, desc, (0x22 << 16) | dma::SELECT | dma::READ, 5, 0x3000);
    kick(&mut filter, &mut device, &memory, desc);
    assert_eq!(control(&s.ram, desc), 0);
    let mut mode = [0u8; 5];
    s.ram.read(0x3000, &mut mode).unwrap();
    assert_eq!(&mode, b"calls");
    assert_eq!(device.dma_calls, vec![((0x22 << 16) | dma::SELECT | dma::READ, 5, 0x3000)]);
    // Into SVSM memory, or running into it, or wrapping: refused, the
    // device never sees it.
    for (address, length) in [(SVSM.base, 4), (SVSM.base - 2, 4), (u64::MAX - 1, 4)] {
        descriptor(&s.ram, desc, (0x20 << 16) | dma::SELECT | dma::READ, length, address);
        kick(&mut filter, &mut device, &memory, desc);
        assert_eq!(control(&s.ram, desc), dma::ERROR, "{address:#x}");
    }
    assert_eq!(device.dma_calls.len(), 1);
    // A select-only descriptor needs no buffer.
    descriptor(&s.ram, desc, (0x20 << 16) | dma::SELECT, 0, SVSM.base);
    kick(&mut filter, &mut device, &memory, desc);
    assert_eq!(control(&s.ram, desc), 0);
    // A descriptor in SVSM memory is ignored.
    kick(&mut filter, &mut device, &memory, SVSM.base);
    assert_eq!(device.dma_calls.len(), 2);
}

#[test]
fn a_directory_without_e820_is_refused() {
    let s = setup();
    let mut device = FakeDevice::new(&s.ram, &[("bootorder", vec![1])]);
    assert_eq!(FwCfgFilter::new(&mut device, &[SVSM]).err(), Some(FwCfgError::NoE820));
}

#[test]
fn added_and_extended_files_appear_in_the_directory() {
    let s = setup();
    let mut files = qemu_files();
    files.push(("etc/table-loader", vec![1; 128]));
    let mut device = FakeDevice::new(&s.ram, &files);
    let checked = s.checked();
    let memory = s.vmpl(&checked);
    let mut filter = FwCfgFilter::new(&mut device, &[SVSM]).unwrap();
    filter.add_file(b"etc/svsm/tpm-acpi", vec![7; 10]).unwrap();
    filter.append_file(b"etc/table-loader", &[2; 128]).unwrap();
    assert_eq!(filter.add_file(b"etc/svsm/tpm-acpi", vec![]), Err(FwCfgError::Malformed));
    assert_eq!(filter.append_file(b"etc/nothing", &[]), Err(FwCfgError::NoFile));
    filter.port_out(SELECTOR_PORT, 2, u32::from(FILE_DIR_KEY), &mut device, &memory);
    let dir = port_read(&mut filter, &mut device, 4 + 5 * 64);
    let entries: Vec<_> =
        file_entries(&dir).map(|(_, size, key, name)| (size, key, name.to_vec())).collect();
    assert_eq!(u32::from_be_bytes(dir[..4].try_into().unwrap()), 5);
    assert_eq!(entries[3], (256, 0x23, b"etc/table-loader".to_vec()));
    assert_eq!(entries[4], (10, 0x24, b"etc/svsm/tpm-acpi".to_vec()));
    filter.port_out(SELECTOR_PORT, 2, 0x23, &mut device, &memory);
    let loader = port_read(&mut filter, &mut device, 256);
    assert_eq!((loader[0], loader[127], loader[128], loader[255]), (1, 1, 2, 2));
    filter.port_out(SELECTOR_PORT, 2, 0x24, &mut device, &memory);
    assert_eq!(port_read(&mut filter, &mut device, 10), vec![7; 10]);
}

/// A filter over a device whose `etc/table-loader` (key 0x23) holds 128
/// bytes of 1 and is extended by 128 bytes of 2; the device's file then
/// changes to 128 bytes of 3, as QEMU's does when its ACPI tables are built.
fn extended_loader(s: &Setup) -> (FakeDevice<'_>, FwCfgFilter) {
    let mut files = qemu_files();
    files.push(("etc/table-loader", vec![1; 128]));
    let mut device = FakeDevice::new(&s.ram, &files);
    let mut filter = FwCfgFilter::new(&mut device, &[SVSM]).unwrap();
    filter.append_file(b"etc/table-loader", &[2; 128]).unwrap();
    device.items.insert(0x23, vec![3; 128]);
    (device, filter)
}

/// QEMU builds its ACPI tables when `etc/table-loader` is first selected,
/// from the chipset as the firmware left it: the filter must read the
/// device's bytes then, not when the file was extended.
#[test]
fn an_extended_file_is_read_from_the_device_when_the_guest_selects_it() {
    let s = setup();
    let (mut device, mut filter) = extended_loader(&s);
    let checked = s.checked();
    let memory = s.vmpl(&checked);
    filter.port_out(SELECTOR_PORT, 2, 0x23, &mut device, &memory);
    let loader = port_read(&mut filter, &mut device, 256);
    assert_eq!((loader[0], loader[127], loader[128], loader[255]), (3, 3, 2, 2));
    // Later changes are not seen: the guest's copy was made once.
    device.items.insert(0x23, vec![4; 128]);
    filter.port_out(SELECTOR_PORT, 2, 0x23, &mut device, &memory);
    assert_eq!(port_read(&mut filter, &mut device, 1), vec![3]);
}

#[test]
fn an_extended_file_selected_by_dma_is_read_from_the_device_then() {
    let s = setup();
    let (mut device, mut filter) = extended_loader(&s);
    let checked = s.checked();
    let memory = s.vmpl(&checked);
    let desc = 0x1000;
    descriptor(&s.ram, desc, (0x23 << 16) | dma::SELECT | dma::READ, 256, 0x2000);
    kick(&mut filter, &mut device, &memory, desc);
    assert_eq!(control(&s.ram, desc), 0);
    let mut loader = [0u8; 256];
    s.ram.read(0x2000, &mut loader).unwrap();
    assert_eq!((loader[0], loader[127], loader[128], loader[255]), (3, 3, 2, 2));
    assert!(device.dma_calls.is_empty(), "the guest's copy is served by the filter");
}

/// Reads the whole of the virtual item `key` by DMA into a buffer of
/// `length` bytes first filled with 0xEE; returns the control word left and
/// the buffer.
fn dma_read(
    s: &Setup,
    filter: &mut FwCfgFilter,
    device: &mut FakeDevice,
    memory: &VmplMemory,
    control_word: u32,
    length: u32,
) -> (u32, Vec<u8>) {
    let (desc, buffer) = (0x1000, 0x8000);
    s.ram.fill(buffer, u64::from(length), 0xEE);
    descriptor(&s.ram, desc, control_word, length, buffer);
    kick(filter, device, memory, desc);
    let mut bytes = vec![0u8; length as usize];
    s.ram.read(buffer, &mut bytes).unwrap();
    (control(&s.ram, desc), bytes)
}

/// The filtered items (the directory, `etc/e820`, an extended
/// `etc/table-loader`): key and guest-visible size.
fn virtual_items(s: &Setup) -> (FakeDevice<'_>, FwCfgFilter, Vec<(u16, usize)>) {
    let (device, filter) = extended_loader(s);
    let dir_len = 4 + 4 * 64;
    (device, filter, vec![(FILE_DIR_KEY, dir_len), (0x21, 4 * 20), (0x23, 256)])
}

/// The audit's panic: byte reads past the end of a filtered item, then a
/// DMA read. QEMU keeps the offset at the end: port reads give 0 and the
/// DMA read zero-fills its buffer.
#[test]
fn byte_reads_past_the_end_then_a_dma_read_give_zeros() {
    let s = setup();
    let (mut device, mut filter, items) = virtual_items(&s);
    let checked = s.checked();
    let memory = s.vmpl(&checked);
    for (key, len) in items {
        filter.port_out(SELECTOR_PORT, 2, u32::from(key), &mut device, &memory);
        let bytes = port_read(&mut filter, &mut device, len + 10);
        assert!(bytes[len..].iter().all(|b| *b == 0), "{key:#x}: past the end reads 0");
        let (status, buffer) = dma_read(&s, &mut filter, &mut device, &memory, dma::READ, 16);
        assert_eq!((status, buffer), (0, vec![0; 16]), "{key:#x}");
        // Still at the end: a skip and a read change nothing.
        let (status, _) = dma_read(&s, &mut filter, &mut device, &memory, dma::SKIP, 100);
        assert_eq!(status, 0);
        assert_eq!(filter.port_in(DATA_PORT, 1, &mut device), 0);
    }
    assert!(device.dma_calls.is_empty());
}

/// The other way there: a DMA skip past the end, then a read.
#[test]
fn a_dma_skip_past_the_end_then_a_read_gives_zeros() {
    let s = setup();
    let (mut device, mut filter, items) = virtual_items(&s);
    let checked = s.checked();
    let memory = s.vmpl(&checked);
    for (key, len) in items {
        let select = (u32::from(key) << 16) | dma::SELECT;
        let skip = u32::MAX;
        s.ram.fill(0x1000, 16, 0);
        descriptor(&s.ram, 0x1000, select | dma::SKIP, skip, 0);
        kick(&mut filter, &mut device, &memory, 0x1000);
        assert_eq!(control(&s.ram, 0x1000), 0, "{key:#x}: a skip needs no buffer");
        let (status, buffer) = dma_read(&s, &mut filter, &mut device, &memory, dma::READ, 8);
        assert_eq!((status, buffer), (0, vec![0; 8]), "{key:#x}");
        // A skip to just before the end leaves one byte, then zeros.
        descriptor(&s.ram, 0x1000, select | dma::SKIP, len as u32 - 1, 0);
        kick(&mut filter, &mut device, &memory, 0x1000);
        let (status, buffer) = dma_read(&s, &mut filter, &mut device, &memory, dma::READ, 4);
        assert_eq!(status, 0);
        assert_eq!(buffer[1..], [0, 0, 0], "{key:#x}");
        assert_eq!(port_read(&mut filter, &mut device, 2), [0, 0]);
    }
}

#[test]
fn a_dma_read_longer_than_the_item_is_zero_filled_and_a_bad_buffer_refused() {
    let s = setup();
    let (mut device, mut filter) = extended_loader(&s);
    let checked = s.checked();
    let memory = s.vmpl(&checked);
    let select = (0x21 << 16) | dma::SELECT;
    let (status, buffer) = dma_read(&s, &mut filter, &mut device, &memory, select | dma::READ, 100);
    assert_eq!(status, 0);
    assert_eq!(&buffer[20..40], &e820(&[(128 * MIB, 80 * MIB, 2)])[..]);
    assert_eq!(buffer[80..], [0; 20], "zero-filled past the end, nothing left untouched");
    // READ wins over WRITE, as in QEMU.
    let both = select | dma::READ | dma::WRITE;
    let (status, buffer) = dma_read(&s, &mut filter, &mut device, &memory, both, 20);
    assert_eq!((status, &buffer[..8]), (0, &0u64.to_le_bytes()[..]));
    // A buffer running into the SVSM, wrapping or as long as a u32 allows:
    // refused whole, the offset unchanged, nothing allocated.
    for (address, length) in [(SVSM.base - 8, 16), (u64::MAX - 3, 8), (0x8000, u32::MAX)] {
        descriptor(&s.ram, 0x1000, select | dma::READ, length, address);
        kick(&mut filter, &mut device, &memory, 0x1000);
        assert_eq!(control(&s.ram, 0x1000), dma::ERROR, "{address:#x}+{length:#x}");
        let mut at_svsm = [0u8; 8];
        s.ram.read(SVSM.base - 8, &mut at_svsm).unwrap();
        assert_eq!(at_svsm, [0; 8], "nothing written before the refusal");
    }
    let (status, buffer) = dma_read(&s, &mut filter, &mut device, &memory, dma::READ, 8);
    assert_eq!((status, buffer), (0, 0u64.to_le_bytes().to_vec()), "still at the start");
    // A write of nothing is no error; of something is.
    let (status, _) = dma_read(&s, &mut filter, &mut device, &memory, dma::WRITE, 0);
    assert_eq!(status, 0);
    let (status, _) = dma_read(&s, &mut filter, &mut device, &memory, dma::WRITE, 1);
    assert_eq!(status, dma::ERROR);
    assert!(device.dma_calls.is_empty());
}

/// QEMU ignores the write-channel bit of a selector: 0x4019 is the file
/// directory, which must be the filtered one (the arch bit names another
/// table and goes to the device).
#[test]
fn selector_aliases_reach_the_filtered_items() {
    let s = setup();
    let mut device = FakeDevice::new(&s.ram, &qemu_files());
    let checked = s.checked();
    let memory = s.vmpl(&checked);
    let mut filter = FwCfgFilter::new(&mut device, &[SVSM]).unwrap();
    filter.port_out(SELECTOR_PORT, 2, 0x4000 | 0x21, &mut device, &memory);
    let map = port_read(&mut filter, &mut device, 40);
    assert_eq!(&map[20..40], &e820(&[(128 * MIB, 80 * MIB, 2)])[..]);
    let select = ((0x4000 | u32::from(FILE_DIR_KEY)) << 16) | dma::SELECT | dma::READ;
    let (status, dir) = dma_read(&s, &mut filter, &mut device, &memory, select, 4 + 2 * 64);
    assert_eq!(status, 0);
    let sizes: Vec<_> = file_entries(&dir).map(|(_, size, _, _)| size).collect();
    assert_eq!(sizes[1], 4 * 20, "the filtered directory");
    assert!(device.dma_calls.is_empty());
    // A byte read of the selector port reads data (QEMU's combined ports).
    filter.port_out(SELECTOR_PORT, 2, 0x21, &mut device, &memory);
    let first = filter.port_in(SELECTOR_PORT, 1, &mut device);
    assert_eq!((first, filter.port_in(DATA_PORT, 1, &mut device)), (0, 0));
    filter.port_out(SELECTOR_PORT, 2, 0x8019, &mut device, &memory);
    assert_eq!(device.selected, 0x8019, "the arch table is the device's");
}

/// The device forgets the high half of the descriptor address after each
/// transfer; a later low-half write alone names a descriptor below 4 GiB.
#[test]
fn the_dma_address_high_half_is_used_once() {
    let s = setup();
    let mut device = FakeDevice::new(&s.ram, &qemu_files());
    let checked = s.checked();
    let memory = s.vmpl(&checked);
    let mut filter = FwCfgFilter::new(&mut device, &[SVSM]).unwrap();
    filter.port_out(DMA_HIGH_PORT, 4, 1u32.to_be(), &mut device, &memory);
    filter.port_out(DMA_LOW_PORT, 4, 0x1000u32.to_be(), &mut device, &memory);
    descriptor(&s.ram, 0x1000, (0x22 << 16) | dma::SELECT | dma::READ, 5, 0x3000);
    filter.port_out(DMA_LOW_PORT, 4, 0x1000u32.to_be(), &mut device, &memory);
    assert_eq!(control(&s.ram, 0x1000), 0);
    assert_eq!(device.dma_calls.len(), 1, "the second kick used 0x1000, not 0x1_0000_1000");
}

/// Sets the guest VMPL's permissions on the page at `gpa`, as the core
/// protocol's RMPADJUST does (CREATE_VCPU and DEPOSIT_MEM revoke them all
/// before the SVSM reads the page).
fn set_guest_permissions(rmp: &mut Rmp, gpa: u64, permissions: VmplPermissions) {
    let attributes = RmpAdjustAttributes { target_vmpl: VMPL, permissions, vmsa: false };
    rmp.rmpadjust(gpa, RmpPageSize::Size4K, attributes).unwrap();
}

/// What is at `[gpa, gpa + len)`.
fn bytes_at(ram: &FakeGuestRam, gpa: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    ram.read(gpa, &mut bytes).unwrap();
    bytes
}

/// A device DMA into a page the RMP denies the guest (one CREATE_VCPU has
/// revoked, not yet in the SVSM's owned pages) is refused with the error
/// bit: the device never sees it, the buffer keeps its bytes, and the
/// selection is made as QEMU makes it for a failed transfer. A buffer only
/// partly revoked is refused whole.
#[test]
fn a_dma_into_a_page_the_rmp_denies_the_guest_is_refused_and_writes_nothing() {
    let mut s = setup();
    let mut device = FakeDevice::new(&s.ram, &qemu_files());
    let mut filter = FwCfgFilter::new(&mut device, &[SVSM]).unwrap();
    let (desc, vmsa) = (0x1000, 0x5000);
    set_guest_permissions(&mut s.rmp, vmsa, VmplPermissions::NONE);
    assert!(s.owned.owner(vmsa).is_none(), "revoked, not yet held");
    let read_mode = (0x22 << 16) | dma::SELECT | dma::READ;
    let buffers = [(vmsa, 5), (vmsa + 0xFFE, 2), (vmsa - 2, 4), (0x3000, 0x3000), (vmsa, 0)];
    for (address, length) in buffers {
        s.ram.fill(0x3000, 0x4000, 0xEE);
        descriptor(&s.ram, desc, read_mode, length, address);
        device.select(0);
        let checked = s.checked();
        kick(&mut filter, &mut device, &s.vmpl(&checked), desc);
        assert_eq!(control(&s.ram, desc), dma::ERROR, "{address:#x}+{length}");
        assert_eq!(bytes_at(&s.ram, 0x3000, 0x4000), vec![0xEE; 0x4000], "{address:#x}");
        assert_eq!(device.selected, 0x22, "the selection stands");
    }
    // A WRITE from it too (the device would read the guest's buffer).
    let checked = s.checked();
    let memory = s.vmpl(&checked);
    descriptor(&s.ram, desc, dma::WRITE, 4, vmsa);
    kick(&mut filter, &mut device, &memory, desc);
    assert_eq!(control(&s.ram, desc), dma::ERROR);
    assert!(device.dma_calls.is_empty(), "the device saw none of them");
    // The filter's own items are refused the same way.
    s.ram.fill(vmsa, 0x1000, 0xEE);
    descriptor(&s.ram, desc, (0x21 << 16) | dma::SELECT | dma::READ, 80, vmsa);
    kick(&mut filter, &mut device, &memory, desc);
    assert_eq!(control(&s.ram, desc), dma::ERROR);
    assert_eq!(bytes_at(&s.ram, vmsa, 0x1000), vec![0xEE; 0x1000]);
    // A descriptor on the page is neither read nor answered.
    descriptor(&s.ram, vmsa, read_mode, 5, 0x3000);
    kick(&mut filter, &mut device, &memory, vmsa);
    assert_eq!(control(&s.ram, vmsa), read_mode, "no status written");
    assert!(device.dma_calls.is_empty());
    // Next to it, the same transfers go through.
    descriptor(&s.ram, desc, read_mode, 5, vmsa + 0x1000);
    kick(&mut filter, &mut device, &memory, desc);
    assert_eq!(control(&s.ram, desc), 0);
    assert_eq!(bytes_at(&s.ram, vmsa + 0x1000, 5), b"calls");
    assert_eq!(device.dma_calls, vec![(read_mode, 5, vmsa + 0x1000)]);
}

/// The permission checked follows the transfer's direction: a READ (the
/// device writes guest memory) needs WRITE, a WRITE (the device reads it)
/// needs READ; once given back, the page takes DMA again.
#[test]
fn dma_needs_the_permission_of_its_direction() {
    let mut s = setup();
    let mut device = FakeDevice::new(&s.ram, &qemu_files());
    let mut filter = FwCfgFilter::new(&mut device, &[SVSM]).unwrap();
    let (desc, page) = (0x1000, 0x7000);
    let read_mode = (0x22 << 16) | dma::SELECT | dma::READ;
    let write_mode = (0x22 << 16) | dma::SELECT | dma::WRITE;
    let mut run = |s: &Setup, device: &mut FakeDevice, control_word: u32| {
        descriptor(&s.ram, desc, control_word, 5, page);
        let checked = s.checked();
        kick(&mut filter, device, &s.vmpl(&checked), desc);
        control(&s.ram, desc)
    };
    set_guest_permissions(&mut s.rmp, page, VmplPermissions::READ);
    assert_eq!(run(&s, &mut device, read_mode), dma::ERROR, "read-only: no READ into it");
    assert_eq!(run(&s, &mut device, write_mode), 0, "the device may read it");
    set_guest_permissions(&mut s.rmp, page, VmplPermissions::WRITE);
    assert_eq!(run(&s, &mut device, write_mode), dma::ERROR, "write-only: no WRITE from it");
    assert_eq!(run(&s, &mut device, read_mode), 0);
    set_guest_permissions(&mut s.rmp, page, VmplPermissions::NONE);
    assert_eq!(run(&s, &mut device, read_mode), dma::ERROR);
    set_guest_permissions(&mut s.rmp, page, VmplPermissions::ALL);
    assert_eq!(run(&s, &mut device, read_mode), 0, "given back");
    assert_eq!(bytes_at(&s.ram, page, 5), b"calls");
    assert_eq!(
        device.dma_calls,
        vec![(write_mode, 5, page), (read_mode, 5, page), (read_mode, 5, page)]
    );
}
