//! A bounds-checked reader for the ELF64 executables of this project: stage2
//! loads the kernel with it, the xtask places stage2 with it.
//!
//! It reads only what loading needs (the file header and the `PT_LOAD`
//! program headers) and checks every offset and size against the file before
//! use, so a malformed image gives an error, never an out-of-bounds access.

use zerocopy::{FromBytes, Immutable, KnownLayout};

const PT_LOAD: u32 = 1;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;

/// Why an ELF image was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Shorter than the ELF header.
    TooShort,
    /// No `\x7fELF` magic.
    BadMagic,
    /// Not a 64-bit little-endian x86-64 executable.
    Unsupported,
    /// Program-header table outside the file or of the wrong entry size.
    BadProgramHeaders,
    /// A segment whose file data lies outside the file.
    SegmentOutOfFile { index: usize },
    /// A segment whose file size exceeds its memory size, or whose address
    /// range wraps.
    BadSegmentSize { index: usize },
    /// Two loadable segments share memory.
    OverlappingSegments { first: usize, second: usize },
    /// No loadable segment at all.
    NothingToLoad,
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ElfError::TooShort => write!(f, "file is shorter than an ELF header"),
            ElfError::BadMagic => write!(f, "not an ELF file (bad magic)"),
            ElfError::Unsupported => write!(f, "not a 64-bit little-endian x86-64 executable"),
            ElfError::BadProgramHeaders => {
                write!(f, "program-header table is malformed or outside the file")
            }
            ElfError::SegmentOutOfFile { index } => {
                write!(f, "segment {index} lies outside the file")
            }
            ElfError::BadSegmentSize { index } => {
                write!(f, "segment {index} has inconsistent sizes")
            }
            ElfError::OverlappingSegments { first, second } => {
                write!(f, "segments {first} and {second} overlap")
            }
            ElfError::NothingToLoad => write!(f, "no loadable segment"),
        }
    }
}

#[repr(C)]
#[derive(FromBytes, Immutable, KnownLayout)]
struct FileHeader {
    ident: [u8; 16],
    file_type: u16,
    machine: u16,
    version: u32,
    entry: u64,
    phoff: u64,
    shoff: u64,
    flags: u32,
    ehsize: u16,
    phentsize: u16,
    phnum: u16,
    shentsize: u16,
    shnum: u16,
    shstrndx: u16,
}

#[repr(C)]
#[derive(FromBytes, Immutable, KnownLayout)]
struct ProgramHeader {
    segment_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

const _: () = assert!(core::mem::size_of::<FileHeader>() == 64);
const _: () = assert!(core::mem::size_of::<ProgramHeader>() == 56);

/// A checked ELF64 executable.
pub struct Elf<'a> {
    data: &'a [u8],
    entry: u64,
    phoff: usize,
    phnum: usize,
}

/// Access rights of a loadable segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentFlags {
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub execute: bool,
}

/// A `PT_LOAD` segment: `file_data` goes at `vaddr`, the rest up to
/// `mem_size` is zero.
#[derive(Clone, Copy, Debug)]
pub struct LoadSegment<'a> {
    /// Virtual address of the first byte.
    pub vaddr: u64,
    /// Physical address the linker assigned (the load address).
    pub paddr: u64,
    /// Size in memory.
    pub mem_size: u64,
    /// The bytes from the file (at most `mem_size`).
    pub file_data: &'a [u8],
    /// Access rights.
    pub flags: SegmentFlags,
}

impl LoadSegment<'_> {
    /// First virtual address past the segment.
    pub fn vaddr_end(&self) -> u64 {
        // `Elf::parse` checked that this does not wrap.
        self.vaddr + self.mem_size
    }
}

