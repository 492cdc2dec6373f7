//! The load table: what the xtask derives from the IGVM file's native
//! platform and the ROM loader carries out, one step at a time.
//!
//! The `-bios` image QEMU maps so that it ends at 4 GiB is laid out as
//!
//! ```text
//! ROM base = 4 GiB - rom_size
//! | table (LoadEntry × entry_count) | payload (page data) | padding | RomTrailer | loader (64 KiB) |
//!                                                                              ^ 4 GiB - 64 KiB
//! ```
//!
//! The loader finds the trailer just below its own 64 KiB, and from it the
//! table and the payload. Every offset in the table is relative to the ROM
//! base. The format is written once here; the xtask writes it with
//! [`RomBuilder`], the loader reads it with [`RomImage`], and neither trusts
//! the other: the reader checks every bound.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `RomTrailer::magic`.
pub const ROM_MAGIC: [u8; 8] = *b"SVSMROM1";
/// `RomTrailer::version` this code writes and reads.
pub const ROM_VERSION: u32 = 1;
/// Size of the loader's own code at the end of the ROM (reset vector included).
pub const LOADER_SIZE: u64 = 0x1_0000;
/// The first address past the ROM.
pub const ROM_END: u64 = 1 << 32;
/// Largest ROM the loader accepts: QEMU's q35 loads `-bios` images up to
/// 32 MiB, but above 16 MiB the ROM would cover the local APIC and
/// I/O APIC pages below 4 GiB.
pub const MAX_ROM_SIZE: u64 = 0x100_0000;
/// QEMU wants a `-bios` image to be a whole number of 64 KiB blocks.
pub const ROM_ALIGN: u64 = 0x1_0000;
/// Low RAM the loader copies itself into and runs from (code, data, stack,
/// page tables). No load step may write here.
pub const LOADER_RAM_BASE: u64 = 0x1_0000;
/// First address past the loader's RAM.
pub const LOADER_RAM_END: u64 = 0x9_0000;
/// The loader identity-maps the first 4 GiB; nothing above can be loaded.
pub const IDENTITY_MAP_LIMIT: u64 = 1 << 32;

/// One step of the load table, as stored.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct LoadEntry {
    /// What to do ([`EntryKind`]).
    pub kind: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Guest-physical address the step works on.
    pub gpa: u64,
    /// Size in bytes of the range at `gpa`.
    pub size: u64,
    /// For [`EntryKind::Copy`], offset of the data from the ROM base; else 0.
    pub source: u64,
}

/// `LoadEntry::kind` values.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Copy `size` bytes of ROM data at `source` to `gpa`.
    Copy = 1,
    /// Fill `size` bytes at `gpa` with zeros.
    Zero = 2,
    /// Write the vCPU count as a u32 at `gpa` (`size` = 4).
    VpCount = 3,
    /// Write the IGVM environment-info word as a u32 at `gpa` (`size` = 4).
    EnvironmentInfo = 4,
    /// Write the IGVM memory map (RAM ranges) into `size` bytes at `gpa`.
    MemoryMap = 5,
    /// Check that `size` bytes at `gpa` are RAM; nothing is written.
    RequiredMemory = 6,
}

/// A decoded, checked load step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Copy ROM bytes `[source, source + size)` to `gpa`.
    Copy { gpa: u64, size: u64, source: u64 },
    /// Zero `[gpa, gpa + size)`.
    Zero { gpa: u64, size: u64 },
    /// Write the vCPU count (u32) at `gpa`.
    VpCount { gpa: u64 },
    /// Write the environment-info word (u32) at `gpa`.
    EnvironmentInfo { gpa: u64 },
    /// Write the memory map into `[gpa, gpa + size)`.
    MemoryMap { gpa: u64, size: u64 },
    /// Require `[gpa, gpa + size)` to be RAM.
    RequiredMemory { gpa: u64, size: u64 },
}

/// Size of one IGVM memory-map entry.
pub const MEMORY_MAP_ENTRY_SIZE: u64 = 24;

