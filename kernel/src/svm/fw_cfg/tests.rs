//! The fw_cfg filter against a fake device and fake guest RAM.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::*;
use crate::guest_mem::{CheckedGuestMemory, GuestLayout, OwnedPages, RawGuestMemory};
use crate::host_doubles::FakeGuestRam;

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

struct Setup {
    ram: FakeGuestRam,
    layout: GuestLayout,
    owned: OwnedPages,
}

fn setup() -> Setup {
    Setup {
        ram: FakeGuestRam::new(0, 256 * MIB),
        layout: GuestLayout::new(&[MemoryRange { base: 0, size: 256 * MIB }], &[SVSM]),
        owned: OwnedPages::new(),
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
    let memory = CheckedGuestMemory::new(&s.layout, &s.owned, &s.ram);
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

fn kick(filter: &mut FwCfgFilter, device: &mut FakeDevice, memory: &dyn GuestMemory, gpa: u64) {
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
    let memory = CheckedGuestMemory::new(&s.layout, &s.owned, &s.ram);
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
    let memory = CheckedGuestMemory::new(&s.layout, &s.owned, &s.ram);
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
fn extended_loader(s: &Setup) -> (FakeDevice<'_>, CheckedGuestMemory<'_>, FwCfgFilter) {
    let mut files = qemu_files();
    files.push(("etc/table-loader", vec![1; 128]));
    let mut device = FakeDevice::new(&s.ram, &files);
    let memory = CheckedGuestMemory::new(&s.layout, &s.owned, &s.ram);
    let mut filter = FwCfgFilter::new(&mut device, &[SVSM]).unwrap();
    filter.append_file(b"etc/table-loader", &[2; 128]).unwrap();
    device.items.insert(0x23, vec![3; 128]);
    (device, memory, filter)
}

/// QEMU builds its ACPI tables when `etc/table-loader` is first selected,
/// from the chipset as the firmware left it: the filter must read the
/// device's bytes then, not when the file was extended.
#[test]
fn an_extended_file_is_read_from_the_device_when_the_guest_selects_it() {
    let s = setup();
    let (mut device, memory, mut filter) = extended_loader(&s);
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
    let (mut device, memory, mut filter) = extended_loader(&s);
    let desc = 0x1000;
    descriptor(&s.ram, desc, (0x23 << 16) | dma::SELECT | dma::READ, 256, 0x2000);
    kick(&mut filter, &mut device, &memory, desc);
    assert_eq!(control(&s.ram, desc), 0);
    let mut loader = [0u8; 256];
    s.ram.read(0x2000, &mut loader).unwrap();
    assert_eq!((loader[0], loader[127], loader[128], loader[255]), (3, 3, 2, 2));
    assert!(device.dma_calls.is_empty(), "the guest's copy is served by the filter");
}