impl<'a> Elf<'a> {
    /// Checks the header, the program-header table and every loadable segment.
    pub fn parse(data: &'a [u8]) -> Result<Elf<'a>, ElfError> {
        let (header, _) = FileHeader::read_from_prefix(data).map_err(|_| ElfError::TooShort)?;
        if header.ident[0..4] != *b"\x7fELF" {
            return Err(ElfError::BadMagic);
        }
        // Class 2 = 64-bit, data 1 = little endian, version 1.
        if header.ident[4] != 2
            || header.ident[5] != 1
            || header.ident[6] != 1
            || header.machine != EM_X86_64
            || header.file_type != ET_EXEC
        {
            return Err(ElfError::Unsupported);
        }
        if header.phentsize as usize != core::mem::size_of::<ProgramHeader>() {
            return Err(ElfError::BadProgramHeaders);
        }
        let phoff = usize::try_from(header.phoff).map_err(|_| ElfError::BadProgramHeaders)?;
        let phnum = header.phnum as usize;
        let table_end = phnum
            .checked_mul(core::mem::size_of::<ProgramHeader>())
            .and_then(|size| size.checked_add(phoff))
            .ok_or(ElfError::BadProgramHeaders)?;
        if table_end > data.len() {
            return Err(ElfError::BadProgramHeaders);
        }
        let elf = Elf { data, entry: header.entry, phoff, phnum };
        elf.check_segments()?;
        Ok(elf)
    }

    /// The entry point's virtual address.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The loadable segments, in file order.
    pub fn segments(&self) -> impl Iterator<Item = LoadSegment<'a>> + '_ {
        (0..self.phnum).filter_map(|index| {
            // Checked in `parse`: every header is inside the file and every
            // loadable segment is consistent.
            self.load_segment(index).ok().flatten()
        })
    }

    /// The lowest and the first-past-highest virtual address of all
    /// loadable segments.
    pub fn vaddr_bounds(&self) -> (u64, u64) {
        self.segments()
            .fold((u64::MAX, 0), |(low, high), s| (low.min(s.vaddr), high.max(s.vaddr_end())))
    }

    fn program_header(&self, index: usize) -> ProgramHeader {
        let start = self.phoff + index * core::mem::size_of::<ProgramHeader>();
        ProgramHeader::read_from_prefix(&self.data[start..])
            .expect("table bounds checked in parse")
            .0
    }

    fn load_segment(&self, index: usize) -> Result<Option<LoadSegment<'a>>, ElfError> {
        let ph = self.program_header(index);
        if ph.segment_type != PT_LOAD || ph.memsz == 0 {
            return Ok(None);
        }
        if ph.filesz > ph.memsz
            || ph.vaddr.checked_add(ph.memsz).is_none()
            || ph.paddr.checked_add(ph.memsz).is_none()
        {
            return Err(ElfError::BadSegmentSize { index });
        }
        let start = usize::try_from(ph.offset).map_err(|_| ElfError::SegmentOutOfFile { index })?;
        let size = usize::try_from(ph.filesz).map_err(|_| ElfError::SegmentOutOfFile { index })?;
        let file_data = start
            .checked_add(size)
            .and_then(|end| self.data.get(start..end))
            .ok_or(ElfError::SegmentOutOfFile { index })?;
        let flags = SegmentFlags {
            read: ph.flags & PF_R != 0,
            write: ph.flags & PF_W != 0,
            execute: ph.flags & PF_X != 0,
        };
        Ok(Some(LoadSegment {
            vaddr: ph.vaddr,
            paddr: ph.paddr,
            mem_size: ph.memsz,
            file_data,
            flags,
        }))
    }

