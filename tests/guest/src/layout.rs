//! Where the test guest puts things (guest-physical addresses), and the SEV
//! metadata its image carries so the SVSM (or an IGVM builder) knows where
//! to place the secrets page, the CPUID page and the calling area.
//!
//! | GPA                        | what                                           |
//! |----------------------------|------------------------------------------------|
//! | 4 GiB - 192 KiB .. 4 GiB   | the image: code and data (copied to RAM), reset code, SEV metadata, GUIDed table, reset vector |
//! | 0x0080_0000 + 256 KiB      | pre-validated RAM: page tables, GHCB page, the RAM copy of code and data, stacks |
//! | 0x0084_0000                | the guest's copy of the secrets page           |
//! | 0x0084_1000                | the CPUID page                                 |
//! | 0x0084_2000                | the boot calling area                          |
//! | 0x0200_0000 .. 0x0280_0000 | scratch RAM, validated only through PVALIDATE calls |
//!
//! The linker script (`guest.ld`) repeats the image and RAM numbers; the
//! guest checks its linker symbols against these constants when it starts.

use abi::layout::{LARGE_PAGE_SIZE, PAGE_SIZE};

/// Size of the firmware image.
pub const IMAGE_SIZE: u64 = 0x3_0000;
/// Where the image lies: it ends at 4 GiB, like OVMF.
pub const IMAGE_BASE: u64 = (1 << 32) - IMAGE_SIZE;

/// Pre-validated RAM (SEV metadata section type 1).
pub const PREVALIDATED_BASE: u64 = 0x0080_0000;
/// Size of the pre-validated RAM.
pub const PREVALIDATED_SIZE: u64 = 0x4_0000;
/// The PML4 the reset code builds.
pub const PML4_GPA: u64 = PREVALIDATED_BASE;
/// The PDPT (one; the first 4 GiB).
pub const PDPT_GPA: u64 = PREVALIDATED_BASE + PAGE_SIZE;
/// Four page directories of 2 MiB pages: the first 4 GiB, identity mapped.
pub const PD_GPA: u64 = PREVALIDATED_BASE + 2 * PAGE_SIZE;
/// A page table for the 2 MiB page holding the GHCB, built only on SNP
/// (the GHCB must be mapped shared, the rest of its 2 MiB private).
pub const GHCB_PT_GPA: u64 = PREVALIDATED_BASE + 6 * PAGE_SIZE;
/// The GHCB page (used only when SNP encryption is really active).
pub const GHCB_GPA: u64 = PREVALIDATED_BASE + 7 * PAGE_SIZE;
/// Where the code and data run (copied from the image by the reset code).
pub const RAM_IMAGE_BASE: u64 = PREVALIDATED_BASE + 8 * PAGE_SIZE;
/// End of the RAM the code, data, stacks may use.
pub const RAM_IMAGE_LIMIT: u64 = PREVALIDATED_BASE + PREVALIDATED_SIZE;

/// The guest's secrets page (SEV metadata section type 2).
pub const SECRETS_GPA: u64 = 0x0084_0000;
/// The CPUID page (section type 3).
pub const CPUID_GPA: u64 = 0x0084_1000;
/// The boot calling area (section type 4).
pub const CALLING_AREA_GPA: u64 = 0x0084_2000;

/// Scratch RAM the guest validates through PVALIDATE calls.
pub const SCRATCH_BASE: u64 = 0x0200_0000;
/// Size of the scratch RAM.
pub const SCRATCH_SIZE: u64 = 0x80_0000;
/// A 2 MiB page for the 2 MiB PVALIDATE cases.
pub const SCRATCH_LARGE_PAGE: u64 = SCRATCH_BASE;
/// A second 2 MiB page for the size-mismatch case.
pub const SCRATCH_LARGE_PAGE_2: u64 = SCRATCH_BASE + LARGE_PAGE_SIZE;
/// First of the 4 KiB scratch pages ([`scratch_page`]).
pub const SCRATCH_SMALL_BASE: u64 = SCRATCH_BASE + 2 * LARGE_PAGE_SIZE;
/// Number of 4 KiB scratch pages.
pub const SCRATCH_SMALL_PAGES: u64 = 64;

