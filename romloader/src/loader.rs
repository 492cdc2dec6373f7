//! Carrying out the load table: what an IGVM loader does for the native
//! platform (copy pages, zero pages, fill the parameter areas from the
//! VMM's fw_cfg, check required memory), with every write checked against
//! the RAM the VMM reports and the loader's own memory.
//!
//! Guest memory sits behind [`GuestMemory`] so the whole load runs on the
//! host in tests.

use abi::boot::{IGVM_MEMORY_TYPE_MEMORY, IgvmMemoryMapEntry};
use abi::layout::PAGE_SIZE;
use zerocopy::IntoBytes;

use crate::fw_cfg::{E820_RAM, E820Entry, FwCfg, FwCfgError, FwCfgPorts};
use crate::table::{
    IDENTITY_MAP_LIMIT, LOADER_RAM_BASE, LOADER_RAM_END, MEMORY_MAP_ENTRY_SIZE, RomImage,
    StartContext, Step, TableError,
};

/// Most e820 records the loader reads.
pub const MAX_E820_ENTRIES: usize = 64;

/// The IGVM environment-info word of this loader: bit 0 `memory_is_shared`
/// clear, because native memory needs no acceptance.
pub const ENVIRONMENT_INFO: u32 = 0;

/// Writes to guest-physical memory.
pub trait GuestMemory {
    /// Copies `data` to `gpa`.
    fn write(&mut self, gpa: u64, data: &[u8]);
    /// Zeroes `size` bytes at `gpa`.
    fn zero(&mut self, gpa: u64, size: u64);
}

/// The RAM ranges of the e820 map, sorted and merged.
#[derive(Clone, Copy)]
pub struct RamMap {
    ranges: [(u64, u64); MAX_E820_ENTRIES],
    count: usize,
}

impl RamMap {
    /// Keeps the RAM records of `e820`, sorted by address, merging
    /// overlapping and adjacent ones.
    pub fn from_e820(e820: &[E820Entry]) -> RamMap {
        let mut map = RamMap { ranges: [(0, 0); MAX_E820_ENTRIES], count: 0 };
        for entry in e820.iter().filter(|e| e.kind == E820_RAM && e.length > 0) {
            let end = entry.address.saturating_add(entry.length);
            map.insert(entry.address, end);
        }
        map
    }

    fn insert(&mut self, mut start: u64, mut end: u64) {
        // Absorb every range that touches [start, end), then insert sorted.
        let mut i = 0;
        while i < self.count {
            let (s, e) = self.ranges[i];
            if s <= end && start <= e {
                start = start.min(s);
                end = end.max(e);
                self.ranges.copy_within(i + 1..self.count, i);
                self.count -= 1;
            } else {
                i += 1;
            }
        }
        let at =
            self.ranges[..self.count].iter().position(|&(s, _)| s > start).unwrap_or(self.count);
        if self.count < MAX_E820_ENTRIES {
            self.ranges.copy_within(at..self.count, at + 1);
            self.ranges[at] = (start, end);
            self.count += 1;
        }
    }

    /// The merged ranges as (start, end).
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges[..self.count]
    }

    /// Whether `[gpa, gpa + size)` lies inside one RAM range.
    pub fn contains(&self, gpa: u64, size: u64) -> bool {
        let Some(end) = gpa.checked_add(size) else { return false };
        self.ranges().iter().any(|&(s, e)| gpa >= s && end <= e)
    }

    /// Total RAM in bytes.
    pub fn total(&self) -> u64 {
        self.ranges().iter().map(|&(s, e)| e - s).sum()
    }
}

/// Why loading failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The ROM or its table is malformed.
    Table(TableError),
    /// fw_cfg could not be read.
    FwCfg(FwCfgError),
    /// A step writes or requires memory that is not RAM.
    NotRam { index: usize, gpa: u64, size: u64 },
    /// A step would overwrite the loader's own memory or lies above the
    /// loader's identity map.
    Forbidden { index: usize, gpa: u64, size: u64 },
    /// The memory map does not fit its parameter area.
    MemoryMapTooSmall { entries: usize, capacity: u64 },
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LoadError::Table(e) => write!(f, "bad ROM: {e}"),
            LoadError::FwCfg(e) => write!(f, "{e}"),
            LoadError::NotRam { index, gpa, size } => write!(
                f,
                "step {index}: [{gpa:#x}, {:#x}) is not RAM (give the VM more memory with -m)",
                gpa + size
            ),
            LoadError::Forbidden { index, gpa, size } => write!(
                f,
                "step {index}: [{gpa:#x}, {:#x}) overlaps the loader or lies above 4 GiB",
                gpa + size
            ),
            LoadError::MemoryMapTooSmall { entries, capacity } => {
                write!(f, "{entries} memory-map entries do not fit a {capacity}-byte area")
            }
        }
    }
}

