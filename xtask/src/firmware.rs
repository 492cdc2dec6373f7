//! The guest firmware packaged into the IGVM file (OVMF, or later a small
//! test guest), and what OVMF's SEV metadata asks of the SVSM.
//!
//! OVMF ends with a GUIDed table just below its reset vector: the 16-bit
//! table length and the footer GUID `96b582de-1fb2-45f7-baea-a366c55a082d`
//! sit 32 bytes before the end of the image, and each entry before them is
//! `[data][u16 length][GUID]`, read backwards, the length counting data,
//! length and GUID. The entry `dc886566-984a-4798-a75e-5585a7bf67cc` holds
//! the offset (from the end of the image) of the "ASEV" SEV metadata:
//! `{signature, length, version, count}` and `count` sections
//! `{base u32, size u32, type u32}`. The SVSM needs the pre-validated
//! ranges (types 1 and 0x10), the secrets, CPUID and SVSM calling-area
//! pages (2, 3, 4). They go into the measured boot parameters, not into
//! IGVM pages (igvm-and-launch.md §3.5).

use std::path::Path;

use abi::boot::{FirmwareInfo, MAX_FIRMWARE_RANGES, MemoryRange};
use abi::layout::{FIRMWARE_MAX_SIZE, PAGE_SIZE};
use thiserror::Error;

/// GUID of the table footer, as stored (little-endian fields).
const TABLE_FOOTER_GUID: [u8; 16] =
    guid_bytes(0x96b582de, 0x1fb2, 0x45f7, [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d]);
/// GUID of the SEV metadata offset entry.
const SEV_METADATA_GUID: [u8; 16] =
    guid_bytes(0xdc886566, 0x984a, 0x4798, [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc]);
/// The table footer ends this many bytes before the end of the image.
const TABLE_END_FROM_IMAGE_END: usize = 32;
/// "ASEV".
const SEV_METADATA_SIGNATURE: u32 = u32::from_le_bytes(*b"ASEV");

/// SEV metadata section types (OVMF `OvmfPkg/ResetVector`).
const SECTION_SNP_SEC_MEM: u32 = 1;
const SECTION_SNP_SECRETS: u32 = 2;
const SECTION_CPUID: u32 = 3;
const SECTION_SVSM_CAA: u32 = 4;
const SECTION_SNP_KERNEL_HASHES: u32 = 0x10;

const fn guid_bytes(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]
}

/// Why a firmware image was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FirmwareError {
    #[error(
        "firmware image is {0} bytes: it must be a non-empty multiple of 4 KiB and at most 16 MiB"
    )]
    BadSize(usize),
    #[error("no GUIDed table footer (96b582de-…) 32 bytes before the end: not an OVMF image")]
    NoGuidTable,
    #[error("the GUIDed table is malformed ({0})")]
    BadGuidTable(&'static str),
    #[error(
        "the GUIDed table has no SEV metadata entry (dc886566-…): OVMF built without SEV support"
    )]
    NoSevMetadata,
    #[error("the SEV metadata is malformed ({0})")]
    BadSevMetadata(&'static str),
    #[error("SEV metadata section {index} has unknown type {kind:#x}")]
    UnknownSection { index: usize, kind: u32 },
    #[error("SEV metadata names the {0} page twice")]
    DuplicatePage(&'static str),
    #[error("the SEV metadata's pre-validated ranges need more than {MAX_FIRMWARE_RANGES} entries")]
    TooManyRanges,
    #[error("OVMF has no SVSM calling-area section (type 4): use OVMF 2025.02 or newer")]
    NoCallingArea,
}

/// What OVMF's SEV metadata asks of the SVSM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SevMetadata {
    /// Ranges OVMF expects validated before it runs, merged and sorted.
    pub prevalidated: Vec<MemoryRange>,
    /// Where OVMF expects the SNP secrets page.
    pub secrets_gpa: u64,
    /// Where OVMF expects the SNP CPUID page.
    pub cpuid_gpa: u64,
    /// OVMF's SVSM calling area.
    pub calling_area_gpa: u64,
}

/// A guest firmware image for the IGVM file.
#[derive(Clone, Debug)]
pub struct GuestFirmware {
    /// Where it came from, for messages.
    pub name: String,
    /// The image; on SNP it ends at 4 GiB.
    pub image: Vec<u8>,
    /// Its SEV metadata, when it has any.
    pub sev: Option<SevMetadata>,
}