/// The 4 KiB scratch page `index` (panics at compile time if out of range
/// when used in a const).
pub const fn scratch_page(index: u64) -> u64 {
    assert!(index < SCRATCH_SMALL_PAGES);
    SCRATCH_SMALL_BASE + index * PAGE_SIZE
}

/// The APIC ID of the AP the guest creates (QEMU `-smp 2`).
pub const AP_APIC_ID: u32 = 1;

/// Offset, from the end of the image, of the "ASEV" SEV metadata block.
pub const SEV_METADATA_OFFSET_FROM_END: u64 = 0x200;
/// GPA of the SEV metadata block.
pub const SEV_METADATA_GPA: u64 = (1 << 32) - SEV_METADATA_OFFSET_FROM_END;
/// GPA of the GUIDed table's area (it ends 32 bytes before the end).
pub const GUID_TABLE_AREA_GPA: u64 = 0xFFFF_FF00;
/// The GUIDed table ends this many bytes before the end of the image.
pub const GUID_TABLE_END_FROM_END: u64 = 32;

/// SEV metadata section types (OVMF's numbering).
pub mod section {
    /// Pre-validated memory.
    pub const SNP_SEC_MEM: u32 = 1;
    /// The secrets page.
    pub const SNP_SECRETS: u32 = 2;
    /// The CPUID page.
    pub const CPUID: u32 = 3;
    /// The SVSM calling area.
    pub const SVSM_CAA: u32 = 4;
}

/// The sections the image declares: (base, size, type).
pub const SEV_SECTIONS: [(u64, u64, u32); 4] = [
    (PREVALIDATED_BASE, PREVALIDATED_SIZE, section::SNP_SEC_MEM),
    (SECRETS_GPA, PAGE_SIZE, section::SNP_SECRETS),
    (CPUID_GPA, PAGE_SIZE, section::CPUID),
    (CALLING_AREA_GPA, PAGE_SIZE, section::SVSM_CAA),
];

/// A GUID as stored in firmware tables (first three fields little-endian).
pub const fn guid_bytes(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]
}

/// GUID of the GUIDed table footer.
pub const TABLE_FOOTER_GUID: [u8; 16] =
    guid_bytes(0x96b5_82de, 0x1fb2, 0x45f7, [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d]);
/// GUID of the entry holding the SEV metadata offset.
pub const SEV_METADATA_GUID: [u8; 16] =
    guid_bytes(0xdc88_6566, 0x984a, 0x4798, [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc]);

/// Size of the GUIDed table: the SEV metadata entry (4 + 2 + 16) and the
/// footer (2 + 16).
pub const GUID_TABLE_SIZE: u64 = 22 + 18;

const _: () = {
    assert!(RAM_IMAGE_BASE > GHCB_GPA);
    assert!(
        PREVALIDATED_BASE.is_multiple_of(LARGE_PAGE_SIZE),
        "the GHCB page table covers one 2 MiB page"
    );
    assert!(GHCB_GPA / LARGE_PAGE_SIZE == PREVALIDATED_BASE / LARGE_PAGE_SIZE);
    assert!(SECRETS_GPA >= PREVALIDATED_BASE + PREVALIDATED_SIZE);
    assert!(SCRATCH_LARGE_PAGE.is_multiple_of(LARGE_PAGE_SIZE));
    assert!(SCRATCH_SMALL_BASE + SCRATCH_SMALL_PAGES * PAGE_SIZE <= SCRATCH_BASE + SCRATCH_SIZE);
    // Below the SVSM's kernel region, which starts at 128 MiB.
    assert!(SCRATCH_BASE + SCRATCH_SIZE <= abi::layout::KERNEL_REGION_BASE);
    assert!(IMAGE_SIZE <= abi::layout::FIRMWARE_MAX_SIZE);
};

/// Size of the "ASEV" block.
pub const SEV_METADATA_SIZE: usize = 16 + 12 * SEV_SECTIONS.len();