/// What was loaded, for the loader's one-line report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadReport {
    /// Table steps carried out.
    pub steps: usize,
    /// Bytes copied from the ROM.
    pub bytes_copied: u64,
    /// vCPU count written to the VP-count parameters.
    pub cpu_count: u32,
    /// RAM reported by the VMM.
    pub ram_bytes: u64,
    /// The context to start.
    pub start: StartContext,
}

/// Parses the ROM, reads fw_cfg and carries out every step in order.
pub fn load<P: FwCfgPorts, M: GuestMemory>(
    rom: &[u8],
    ports: P,
    memory: &mut M,
) -> Result<LoadReport, LoadError> {
    let image = RomImage::parse(rom).map_err(LoadError::Table)?;
    let mut fw_cfg = FwCfg::new(ports).map_err(LoadError::FwCfg)?;
    let cpu_count = u32::from(fw_cfg.cpu_count()).max(1);
    let mut e820 = [E820Entry::default(); MAX_E820_ENTRIES];
    let count = fw_cfg.read_e820(&mut e820).map_err(LoadError::FwCfg)?;
    let ram = RamMap::from_e820(&e820[..count]);

    let mut bytes_copied = 0;
    for index in 0..image.step_count() {
        let step = image.step(index).map_err(LoadError::Table)?;
        check_target(index, &step, &ram)?;
        match step {
            Step::Copy { gpa, size, source } => {
                memory.write(gpa, image.copy_source(source, size));
                bytes_copied += size;
            }
            Step::Zero { gpa, size } => memory.zero(gpa, size),
            Step::VpCount { gpa } => memory.write(gpa, &cpu_count.to_le_bytes()),
            Step::EnvironmentInfo { gpa } => memory.write(gpa, &ENVIRONMENT_INFO.to_le_bytes()),
            Step::MemoryMap { gpa, size } => write_memory_map(gpa, size, &ram, memory)?,
            Step::RequiredMemory { .. } => {}
        }
    }
    Ok(LoadReport {
        steps: image.step_count(),
        bytes_copied,
        cpu_count,
        ram_bytes: ram.total(),
        start: *image.start(),
    })
}

fn check_target(index: usize, step: &Step, ram: &RamMap) -> Result<(), LoadError> {
    let (gpa, size) = match *step {
        Step::RequiredMemory { gpa, size } => (gpa, size),
        _ => step.written_range().expect("every other step writes"),
    };
    let end = gpa.checked_add(size).ok_or(LoadError::Forbidden { index, gpa, size })?;
    if end > IDENTITY_MAP_LIMIT || (gpa < LOADER_RAM_END && LOADER_RAM_BASE < end) {
        return Err(LoadError::Forbidden { index, gpa, size });
    }
    if !ram.contains(gpa, size) {
        return Err(LoadError::NotRam { index, gpa, size });
    }
    Ok(())
}