    fn check_segments(&self) -> Result<(), ElfError> {
        let mut any = false;
        for index in 0..self.phnum {
            let Some(segment) = self.load_segment(index)? else { continue };
            any = true;
            for other_index in 0..index {
                if let Some(other) = self.load_segment(other_index)?
                    && segment.vaddr < other.vaddr_end()
                    && other.vaddr < segment.vaddr_end()
                {
                    return Err(ElfError::OverlappingSegments {
                        first: other_index,
                        second: index,
                    });
                }
            }
        }
        if any { Ok(()) } else { Err(ElfError::NothingToLoad) }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    /// Builds a minimal ELF64 executable with the given (vaddr, memsz, data, flags) segments.
    fn build(segments: &[(u64, u64, &[u8], u32)]) -> Vec<u8> {
        let phoff = 64u64;
        let data_start = phoff + 56 * segments.len() as u64;
        let mut out = Vec::new();
        out.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        out.extend_from_slice(&ET_EXEC.to_le_bytes());
        out.extend_from_slice(&EM_X86_64.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&0xffff_ffff_8000_1000u64.to_le_bytes());
        out.extend_from_slice(&phoff.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for v in [64u16, 56, segments.len() as u16, 64, 0, 0] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let mut offset = data_start;
        for &(vaddr, memsz, data, flags) in segments {
            out.extend_from_slice(&PT_LOAD.to_le_bytes());
            out.extend_from_slice(&flags.to_le_bytes());
            for v in [offset, vaddr, vaddr, data.len() as u64, memsz, 0x1000] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            offset += data.len() as u64;
        }
        for &(_, _, data, _) in segments {
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn reads_segments_of_a_well_formed_image() {
        let image =
            build(&[(0x1000, 0x10, b"code", PF_R | PF_X), (0x2000, 0x2000, b"data", PF_R | PF_W)]);
        let elf = Elf::parse(&image).unwrap();
        assert_eq!(elf.entry(), 0xffff_ffff_8000_1000);
        let segments: Vec<_> = elf.segments().collect();
        assert_eq!(segments.len(), 2);
        assert_eq!(segments[0].file_data, b"code");
        assert_eq!(segments[0].flags, SegmentFlags { read: true, write: false, execute: true });
        assert_eq!(segments[1].flags, SegmentFlags { read: true, write: true, execute: false });
        assert_eq!(elf.vaddr_bounds(), (0x1000, 0x4000));
    }

    #[test]
    fn rejects_malformed_images() {
        let good = build(&[(0x1000, 0x10, b"code", PF_R | PF_X)]);
        assert_eq!(Elf::parse(&good[..10]).err(), Some(ElfError::TooShort));

        let mut bad_magic = good.clone();
        bad_magic[0] = 0;
        assert_eq!(Elf::parse(&bad_magic).err(), Some(ElfError::BadMagic));

        let mut class32 = good.clone();
        class32[4] = 1;
        assert_eq!(Elf::parse(&class32).err(), Some(ElfError::Unsupported));

        let mut huge_phnum = good.clone();
        huge_phnum[56..58].copy_from_slice(&0xffffu16.to_le_bytes());
        assert_eq!(Elf::parse(&huge_phnum).err(), Some(ElfError::BadProgramHeaders));

        let mut huge_phoff = good.clone();
        huge_phoff[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(Elf::parse(&huge_phoff).err(), Some(ElfError::BadProgramHeaders));

        // Segment file offset beyond the end of the file.
        let mut out_of_file = good.clone();
        out_of_file[64 + 8..64 + 16].copy_from_slice(&0x10_0000u64.to_le_bytes());
        assert_eq!(Elf::parse(&out_of_file).err(), Some(ElfError::SegmentOutOfFile { index: 0 }));

        // filesz > memsz.
        let mut sizes = good.clone();
        sizes[64 + 40..64 + 48].copy_from_slice(&1u64.to_le_bytes());
        assert_eq!(Elf::parse(&sizes).err(), Some(ElfError::BadSegmentSize { index: 0 }));

        // Address range wrapping around.
        let wraps = build(&[(u64::MAX - 4, 0x10, b"", PF_R)]);
        assert_eq!(Elf::parse(&wraps).err(), Some(ElfError::BadSegmentSize { index: 0 }));

        let overlap = build(&[(0x1000, 0x1000, b"a", PF_R), (0x1800, 0x1000, b"b", PF_R)]);
        assert_eq!(
            Elf::parse(&overlap).err(),
            Some(ElfError::OverlappingSegments { first: 0, second: 1 })
        );

        let empty = build(&[]);
        assert_eq!(Elf::parse(&empty).err(), Some(ElfError::NothingToLoad));
    }

    #[test]
    fn never_panics_on_truncations_of_a_valid_image() {
        let good =
            build(&[(0x1000, 0x10, b"code", PF_R | PF_X), (0x2000, 0x10, b"data", PF_R | PF_W)]);
        for len in 0..good.len() {
            let _ = Elf::parse(&good[..len]).map(|elf| elf.segments().count());
        }
    }
}