/// The "ASEV" block the image carries at [`SEV_METADATA_GPA`]: signature,
/// length, version 1, section count, then (base u32, size u32, type u32)
/// per section.
pub const fn sev_metadata_bytes() -> [u8; SEV_METADATA_SIZE] {
    let mut out = [0u8; SEV_METADATA_SIZE];
    put(&mut out, 0, u32::from_le_bytes(*b"ASEV"));
    put(&mut out, 4, SEV_METADATA_SIZE as u32);
    put(&mut out, 8, 1);
    put(&mut out, 12, SEV_SECTIONS.len() as u32);
    let mut i = 0;
    while i < SEV_SECTIONS.len() {
        let (base, size, kind) = SEV_SECTIONS[i];
        put(&mut out, 16 + 12 * i, base as u32);
        put(&mut out, 20 + 12 * i, size as u32);
        put(&mut out, 24 + 12 * i, kind);
        i += 1;
    }
    out
}

/// Size of the area at [`GUID_TABLE_AREA_GPA`] that holds the GUIDed table.
pub const GUID_TABLE_AREA_SIZE: usize =
    ((1u64 << 32) - GUID_TABLE_END_FROM_END - GUID_TABLE_AREA_GPA) as usize;

/// The area at [`GUID_TABLE_AREA_GPA`], zero but for the GUIDed table at
/// its end (so the table ends [`GUID_TABLE_END_FROM_END`] bytes before the
/// end of the image): `[offset u32][len u16][SEV metadata GUID]` then the
/// footer `[table length u16][footer GUID]`.
pub const fn guid_table_area() -> [u8; GUID_TABLE_AREA_SIZE] {
    let mut out = [0u8; GUID_TABLE_AREA_SIZE];
    let start = GUID_TABLE_AREA_SIZE - GUID_TABLE_SIZE as usize;
    put(&mut out, start, SEV_METADATA_OFFSET_FROM_END as u32);
    put16(&mut out, start + 4, 22);
    copy(&mut out, start + 6, &SEV_METADATA_GUID);
    put16(&mut out, start + 22, GUID_TABLE_SIZE as u16);
    copy(&mut out, start + 24, &TABLE_FOOTER_GUID);
    out
}

const fn put(out: &mut [u8], at: usize, value: u32) {
    copy(out, at, &value.to_le_bytes());
}

const fn put16(out: &mut [u8], at: usize, value: u16) {
    copy(out, at, &value.to_le_bytes());
}

const fn copy(out: &mut [u8], at: usize, bytes: &[u8]) {
    let mut i = 0;
    while i < bytes.len() {
        out[at + i] = bytes[i];
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_match_their_text_form() {
        // dc886566-984a-4798-a75e-5585a7bf67cc, as OVMF stores it.
        assert_eq!(SEV_METADATA_GUID[..4], [0x66, 0x65, 0x88, 0xdc]);
        assert_eq!(SEV_METADATA_GUID[4..8], [0x4a, 0x98, 0x98, 0x47]);
        assert_eq!(SEV_METADATA_GUID[8..], [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc]);
        // The footer bytes as they appear at the end of Debian's OVMF.fd.
        assert_eq!(
            TABLE_FOOTER_GUID,
            [
                0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a,
                0x08, 0x2d
            ]
        );
    }

    #[test]
    fn metadata_block_is_ovmf_shaped() {
        let m = sev_metadata_bytes();
        assert_eq!(&m[0..4], b"ASEV");
        assert_eq!(u32::from_le_bytes(m[4..8].try_into().unwrap()), 16 + 12 * 4);
        assert_eq!(u32::from_le_bytes(m[12..16].try_into().unwrap()), 4);
        // The calling area is the last section: base, size, type 4.
        assert_eq!(&m[52..64], &[0x00, 0x20, 0x84, 0, 0, 0x10, 0, 0, 4, 0, 0, 0]);
        let area = guid_table_area();
        assert_eq!(area.len(), 0xE0);
        let t = &area[0xE0 - 40..];
        assert_eq!(u16::from_le_bytes([t[22], t[23]]), 40);
        assert_eq!(u32::from_le_bytes(t[0..4].try_into().unwrap()), 0x200);
        assert_eq!(&t[24..], &TABLE_FOOTER_GUID);
    }
}