/// Writes the RAM ranges as IGVM memory-map entries (whole pages, sorted),
/// the rest of the area zero.
fn write_memory_map<M: GuestMemory>(
    gpa: u64,
    size: u64,
    ram: &RamMap,
    memory: &mut M,
) -> Result<(), LoadError> {
    let capacity = size / MEMORY_MAP_ENTRY_SIZE;
    let pages = ram.ranges().iter().filter_map(|&(start, end)| {
        let first = start.div_ceil(PAGE_SIZE);
        let last = end / PAGE_SIZE;
        (last > first).then_some((first, last - first))
    });
    let entries = pages.clone().count();
    if entries as u64 > capacity {
        return Err(LoadError::MemoryMapTooSmall { entries, capacity });
    }
    memory.zero(gpa, size);
    for (i, (first, count)) in pages.enumerate() {
        let entry = IgvmMemoryMapEntry {
            starting_gpa_page_number: first,
            number_of_pages: count,
            entry_type: IGVM_MEMORY_TYPE_MEMORY,
            flags: 0,
            reserved: 0,
        };
        memory.write(gpa + i as u64 * MEMORY_MAP_ENTRY_SIZE, entry.as_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fw_cfg::fake::FakeFwCfg;
    use crate::table::tests::stage2_context;
    use crate::table::{LOADER_SIZE, RomBuilder};
    use abi::boot::{MemoryRange, parse_memory_map};

    /// Sparse guest memory: the bytes written, by address.
    #[derive(Default)]
    struct FakeMemory {
        bytes: std::collections::BTreeMap<u64, u8>,
    }

    impl GuestMemory for FakeMemory {
        fn write(&mut self, gpa: u64, data: &[u8]) {
            for (i, &b) in data.iter().enumerate() {
                self.bytes.insert(gpa + i as u64, b);
            }
        }
        fn zero(&mut self, gpa: u64, size: u64) {
            for a in gpa..gpa + size {
                self.bytes.insert(a, 0);
            }
        }
    }

    impl FakeMemory {
        fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
            (0..len as u64).map(|i| self.bytes[&(gpa + i)]).collect()
        }
    }

    fn rom(builder: &RomBuilder) -> Vec<u8> {
        builder.finish(stage2_context(), &vec![0xf4; LOADER_SIZE as usize]).unwrap()
    }

    fn qemu_512m(cpus: u16) -> FakeFwCfg {
        // What QEMU q35 with -m 512M reports: all low RAM, plus a reserved page block.
        let e820 = FakeFwCfg::e820(&[(0, 0x2000_0000, 1), (0xfeff_c000, 0x4000, 2)]);
        FakeFwCfg::new(cpus, &[("etc/e820", e820)])
    }

    #[test]
    fn loads_pages_and_parameters() {
        let mut builder = RomBuilder::new();
        builder.copy(0x10_0000, &[0x5A; 0x1000]);
        builder.step(Step::Zero { gpa: 0x10_3000, size: 0x1000 });
        builder.step(Step::VpCount { gpa: 0x10_3000 });
        builder.step(Step::EnvironmentInfo { gpa: 0x10_3004 });
        builder.step(Step::Zero { gpa: 0x10_4000, size: 0x1000 });
        builder.step(Step::MemoryMap { gpa: 0x10_4000, size: 0x1000 });
        builder.step(Step::RequiredMemory { gpa: 0x800_0000, size: 0x400_0000 });
        let rom = rom(&builder);

        let mut memory = FakeMemory::default();
        let report = load(&rom, qemu_512m(3), &mut memory).unwrap();
        assert_eq!(report.steps, 7);
        assert_eq!(report.cpu_count, 3);
        assert_eq!(report.bytes_copied, 0x1000);
        assert_eq!(report.ram_bytes, 0x2000_0000);
        assert_eq!(report.start, stage2_context());
        assert!(memory.read(0x10_0000, 0x1000).iter().all(|&b| b == 0x5A));
        assert_eq!(memory.read(0x10_3000, 8), [3, 0, 0, 0, 0, 0, 0, 0]);
        // The memory map is what the SVSM's own parser reads back.
        let mut ranges = [MemoryRange::default(); 4];
        let n = parse_memory_map(&memory.read(0x10_4000, 0x1000), &mut ranges).unwrap();
        assert_eq!(&ranges[..n], &[MemoryRange { base: 0, size: 0x2000_0000 }]);
    }

    #[test]
    fn refuses_writes_outside_ram_or_into_the_loader() {
        let cases = [
            (Step::Zero { gpa: 0x2000_0000, size: 0x1000 }, "not RAM"),
            (Step::RequiredMemory { gpa: 0x1ff0_0000, size: 0x20_0000 }, "not RAM"),
            (Step::Zero { gpa: 0x8_f000, size: 0x2000 }, "loader"),
            (Step::Zero { gpa: 0xffff_f000, size: 0x2000 }, "loader"),
        ];
        for (step, what) in cases {
            let mut builder = RomBuilder::new();
            builder.step(step);
            let result = load(&rom(&builder), qemu_512m(1), &mut FakeMemory::default());
            match (what, result) {
                ("not RAM", Err(LoadError::NotRam { index: 0, .. })) => {}
                ("loader", Err(LoadError::Forbidden { index: 0, .. })) => {}
                (_, other) => panic!("{step:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn memory_map_must_fit_its_area() {
        let mut e820 = Vec::new();
        for i in 0..3u64 {
            e820.push((i * 0x10_0000, 0x1000, 1));
        }
        let device = FakeFwCfg::new(1, &[("etc/e820", FakeFwCfg::e820(&e820))]);
        let mut builder = RomBuilder::new();
        builder.step(Step::MemoryMap { gpa: 0, size: 48 });
        let result = load(&rom(&builder), device, &mut FakeMemory::default());
        assert_eq!(result, Err(LoadError::MemoryMapTooSmall { entries: 3, capacity: 2 }));
    }

    #[test]
    fn ram_map_sorts_merges_and_rounds() {
        let e820 = [
            E820Entry { address: 0x10_0000, length: 0x10_0000, kind: 1 },
            E820Entry { address: 0, length: 0x9_fc00, kind: 1 },
            E820Entry { address: 0x20_0000, length: 0x1000, kind: 1 },
            E820Entry { address: 0x9_fc00, length: 0x400, kind: 2 },
            E820Entry { address: 0x4000_0000, length: 0, kind: 1 },
        ];
        let map = RamMap::from_e820(&e820);
        assert_eq!(map.ranges(), &[(0, 0x9_fc00), (0x10_0000, 0x20_1000)]);
        assert!(map.contains(0x10_0000, 0x10_1000));
        assert!(!map.contains(0x9_f000, 0x1000));
        assert!(!map.contains(u64::MAX, 2));
        let mut memory = FakeMemory::default();
        write_memory_map(0x1000, 0x1000, &map, &mut memory).unwrap();
        let mut ranges = [MemoryRange::default(); 4];
        let n = parse_memory_map(&memory.read(0x1000, 0x1000), &mut ranges).unwrap();
        // The partial page at 0x9f000 is dropped: the map holds whole pages.
        assert_eq!(
            &ranges[..n],
            &[
                MemoryRange { base: 0, size: 0x9_f000 },
                MemoryRange { base: 0x10_0000, size: 0x10_1000 }
            ]
        );
    }
}