impl Step {
    /// The guest range the step writes, if it writes.
    pub fn written_range(&self) -> Option<(u64, u64)> {
        match *self {
            Step::Copy { gpa, size, .. } | Step::Zero { gpa, size } => Some((gpa, size)),
            Step::VpCount { gpa } | Step::EnvironmentInfo { gpa } => Some((gpa, 4)),
            Step::MemoryMap { gpa, size } => Some((gpa, size)),
            Step::RequiredMemory { .. } => None,
        }
    }

    /// The stored form.
    pub fn encode(&self) -> LoadEntry {
        let (kind, gpa, size, source) = match *self {
            Step::Copy { gpa, size, source } => (EntryKind::Copy, gpa, size, source),
            Step::Zero { gpa, size } => (EntryKind::Zero, gpa, size, 0),
            Step::VpCount { gpa } => (EntryKind::VpCount, gpa, 4, 0),
            Step::EnvironmentInfo { gpa } => (EntryKind::EnvironmentInfo, gpa, 4, 0),
            Step::MemoryMap { gpa, size } => (EntryKind::MemoryMap, gpa, size, 0),
            Step::RequiredMemory { gpa, size } => (EntryKind::RequiredMemory, gpa, size, 0),
        };
        LoadEntry { kind: kind as u32, reserved: 0, gpa, size, source }
    }
}

impl LoadEntry {
    /// Checks and decodes the stored form. Source bounds are checked by
    /// [`RomImage`], which knows the ROM.
    pub fn decode(&self, index: usize) -> Result<Step, TableError> {
        let bad = TableError::BadEntry { index };
        if self.reserved != 0 || self.gpa.checked_add(self.size).is_none() || self.size == 0 {
            return Err(bad);
        }
        let (gpa, size, source) = (self.gpa, self.size, self.source);
        let needs_no_source = |step: Step| if source == 0 { Ok(step) } else { Err(bad) };
        match self.kind {
            k if k == EntryKind::Copy as u32 => Ok(Step::Copy { gpa, size, source }),
            k if k == EntryKind::Zero as u32 => needs_no_source(Step::Zero { gpa, size }),
            k if k == EntryKind::VpCount as u32 && size == 4 => {
                needs_no_source(Step::VpCount { gpa })
            }
            k if k == EntryKind::EnvironmentInfo as u32 && size == 4 => {
                needs_no_source(Step::EnvironmentInfo { gpa })
            }
            k if k == EntryKind::MemoryMap as u32 && size >= MEMORY_MAP_ENTRY_SIZE => {
                needs_no_source(Step::MemoryMap { gpa, size })
            }
            k if k == EntryKind::RequiredMemory as u32 => {
                needs_no_source(Step::RequiredMemory { gpa, size })
            }
            _ => Err(bad),
        }
    }
}

/// The register state the loader starts the image with: the IGVM native
/// VP context, restricted to what the loader can establish (32-bit
/// protected mode, paging off; see [`StartContext::check`]).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct StartContext {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub rsp: u64,
    pub rip: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub gdtr_base: u64,
    pub idtr_base: u64,
    pub gdtr_limit: u16,
    pub idtr_limit: u16,
    pub code_selector: u16,
    pub data_selector: u16,
    /// Descriptor-form attributes (bits 0-7 type/S/DPL/P, 12-15 AVL/L/D/G).
    pub code_attributes: u16,
    /// Descriptor-form attributes of DS, ES, FS, GS and SS.
    pub data_attributes: u16,
    pub reserved: u32,
    pub code_base: u32,
    pub code_limit: u32,
    pub data_base: u32,
    pub data_limit: u32,
}

/// Number of descriptors in the GDT the loader hands over with; context
/// selectors must index into it.
pub const HANDOFF_GDT_ENTRIES: u16 = 8;