impl GuestFirmware {
    /// Reads an OVMF image, which must carry SEV metadata with an SVSM
    /// calling area.
    pub fn ovmf(path: &Path) -> anyhow::Result<GuestFirmware> {
        let image = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("reading OVMF image {}: {e}", path.display()))?;
        let sev =
            parse_sev_metadata(&image).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if sev.calling_area_gpa == 0 {
            anyhow::bail!("{}: {}", path.display(), FirmwareError::NoCallingArea);
        }
        Ok(GuestFirmware { name: path.display().to_string(), image, sev: Some(sev) })
    }

    /// Reads a guest image without SEV metadata (e.g. a test guest).
    pub fn image(path: &Path) -> anyhow::Result<GuestFirmware> {
        let image = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("reading guest image {}: {e}", path.display()))?;
        check_size(&image).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(GuestFirmware { name: path.display().to_string(), image, sev: None })
    }

    /// The firmware fields of the boot parameters: where the guest sees
    /// the image (ending at 4 GiB), where it is staged, and the metadata.
    pub fn info(&self, staging_base: Option<u64>) -> FirmwareInfo {
        let size = self.image.len() as u64;
        let base = (1u64 << 32) - size;
        let mut info = FirmwareInfo {
            base,
            size,
            staging_base: staging_base.unwrap_or(base),
            ..Default::default()
        };
        if let Some(sev) = &self.sev {
            info.secrets_gpa = sev.secrets_gpa;
            info.cpuid_gpa = sev.cpuid_gpa;
            info.calling_area_gpa = sev.calling_area_gpa;
            info.prevalidated_count = sev.prevalidated.len() as u32;
            info.prevalidated[..sev.prevalidated.len()].copy_from_slice(&sev.prevalidated);
        }
        info
    }
}

/// Checks the size rules every firmware image must meet.
pub fn check_size(image: &[u8]) -> Result<(), FirmwareError> {
    let len = image.len();
    if len == 0 || !(len as u64).is_multiple_of(PAGE_SIZE) || len as u64 > FIRMWARE_MAX_SIZE {
        return Err(FirmwareError::BadSize(len));
    }
    Ok(())
}

/// Finds the data of the GUIDed-table entry `guid`.
fn find_guid_entry<'a>(
    image: &'a [u8],
    guid: &[u8; 16],
) -> Result<Option<&'a [u8]>, FirmwareError> {
    let footer_end =
        image.len().checked_sub(TABLE_END_FROM_IMAGE_END).ok_or(FirmwareError::NoGuidTable)?;
    let footer_start = footer_end.checked_sub(18).ok_or(FirmwareError::NoGuidTable)?;
    if image[footer_start + 2..footer_end] != TABLE_FOOTER_GUID {
        return Err(FirmwareError::NoGuidTable);
    }
    let table_len = usize::from(u16::from_le_bytes([image[footer_start], image[footer_start + 1]]));
    // The length covers the footer too; entries run from table_start to footer_start.
    let table_start =
        footer_end.checked_sub(table_len).ok_or(FirmwareError::BadGuidTable("length"))?;
    if table_len < 18 {
        return Err(FirmwareError::BadGuidTable("length"));
    }
    let mut end = footer_start;
    while end > table_start {
        let header = end
            .checked_sub(18)
            .filter(|&h| h >= table_start)
            .ok_or(FirmwareError::BadGuidTable("entry header"))?;
        let entry_len = usize::from(u16::from_le_bytes([image[header], image[header + 1]]));
        let entry_start = end
            .checked_sub(entry_len)
            .filter(|&s| entry_len >= 18 && s >= table_start)
            .ok_or(FirmwareError::BadGuidTable("entry length"))?;
        if image[header + 2..end] == *guid {
            return Ok(Some(&image[entry_start..header]));
        }
        end = entry_start;
    }
    Ok(None)
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    bytes.get(offset..offset + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

/// Parses OVMF's SEV metadata (see the module docs).
pub fn parse_sev_metadata(image: &[u8]) -> Result<SevMetadata, FirmwareError> {
    check_size(image)?;
    let entry = find_guid_entry(image, &SEV_METADATA_GUID)?.ok_or(FirmwareError::NoSevMetadata)?;
    let from_end =
        read_u32(entry, 0).ok_or(FirmwareError::BadSevMetadata("offset entry too short"))?;
    let start = image
        .len()
        .checked_sub(from_end as usize)
        .ok_or(FirmwareError::BadSevMetadata("offset outside the image"))?;
    let header = &image[start..];
    if read_u32(header, 0) != Some(SEV_METADATA_SIGNATURE) {
        return Err(FirmwareError::BadSevMetadata("no ASEV signature"));
    }
    let length =
        read_u32(header, 4).ok_or(FirmwareError::BadSevMetadata("truncated header"))? as usize;
    let count =
        read_u32(header, 12).ok_or(FirmwareError::BadSevMetadata("truncated header"))? as usize;
    if length > header.len()
        || count.checked_mul(12).and_then(|n| n.checked_add(16)) != Some(length)
    {
        return Err(FirmwareError::BadSevMetadata("length does not match the section count"));
    }
    let mut metadata = SevMetadata::default();
    let mut ranges = Vec::new();
    for index in 0..count {
        let at = 16 + index * 12;
        let (base, size, kind) = (
            u64::from(read_u32(header, at).expect("within length")),
            u64::from(read_u32(header, at + 4).expect("within length")),
            read_u32(header, at + 8).expect("within length"),
        );
        let set_page = |slot: &mut u64, name: &'static str| {
            if *slot != 0 {
                return Err(FirmwareError::DuplicatePage(name));
            }
            *slot = base;
            Ok(())
        };
        match kind {
            SECTION_SNP_SEC_MEM | SECTION_SNP_KERNEL_HASHES => {
                ranges.push(MemoryRange { base, size })
            }
            SECTION_SNP_SECRETS => set_page(&mut metadata.secrets_gpa, "secrets")?,
            SECTION_CPUID => set_page(&mut metadata.cpuid_gpa, "CPUID")?,
            SECTION_SVSM_CAA => set_page(&mut metadata.calling_area_gpa, "SVSM calling area")?,
            _ => return Err(FirmwareError::UnknownSection { index, kind }),
        }
    }
    metadata.prevalidated = merge_ranges(ranges);
    if metadata.prevalidated.len() > MAX_FIRMWARE_RANGES {
        return Err(FirmwareError::TooManyRanges);
    }
    Ok(metadata)
}