const CR0_PE: u64 = 1 << 0;
const CR0_PG: u64 = 1 << 31;
const CR4_PCIDE: u64 = 1 << 17;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_FIXED: u64 = 1 << 1;
const ATTR_ACCESSED: u16 = 1 << 0;
const ATTR_WRITABLE: u16 = 1 << 1;
const ATTR_CODE: u16 = 1 << 3;
const ATTR_S: u16 = 1 << 4;
const ATTR_PRESENT: u16 = 1 << 7;
const ATTR_LONG: u16 = 1 << 13;
const ATTR_DEFAULT_32: u16 = 1 << 14;
const ATTR_GRANULARITY: u16 = 1 << 15;

impl StartContext {
    /// Checks that the loader can establish this context exactly: 32-bit
    /// protected mode with paging off, flat-enough segments it can describe
    /// in a GDT, and register values that fit 32 bits.
    pub fn check(&self) -> Result<(), ContextError> {
        if self.cr0 & CR0_PE == 0 || self.cr0 & CR0_PG != 0 {
            return Err(ContextError::NotProtectedModeWithoutPaging);
        }
        if self.efer & (EFER_LME | EFER_LMA) != 0 || self.cr4 & CR4_PCIDE != 0 {
            return Err(ContextError::LongMode);
        }
        if self.rflags & RFLAGS_FIXED == 0 {
            return Err(ContextError::Bad32BitValue("rflags (bit 1 must be set)"));
        }
        let wide = [
            (self.rax, "rax"),
            (self.rbx, "rbx"),
            (self.rcx, "rcx"),
            (self.rdx, "rdx"),
            (self.rsi, "rsi"),
            (self.rdi, "rdi"),
            (self.rbp, "rbp"),
            (self.rsp, "rsp"),
            (self.rip, "rip"),
            (self.rflags, "rflags"),
            (self.cr0, "cr0"),
            (self.cr3, "cr3"),
            (self.cr4, "cr4"),
            (self.gdtr_base, "gdtr_base"),
            (self.idtr_base, "idtr_base"),
        ];
        if let Some((_, name)) = wide.iter().find(|(value, _)| *value > u64::from(u32::MAX)) {
            return Err(ContextError::Bad32BitValue(name));
        }
        for selector in [self.code_selector, self.data_selector] {
            if selector & 7 != 0 || selector == 0 || selector / 8 >= HANDOFF_GDT_ENTRIES {
                return Err(ContextError::BadSelector(selector));
            }
        }
        if self.code_selector == self.data_selector {
            return Err(ContextError::BadSelector(self.data_selector));
        }
        let code = self.code_attributes;
        let code_ok = code & (ATTR_PRESENT | ATTR_S | ATTR_CODE | ATTR_DEFAULT_32)
            == (ATTR_PRESENT | ATTR_S | ATTR_CODE | ATTR_DEFAULT_32)
            && code & ATTR_LONG == 0;
        let data = self.data_attributes;
        let data_ok = data & (ATTR_PRESENT | ATTR_S | ATTR_CODE | ATTR_WRITABLE)
            == (ATTR_PRESENT | ATTR_S | ATTR_WRITABLE);
        if !code_ok || code & 0x0F00 != 0 {
            return Err(ContextError::BadAttributes(code));
        }
        if !data_ok || data & 0x0F00 != 0 {
            return Err(ContextError::BadAttributes(data));
        }
        for (attributes, limit) in [(code, self.code_limit), (data, self.data_limit)] {
            let granular = attributes & ATTR_GRANULARITY != 0;
            if (granular && limit & 0xFFF != 0xFFF) || (!granular && limit > 0xF_FFFF) {
                return Err(ContextError::BadLimit(limit));
            }
        }
        Ok(())
    }

    /// The GDT the loader loads before it enters the context: the code and
    /// data descriptors at the context's selectors, every other entry null.
    /// Accessed bits are preset, so the CPU never writes to the table.
    pub fn handoff_gdt(&self) -> [u64; HANDOFF_GDT_ENTRIES as usize] {
        let mut gdt = [0u64; HANDOFF_GDT_ENTRIES as usize];
        gdt[usize::from(self.code_selector / 8)] =
            descriptor(self.code_attributes, self.code_base, self.code_limit);
        gdt[usize::from(self.data_selector / 8)] =
            descriptor(self.data_attributes, self.data_base, self.data_limit);
        gdt
    }
}

/// A GDT descriptor from descriptor-form attributes, a base and a byte
/// limit (scaled down when the granularity bit is set), accessed bit set.
pub fn descriptor(attributes: u16, base: u32, limit: u32) -> u64 {
    let attributes = attributes | ATTR_ACCESSED;
    let limit = if attributes & ATTR_GRANULARITY != 0 { limit >> 12 } else { limit };
    let base = u64::from(base);
    let limit = u64::from(limit);
    (limit & 0xFFFF)
        | (base & 0xFF_FFFF) << 16
        | u64::from(attributes & 0xFF) << 40
        | (limit >> 16 & 0xF) << 48
        | u64::from(attributes >> 12 & 0xF) << 52
        | (base >> 24 & 0xFF) << 56
}

/// Why a start context cannot be established by the loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextError {
    /// CR0.PE clear or CR0.PG set.
    NotProtectedModeWithoutPaging,
    /// EFER.LME/LMA or CR4.PCIDE set.
    LongMode,
    /// A register the loader can only set to a 32-bit value.
    Bad32BitValue(&'static str),
    /// A selector that is null, not a GDT selector with RPL 0, outside the
    /// handoff GDT, or shared by code and data.
    BadSelector(u16),
    /// Segment attributes that are not 32-bit code / writable data.
    BadAttributes(u16),
    /// A segment limit that its granularity bit cannot express.
    BadLimit(u32),
}

impl core::fmt::Display for ContextError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ContextError::NotProtectedModeWithoutPaging => {
                write!(f, "start context is not 32-bit protected mode with paging off")
            }
            ContextError::LongMode => write!(f, "start context enables long mode"),
            ContextError::Bad32BitValue(name) => {
                write!(f, "start context register {name} does not fit 32-bit mode")
            }
            ContextError::BadSelector(s) => write!(f, "unsupported start selector {s:#x}"),
            ContextError::BadAttributes(a) => write!(f, "unsupported segment attributes {a:#x}"),
            ContextError::BadLimit(l) => write!(f, "segment limit {l:#x} not expressible"),
        }
    }
}

/// The trailer the loader finds below its own code.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RomTrailer {
    /// [`ROM_MAGIC`].
    pub magic: [u8; 8],
    /// [`ROM_VERSION`].
    pub version: u32,
    /// Number of [`LoadEntry`] records in the table.
    pub entry_count: u32,
    /// Size of the whole ROM image (the `-bios` file).
    pub rom_size: u64,
    /// Offset of the table from the ROM base.
    pub table_offset: u64,
    /// The register state to start with.
    pub start: StartContext,
}

pub const TRAILER_SIZE: u64 = core::mem::size_of::<RomTrailer>() as u64;
const ENTRY_SIZE: u64 = core::mem::size_of::<LoadEntry>() as u64;

const _: () = {
    assert!(ENTRY_SIZE == 32);
    assert!(core::mem::size_of::<StartContext>() == 160);
    assert!(TRAILER_SIZE == 192);
};

/// Offset of the trailer from the ROM base, for a ROM of `rom_size` bytes.
pub fn trailer_offset(rom_size: u64) -> Option<u64> {
    rom_size.checked_sub(LOADER_SIZE + TRAILER_SIZE)
}