/// Sorts ranges and merges those that overlap or touch.
fn merge_ranges(mut ranges: Vec<MemoryRange>) -> Vec<MemoryRange> {
    ranges.retain(|r| r.size > 0);
    ranges.sort_by_key(|r| r.base);
    let mut merged: Vec<MemoryRange> = Vec::new();
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.base <= last.base + last.size => {
                let end = (last.base + last.size).max(range.base + range.size);
                last.size = end - last.base;
            }
            _ => merged.push(range),
        }
    }
    merged
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A synthetic 64 KiB firmware image with a GUIDed table holding an
    /// unrelated entry and the SEV metadata entry, and the "ASEV" block
    /// with the given sections (base, size, type).
    pub fn synthetic_ovmf(sections: &[(u32, u32, u32)]) -> Vec<u8> {
        let size = 0x1_0000;
        let mut image = vec![0xffu8; size];
        // ASEV block at 0x8000.
        let metadata_at = 0x8000;
        let mut asev = Vec::new();
        asev.extend_from_slice(b"ASEV");
        asev.extend_from_slice(&(16 + 12 * sections.len() as u32).to_le_bytes());
        asev.extend_from_slice(&1u32.to_le_bytes());
        asev.extend_from_slice(&(sections.len() as u32).to_le_bytes());
        for &(base, len, kind) in sections {
            for v in [base, len, kind] {
                asev.extend_from_slice(&v.to_le_bytes());
            }
        }
        image[metadata_at..metadata_at + asev.len()].copy_from_slice(&asev);
        // GUIDed table, built forwards: [other entry][SEV entry][footer].
        let mut table = Vec::new();
        let other_guid = guid_bytes(
            0x00f771de,
            0x1a7e,
            0x4fcb,
            [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e],
        );
        table.extend_from_slice(&0x80b004u32.to_le_bytes());
        table.extend_from_slice(&(4u16 + 18).to_le_bytes());
        table.extend_from_slice(&other_guid);
        table.extend_from_slice(&((size - metadata_at) as u32).to_le_bytes());
        table.extend_from_slice(&(4u16 + 18).to_le_bytes());
        table.extend_from_slice(&SEV_METADATA_GUID);
        let table_len = table.len() as u16 + 18;
        table.extend_from_slice(&table_len.to_le_bytes());
        table.extend_from_slice(&TABLE_FOOTER_GUID);
        let end = size - TABLE_END_FROM_IMAGE_END;
        image[end - table.len()..end].copy_from_slice(&table);
        image
    }

    /// The sections Debian trixie's OVMF 2025.02 carries (environment.md §5.3).
    pub const TRIXIE_SECTIONS: [(u32, u32, u32); 6] = [
        (0x80_0000, 0x9000, 1),
        (0x80_A000, 0x3000, 1),
        (0x80_D000, 0x1000, 2),
        (0x80_E000, 0x1000, 3),
        (0x80_F000, 0x1000, 4),
        (0x81_0000, 0x1_0000, 1),
    ];

    fn trixie_metadata() -> SevMetadata {
        SevMetadata {
            prevalidated: vec![
                MemoryRange { base: 0x80_0000, size: 0x9000 },
                MemoryRange { base: 0x80_A000, size: 0x3000 },
                MemoryRange { base: 0x81_0000, size: 0x1_0000 },
            ],
            secrets_gpa: 0x80_D000,
            cpuid_gpa: 0x80_E000,
            calling_area_gpa: 0x80_F000,
        }
    }

    #[test]
    fn parses_synthetic_metadata() {
        let image = synthetic_ovmf(&TRIXIE_SECTIONS);
        assert_eq!(parse_sev_metadata(&image), Ok(trixie_metadata()));
    }

    #[test]
    fn merges_touching_ranges_and_kernel_hashes() {
        let image = synthetic_ovmf(&[
            (0x80_0000, 0x1000, 1),
            (0x80_1000, 0x1000, 0x10),
            (0x90_0000, 0x1000, 1),
            (0x80_0800, 0x100, 1),
        ]);
        let metadata = parse_sev_metadata(&image).unwrap();
        assert_eq!(
            metadata.prevalidated,
            vec![
                MemoryRange { base: 0x80_0000, size: 0x2000 },
                MemoryRange { base: 0x90_0000, size: 0x1000 }
            ]
        );
    }

    #[test]
    fn rejects_malformed_images() {
        assert_eq!(parse_sev_metadata(&[0; 100]), Err(FirmwareError::BadSize(100)));
        assert_eq!(parse_sev_metadata(&vec![0; 0x1000]), Err(FirmwareError::NoGuidTable));
        let good = synthetic_ovmf(&TRIXIE_SECTIONS);
        let end = good.len() - TABLE_END_FROM_IMAGE_END;

        let mut short_table = good.clone();
        short_table[end - 18..end - 16].copy_from_slice(&0xffffu16.to_le_bytes());
        assert_eq!(parse_sev_metadata(&short_table), Err(FirmwareError::BadGuidTable("length")));

        let mut bad_entry = good.clone();
        bad_entry[end - 36..end - 34].copy_from_slice(&3u16.to_le_bytes());
        assert_eq!(
            parse_sev_metadata(&bad_entry),
            Err(FirmwareError::BadGuidTable("entry length"))
        );

        let mut bad_offset = good.clone();
        bad_offset[end - 40..end - 36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse_sev_metadata(&bad_offset), Err(FirmwareError::BadSevMetadata(_))));

        let mut bad_signature = good.clone();
        bad_signature[0x8000] = b'X';
        assert!(matches!(
            parse_sev_metadata(&bad_signature),
            Err(FirmwareError::BadSevMetadata(_))
        ));

        let mut bad_count = good.clone();
        bad_count[0x800c..0x8010].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(parse_sev_metadata(&bad_count), Err(FirmwareError::BadSevMetadata(_))));

        let unknown = synthetic_ovmf(&[(0x80_0000, 0x1000, 9)]);
        assert_eq!(
            parse_sev_metadata(&unknown),
            Err(FirmwareError::UnknownSection { index: 0, kind: 9 })
        );
        let twice = synthetic_ovmf(&[(0x80_0000, 0x1000, 2), (0x80_1000, 0x1000, 2)]);
        assert_eq!(parse_sev_metadata(&twice), Err(FirmwareError::DuplicatePage("secrets")));
        let many: Vec<_> = (0..9).map(|i| (0x80_0000 + i * 0x2000, 0x1000, 1)).collect();
        assert_eq!(parse_sev_metadata(&synthetic_ovmf(&many)), Err(FirmwareError::TooManyRanges));
    }

    #[test]
    fn never_panics_on_truncated_or_shifted_images() {
        let good = synthetic_ovmf(&TRIXIE_SECTIONS);
        for cut in (0..good.len()).step_by(0x1000) {
            let _ = parse_sev_metadata(&good[cut..]);
        }
        for byte in 0..64 {
            let mut bad = good.clone();
            let at = good.len() - TABLE_END_FROM_IMAGE_END - 64 + byte;
            bad[at] ^= 0xA5;
            let _ = parse_sev_metadata(&bad);
        }
    }

    /// The real OVMF that `cargo xtask setup` unpacks (installed here if
    /// missing; the test fails if it cannot be).
    #[test]
    fn parses_the_real_ovmf() {
        let firmware = crate::image_tests::real_ovmf();
        assert_eq!(firmware.sev, Some(trixie_metadata()));
        assert_eq!(firmware.image.len(), 0x40_0000);
    }
}