/// Why a ROM image or its table was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// The ROM is smaller than the loader plus the trailer, larger than
    /// [`MAX_ROM_SIZE`], or not a multiple of [`ROM_ALIGN`].
    BadRomSize(u64),
    /// No [`ROM_MAGIC`] in the trailer.
    BadMagic,
    /// A table version this loader does not read.
    UnsupportedVersion(u32),
    /// The trailer's size does not match the ROM's.
    SizeMismatch { trailer: u64, rom: u64 },
    /// The table lies outside the data area.
    TableOutOfRom,
    /// An entry with an unknown kind, a wrapping range, or bad fields.
    BadEntry { index: usize },
    /// A copy step whose data lies outside the data area.
    SourceOutOfRom { index: usize },
    /// The start context cannot be established.
    Context(ContextError),
}

impl core::fmt::Display for TableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TableError::BadRomSize(size) => write!(f, "ROM size {size:#x} is not usable"),
            TableError::BadMagic => write!(f, "no load-table trailer below the loader"),
            TableError::UnsupportedVersion(v) => write!(f, "load-table version {v} unsupported"),
            TableError::SizeMismatch { trailer, rom } => {
                write!(f, "trailer says the ROM is {trailer:#x} bytes, it is {rom:#x}")
            }
            TableError::TableOutOfRom => write!(f, "load table outside the ROM data"),
            TableError::BadEntry { index } => write!(f, "load-table entry {index} is malformed"),
            TableError::SourceOutOfRom { index } => {
                write!(f, "load-table entry {index} copies data from outside the ROM")
            }
            TableError::Context(e) => write!(f, "{e}"),
        }
    }
}

/// A checked ROM image: the trailer is valid and the table lies inside the
/// data area.
pub struct RomImage<'a> {
    rom: &'a [u8],
    trailer: RomTrailer,
    data_end: u64,
}

impl<'a> RomImage<'a> {
    /// Reads the trailer of `rom` (the whole `-bios` image) and checks it.
    pub fn parse(rom: &'a [u8]) -> Result<RomImage<'a>, TableError> {
        let rom_size = rom.len() as u64;
        let data_end = trailer_offset(rom_size)
            .filter(|_| rom_size <= MAX_ROM_SIZE && rom_size.is_multiple_of(ROM_ALIGN))
            .ok_or(TableError::BadRomSize(rom_size))?;
        let start = usize::try_from(data_end).map_err(|_| TableError::BadRomSize(rom_size))?;
        let (trailer, _) =
            RomTrailer::read_from_prefix(&rom[start..]).map_err(|_| TableError::BadMagic)?;
        if trailer.magic != ROM_MAGIC {
            return Err(TableError::BadMagic);
        }
        if trailer.version != ROM_VERSION {
            return Err(TableError::UnsupportedVersion(trailer.version));
        }
        if trailer.rom_size != rom_size {
            return Err(TableError::SizeMismatch { trailer: trailer.rom_size, rom: rom_size });
        }
        let table_end = u64::from(trailer.entry_count)
            .checked_mul(ENTRY_SIZE)
            .and_then(|size| size.checked_add(trailer.table_offset))
            .ok_or(TableError::TableOutOfRom)?;
        if table_end > data_end {
            return Err(TableError::TableOutOfRom);
        }
        trailer.start.check().map_err(TableError::Context)?;
        Ok(RomImage { rom, trailer, data_end })
    }

    /// The register state to start with (checked).
    pub fn start(&self) -> &StartContext {
        &self.trailer.start
    }

    /// Number of steps in the table.
    pub fn step_count(&self) -> usize {
        self.trailer.entry_count as usize
    }

    /// The `index`th step, checked (including a copy's source range).
    pub fn step(&self, index: usize) -> Result<Step, TableError> {
        if index >= self.step_count() {
            return Err(TableError::BadEntry { index });
        }
        let offset = self.trailer.table_offset as usize + index * ENTRY_SIZE as usize;
        let (entry, _) = LoadEntry::read_from_prefix(&self.rom[offset..])
            .map_err(|_| TableError::TableOutOfRom)?;
        let step = entry.decode(index)?;
        if let Step::Copy { size, source, .. } = step {
            let end = source.checked_add(size).ok_or(TableError::SourceOutOfRom { index })?;
            if end > self.data_end {
                return Err(TableError::SourceOutOfRom { index });
            }
        }
        Ok(step)
    }

    /// The data a checked copy step copies.
    pub fn copy_source(&self, source: u64, size: u64) -> &'a [u8] {
        // `step` checked `source + size <= data_end <= rom.len()`.
        &self.rom[source as usize..(source + size) as usize]
    }
}

#[cfg(not(target_os = "none"))]
pub use builder::RomBuilder;

#[cfg(not(target_os = "none"))]
mod builder {
    use super::*;

    /// Writes a ROM image (host side, used by the xtask).
    #[derive(Default)]
    pub struct RomBuilder {
        steps: Vec<Step>,
        payload: Vec<u8>,
    }

    impl RomBuilder {
        /// An empty table.
        pub fn new() -> RomBuilder {
            RomBuilder::default()
        }

        /// Adds a step that copies `data` to `gpa`.
        pub fn copy(&mut self, gpa: u64, data: &[u8]) {
            // Sources are payload offsets until `finish` moves them behind the table.
            let source = self.payload.len() as u64;
            self.payload.extend_from_slice(data);
            self.steps.push(Step::Copy { gpa, size: data.len() as u64, source });
        }

        /// Adds a step that needs no ROM data (anything but [`Step::Copy`]).
        pub fn step(&mut self, step: Step) {
            assert!(!matches!(step, Step::Copy { .. }), "copy steps carry data: use `copy`");
            self.steps.push(step);
        }

        /// The steps so far, with copy sources relative to the payload.
        pub fn steps(&self) -> &[Step] {
            &self.steps
        }

        /// Lays out the ROM: table, payload, padding, trailer, then the
        /// loader's 64 KiB image.
        pub fn finish(&self, start: StartContext, loader: &[u8]) -> Result<Vec<u8>, TableError> {
            start.check().map_err(TableError::Context)?;
            if loader.len() as u64 != LOADER_SIZE {
                return Err(TableError::BadRomSize(loader.len() as u64));
            }
            let table_size = self.steps.len() as u64 * ENTRY_SIZE;
            let used = table_size + self.payload.len() as u64 + TRAILER_SIZE + LOADER_SIZE;
            let rom_size = used.div_ceil(ROM_ALIGN) * ROM_ALIGN;
            if rom_size > MAX_ROM_SIZE {
                return Err(TableError::BadRomSize(rom_size));
            }
            let entry_count =
                u32::try_from(self.steps.len()).map_err(|_| TableError::TableOutOfRom)?;
            let mut rom = Vec::with_capacity(rom_size as usize);
            for step in &self.steps {
                let step = match *step {
                    Step::Copy { gpa, size, source } => {
                        Step::Copy { gpa, size, source: source + table_size }
                    }
                    other => other,
                };
                rom.extend_from_slice(step.encode().as_bytes());
            }
            rom.extend_from_slice(&self.payload);
            let trailer_at = trailer_offset(rom_size).expect("rom_size includes the trailer");
            rom.resize(trailer_at as usize, 0);
            let trailer = RomTrailer {
                magic: ROM_MAGIC,
                version: ROM_VERSION,
                entry_count,
                rom_size,
                table_offset: 0,
                start,
            };
            rom.extend_from_slice(trailer.as_bytes());
            rom.extend_from_slice(loader);
            debug_assert_eq!(rom.len() as u64, rom_size);
            Ok(rom)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The start context the xtask writes for stage2.
    pub(crate) fn stage2_context() -> StartContext {
        StartContext {
            rsp: 0x11_0000,
            rip: 0x11_0000,
            rflags: 2,
            cr0: 0x31,
            code_selector: 0x08,
            code_attributes: 0xc09b,
            code_limit: 0xFFFF_FFFF,
            data_selector: 0x10,
            data_attributes: 0xc093,
            data_limit: 0xFFFF_FFFF,
            ..Default::default()
        }
    }

    #[test]
    fn descriptors_match_known_encodings() {
        // Flat 32-bit code, data and 64-bit code with the accessed bit set.
        assert_eq!(descriptor(0xc09b, 0, 0xFFFF_FFFF), 0x00cf_9b00_0000_ffff);
        assert_eq!(descriptor(0xc093, 0, 0xFFFF_FFFF), 0x00cf_9300_0000_ffff);
        assert_eq!(descriptor(0xa09b, 0, 0xFFFF_FFFF), 0x00af_9b00_0000_ffff);
        // The accessed bit is preset even when the attributes lack it.
        assert_eq!(descriptor(0xc09a, 0, 0xFFFF_FFFF), 0x00cf_9b00_0000_ffff);
        // Byte-granular limit and a split base.
        assert_eq!(descriptor(0x4093, 0x1234_5678, 0xABCDE), 0x124a_9334_5678_bcde);
    }

    #[test]
    fn handoff_gdt_puts_descriptors_at_the_context_selectors() {
        let gdt = stage2_context().handoff_gdt();
        assert_eq!(gdt[0], 0);
        assert_eq!(gdt[1], 0x00cf_9b00_0000_ffff);
        assert_eq!(gdt[2], 0x00cf_9300_0000_ffff);
        assert!(gdt[3..].iter().all(|&d| d == 0));
    }

    #[test]
    fn context_checks_reject_what_the_loader_cannot_do() {
        assert_eq!(stage2_context().check(), Ok(()));
        type Case = (fn(&mut StartContext), ContextError);
        let cases: [Case; 9] = [
            (|c| c.cr0 = 0x8000_0031, ContextError::NotProtectedModeWithoutPaging),
            (|c| c.cr0 = 0x30, ContextError::NotProtectedModeWithoutPaging),
            (|c| c.efer = 0x500, ContextError::LongMode),
            (|c| c.rip = 0x1_0000_0000, ContextError::Bad32BitValue("rip")),
            (|c| c.code_selector = 0x0b, ContextError::BadSelector(0x0b)),
            (|c| c.data_selector = 0x40, ContextError::BadSelector(0x40)),
            (|c| c.data_selector = 0x08, ContextError::BadSelector(0x08)),
            (|c| c.code_attributes = 0xa09b, ContextError::BadAttributes(0xa09b)),
            (|c| c.data_limit = 0x1000, ContextError::BadLimit(0x1000)),
        ];
        for (change, expected) in cases {
            let mut context = stage2_context();
            change(&mut context);
            assert_eq!(context.check(), Err(expected));
        }
    }

    #[test]
    fn entry_layout_is_pinned() {
        let entry = Step::Copy { gpa: 0x10_0000, size: 0x2000, source: 0x40 }.encode();
        let mut expected = [0u8; 32];
        expected[0] = 1;
        expected[8..16].copy_from_slice(&0x10_0000u64.to_le_bytes());
        expected[16..24].copy_from_slice(&0x2000u64.to_le_bytes());
        expected[24..32].copy_from_slice(&0x40u64.to_le_bytes());
        assert_eq!(entry.as_bytes(), &expected);
    }

    #[test]
    fn steps_round_trip_and_bad_entries_are_rejected() {
        let steps = [
            Step::Copy { gpa: 0x1000, size: 0x1000, source: 8 },
            Step::Zero { gpa: 0x2000, size: 0x3000 },
            Step::VpCount { gpa: 0x10_3000 },
            Step::EnvironmentInfo { gpa: 0x10_3004 },
            Step::MemoryMap { gpa: 0x10_4000, size: 0x1000 },
            Step::RequiredMemory { gpa: 0x800_0000, size: 0x400_0000 },
        ];
        for step in steps {
            assert_eq!(step.encode().decode(0), Ok(step));
        }
        let bad = [
            LoadEntry { kind: 9, gpa: 0, size: 1, ..Default::default() },
            LoadEntry { kind: 2, gpa: u64::MAX, size: 2, ..Default::default() },
            LoadEntry { kind: 2, gpa: 0, size: 0, ..Default::default() },
            LoadEntry { kind: 3, gpa: 0, size: 8, ..Default::default() },
            LoadEntry { kind: 5, gpa: 0, size: 8, ..Default::default() },
            LoadEntry { kind: 2, gpa: 0, size: 8, source: 4, ..Default::default() },
            LoadEntry { kind: 1, reserved: 1, gpa: 0, size: 8, source: 4 },
        ];
        for entry in bad {
            assert_eq!(entry.decode(7), Err(TableError::BadEntry { index: 7 }), "{entry:?}");
        }
    }

    fn loader_image() -> Vec<u8> {
        vec![0xf4; LOADER_SIZE as usize]
    }

    #[test]
    fn builder_output_parses_back() {
        let mut builder = RomBuilder::new();
        builder.copy(0x10_0000, &[0xAA; 0x1000]);
        builder.step(Step::Zero { gpa: 0x10_1000, size: 0x1000 });
        builder.copy(0x10_2000, &[0xBB; 0x2000]);
        let rom = builder.finish(stage2_context(), &loader_image()).unwrap();
        assert!((rom.len() as u64).is_multiple_of(ROM_ALIGN));
        assert_eq!(&rom[rom.len() - LOADER_SIZE as usize..], &loader_image()[..]);
        let image = RomImage::parse(&rom).unwrap();
        assert_eq!(image.step_count(), 3);
        assert_eq!(image.start(), &stage2_context());
        let Step::Copy { gpa, size, source } = image.step(2).unwrap() else { panic!() };
        assert_eq!((gpa, size), (0x10_2000, 0x2000));
        assert!(image.copy_source(source, size).iter().all(|&b| b == 0xBB));
        assert_eq!(image.step(1).unwrap(), Step::Zero { gpa: 0x10_1000, size: 0x1000 });
        assert_eq!(image.step(3), Err(TableError::BadEntry { index: 3 }));
    }

    #[test]
    fn corrupt_roms_are_rejected() {
        let mut builder = RomBuilder::new();
        builder.copy(0x10_0000, &[1; 0x1000]);
        let rom = builder.finish(stage2_context(), &loader_image()).unwrap();
        let trailer_at = trailer_offset(rom.len() as u64).unwrap() as usize;

        assert_eq!(RomImage::parse(&rom[..0x1000]).err(), Some(TableError::BadRomSize(0x1000)));
        let mut bad_magic = rom.clone();
        bad_magic[trailer_at] ^= 1;
        assert_eq!(RomImage::parse(&bad_magic).err(), Some(TableError::BadMagic));
        let mut bad_version = rom.clone();
        bad_version[trailer_at + 8] = 9;
        assert_eq!(RomImage::parse(&bad_version).err(), Some(TableError::UnsupportedVersion(9)));
        let mut many_entries = rom.clone();
        many_entries[trailer_at + 12..trailer_at + 16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(RomImage::parse(&many_entries).err(), Some(TableError::TableOutOfRom));
        let mut bad_source = rom.clone();
        bad_source[24..32].copy_from_slice(&(rom.len() as u64).to_le_bytes());
        let image = RomImage::parse(&bad_source).unwrap();
        assert_eq!(image.step(0), Err(TableError::SourceOutOfRom { index: 0 }));
        let mut bad_context = rom.clone();
        bad_context[trailer_at + 32 + 80] = 0x30; // start.cr0 with PE clear
        assert!(matches!(RomImage::parse(&bad_context).err(), Some(TableError::Context(_))));
    }

    #[test]
    fn builder_refuses_oversized_roms() {
        let mut builder = RomBuilder::new();
        builder.copy(0x10_0000, &vec![0; MAX_ROM_SIZE as usize]);
        assert!(matches!(
            builder.finish(stage2_context(), &loader_image()),
            Err(TableError::BadRomSize(_))
        ));
    }
}
