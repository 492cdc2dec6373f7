//! The ACPI description of the CRB device, for the guest firmware to
//! publish.
//!
//! Linux's `tpm_crb` binds only through ACPI: a TPM2 table (start method
//! "Command Response Buffer", the control area's address) and a device with
//! `_HID "MSFT0101"` whose `_CRS` covers the CRB page. Stock OVMF publishes
//! neither (it installs what QEMU's table loader hands it, and QEMU describes
//! only its own TPM devices), so on the dev platform the SVSM adds them to
//! QEMU's: two fw_cfg files and four `etc/table-loader` commands that the
//! platform's fw_cfg filter serves (QEMU's hw/acpi/bios-linker-loader.c
//! format, as OVMF's AcpiPlatformDxe processes it):
//! - ALLOCATE [`TABLES_FILE`] (the TPM2 table, then the SSDT) and
//!   [`POINTERS_FILE`] (two 8-byte fields holding the tables' offsets);
//! - ADD_POINTER from each field to [`TABLES_FILE`]: OVMF relocates the
//!   field to the table's address and, in its second pass, installs every
//!   checksummed ACPI table an ADD_POINTER points at.

use alloc::vec;
use alloc::vec::Vec;

use zerocopy::{Immutable, IntoBytes, KnownLayout};

use super::device::{CRB_BASE, CRB_SIZE, CTRL_REQ};

/// fw_cfg file with the TPM2 table and the SSDT.
pub const TABLES_FILE: &str = "etc/svsm/tpm-acpi";
/// fw_cfg file with the pointer fields that make OVMF install the tables.
pub const POINTERS_FILE: &str = "etc/svsm/tpm-acpi-pointers";

/// TPM2 table start method: Command Response Buffer (TCG ACPI spec).
pub const START_METHOD_CRB: u32 = 7;
const OEM_ID: &[u8; 6] = b"SVSM  ";
const CREATOR_ID: &[u8; 4] = b"SVSM";

/// The standard ACPI table header (ACPI spec §5.2.6).
#[derive(Clone, Copy, Debug, IntoBytes, Immutable, KnownLayout)]
#[repr(C, packed)]
struct TableHeader {
    signature: [u8; 4],
    length: u32,
    revision: u8,
    checksum: u8,
    oem_id: [u8; 6],
    oem_table_id: [u8; 8],
    oem_revision: u32,
    creator_id: [u8; 4],
    creator_revision: u32,
}

const _: () = assert!(size_of::<TableHeader>() == 36);

/// The TPM2 table, revision 4 (TCG ACPI spec 1.3 §8.3), without the log
/// area: the firmware's event log reaches Linux through EFI.
#[derive(Clone, Copy, Debug, IntoBytes, Immutable, KnownLayout)]
#[repr(C, packed)]
struct Tpm2Table {
    header: TableHeader,
    platform_class: u16,
    reserved: u16,
    control_area: u64,
    start_method: u32,
    start_method_parameters: [u8; 12],
}

const _: () = assert!(size_of::<Tpm2Table>() == 64);

fn header(signature: &[u8; 4], revision: u8, table_id: &[u8; 8], length: usize) -> TableHeader {
    TableHeader {
        signature: *signature,
        length: length as u32,
        revision,
        checksum: 0,
        oem_id: *OEM_ID,
        oem_table_id: *table_id,
        oem_revision: 1,
        creator_id: *CREATOR_ID,
        creator_revision: 1,
    }
}

/// Sets byte 9 (the checksum) so that all bytes sum to zero.
fn checksum(table: &mut [u8]) {
    table[9] = 0;
    let sum = table.iter().fold(0u8, |sum, b| sum.wrapping_add(*b));
    table[9] = sum.wrapping_neg();
}

/// The TPM2 table: client platform, CRB start method, control area at
/// the CRB page + 0x40.
pub fn tpm2_table() -> Vec<u8> {
    let table = Tpm2Table {
        header: header(b"TPM2", 4, b"VTPM    ", size_of::<Tpm2Table>()),
        platform_class: 0,
        reserved: 0,
        control_area: CRB_BASE + CTRL_REQ,
        start_method: START_METHOD_CRB,
        start_method_parameters: [0; 12],
    };
    let mut bytes = table.as_bytes().to_vec();
    checksum(&mut bytes);
    bytes
}

/// AML PkgLength encoding of a package whose contents (after the
/// PkgLength itself) are `content` bytes long.
fn package_length(content: usize) -> Vec<u8> {
    // The length counts its own bytes: one byte up to 63, else 2-4 bytes
    // (first byte: count in bits 7-6, low nibble in bits 3-0).
    if content + 1 < 64 {
        return vec![(content + 1) as u8];
    }
    let extra =
        (1..=3).find(|n| content + 1 + n < 1 << (4 + 8 * n)).expect("AML packages < 256 MiB");
    let total = content + 1 + extra;
    let mut bytes = vec![((extra as u8) << 6) | (total & 0xF) as u8];
    bytes.extend((0..extra).map(|i| (total >> (4 + 8 * i)) as u8));
    bytes
}

fn package(opcode: &[u8], content: &[u8]) -> Vec<u8> {
    let mut out = opcode.to_vec();
    out.extend(package_length(content.len()));
    out.extend_from_slice(content);
    out
}

fn name(seg: &[u8; 4], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x08];
    out.extend_from_slice(seg);
    out.extend_from_slice(value);
    out
}

/// The SSDT: `Scope (\_SB) { Device (TPM) { Name (_HID, "MSFT0101")
/// Name (_STA, 0x0F) Name (_CRS, ResourceTemplate () { Memory32Fixed
/// (ReadWrite, CRB page) }) } }`.
pub fn ssdt() -> Vec<u8> {
    let mut resources = vec![0x86, 0x09, 0x00, 0x01];
    resources.extend_from_slice(&(CRB_BASE as u32).to_le_bytes());
    resources.extend_from_slice(&(CRB_SIZE as u32).to_le_bytes());
    resources.extend_from_slice(&[0x79, 0x00]);
    let mut buffer = vec![0x0A, resources.len() as u8];
    buffer.extend_from_slice(&resources);

    let mut device = b"TPM_".to_vec();
    device.extend(name(b"_HID", b"\x0DMSFT0101\x00"));
    device.extend(name(b"_STA", &[0x0A, 0x0F]));
    device.extend(name(b"_CRS", &package(&[0x11], &buffer)));
    let mut scope = b"\\_SB_".to_vec();
    scope.extend(package(&[0x5B, 0x82], &device));
    let body = package(&[0x10], &scope);

    let mut table = header(b"SSDT", 2, b"VTPM    ", 36 + body.len()).as_bytes().to_vec();
    table.extend(body);
    checksum(&mut table);
    table
}

/// The contents of [`TABLES_FILE`] and the offsets of the two tables in it.
pub fn tables_file() -> (Vec<u8>, [u64; 2]) {
    let mut file = tpm2_table();
    let ssdt_offset = file.len() as u64;
    file.extend(ssdt());
    (file, [0, ssdt_offset])
}

/// The contents of [`POINTERS_FILE`]: the tables' offsets, which OVMF turns
/// into their addresses.
pub fn pointers_file() -> Vec<u8> {
    let (_, offsets) = tables_file();
    offsets.iter().flat_map(|o| o.to_le_bytes()).collect()
}

/// One `etc/table-loader` entry (128 bytes).
#[derive(Clone, Copy, Debug, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct LoaderEntry {
    command: u32,
    body: [u8; 124],
}

const _: () = assert!(size_of::<LoaderEntry>() == 128);

const LOADER_ALLOCATE: u32 = 1;
const LOADER_ADD_POINTER: u32 = 2;
const LOADER_FILE_NAME: usize = 56;
/// ALLOCATE zone: anywhere (not the F segment).
const ZONE_HIGH: u8 = 1;

fn file_name(name: &str) -> [u8; LOADER_FILE_NAME] {
    let mut field = [0u8; LOADER_FILE_NAME];
    field[..name.len()].copy_from_slice(name.as_bytes());
    field
}

fn allocate(file: &str, alignment: u32) -> LoaderEntry {
    let mut body = [0u8; 124];
    body[..56].copy_from_slice(&file_name(file));
    body[56..60].copy_from_slice(&alignment.to_le_bytes());
    body[60] = ZONE_HIGH;
    LoaderEntry { command: LOADER_ALLOCATE, body }
}

fn add_pointer(pointer_file: &str, pointee_file: &str, offset: u32) -> LoaderEntry {
    let mut body = [0u8; 124];
    body[..56].copy_from_slice(&file_name(pointer_file));
    body[56..112].copy_from_slice(&file_name(pointee_file));
    body[112..116].copy_from_slice(&offset.to_le_bytes());
    body[116] = 8;
    LoaderEntry { command: LOADER_ADD_POINTER, body }
}

/// The loader commands to append to `etc/table-loader`.
pub fn loader_commands() -> Vec<u8> {
    let entries = [
        allocate(TABLES_FILE, 64),
        allocate(POINTERS_FILE, 8),
        add_pointer(POINTERS_FILE, TABLES_FILE, 0),
        add_pointer(POINTERS_FILE, TABLES_FILE, 8),
    ];
    entries.iter().flat_map(|e| e.as_bytes().to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums_to_zero(table: &[u8]) -> bool {
        table.iter().fold(0u8, |s, b| s.wrapping_add(*b)) == 0
    }

    /// `iasl -p tpm tpm.asl` (ACPICA 20200925) of the ASL in [`ssdt`]'s
    /// documentation, after its 36-byte header.
    const IASL_SSDT_BODY: [u8; 59] = [
        0x10, 0x3A, 0x5C, 0x5F, 0x53, 0x42, 0x5F, 0x5B, 0x82, 0x32, 0x54, 0x50, 0x4D, 0x5F, 0x08,
        0x5F, 0x48, 0x49, 0x44, 0x0D, 0x4D, 0x53, 0x46, 0x54, 0x30, 0x31, 0x30, 0x31, 0x00, 0x08,
        0x5F, 0x53, 0x54, 0x41, 0x0A, 0x0F, 0x08, 0x5F, 0x43, 0x52, 0x53, 0x11, 0x11, 0x0A, 0x0E,
        0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0xD4, 0xFE, 0x00, 0x10, 0x00, 0x00, 0x79, 0x00,
    ];

    #[test]
    fn ssdt_is_what_iasl_compiles() {
        let ssdt = ssdt();
        assert_eq!(ssdt.len(), 95);
        assert_eq!(&ssdt[36..], &IASL_SSDT_BODY);
        assert_eq!(&ssdt[..4], b"SSDT");
        assert_eq!(u32::from_le_bytes(ssdt[4..8].try_into().unwrap()), 95);
        assert_eq!(ssdt[8], 2);
        assert!(sums_to_zero(&ssdt));
    }

    #[test]
    fn tpm2_table_points_at_the_control_area_with_the_crb_start_method() {
        let table = tpm2_table();
        assert_eq!(table.len(), 64);
        assert_eq!(&table[..4], b"TPM2");
        assert_eq!(u32::from_le_bytes(table[4..8].try_into().unwrap()), 64);
        assert_eq!(table[8], 4);
        // Linux's struct acpi_table_tpm2: control_address at 40, start_method at 48.
        assert_eq!(u64::from_le_bytes(table[40..48].try_into().unwrap()), 0xFED4_0040);
        assert_eq!(u32::from_le_bytes(table[48..52].try_into().unwrap()), 7);
        assert!(sums_to_zero(&table));
    }

    #[test]
    fn package_lengths_follow_the_aml_encoding() {
        assert_eq!(package_length(0), [0x01]);
        assert_eq!(package_length(62), [0x3F]);
        // 63 content bytes: 2-byte length 65 = 0x41 -> 0x41 & 0xF | 1 << 6, 0x41 >> 4.
        assert_eq!(package_length(63), [0x41, 0x04]);
        // 0x1000 content bytes need two more: 0x1003 = 0x83, 0x00, 0x01.
        assert_eq!(package_length(0x1000), [0x83, 0x00, 0x01]);
    }

    #[test]
    fn loader_commands_allocate_both_files_and_point_at_both_tables() {
        let commands = loader_commands();
        assert_eq!(commands.len(), 4 * 128);
        let entry = |i: usize| &commands[i * 128..(i + 1) * 128];
        let name = |bytes: &[u8]| {
            let end = bytes.iter().position(|&b| b == 0).unwrap();
            core::str::from_utf8(&bytes[..end]).unwrap().to_string()
        };
        // ALLOCATE: command 1, file, alignment, zone 1.
        assert_eq!(&entry(0)[..4], &1u32.to_le_bytes());
        assert_eq!(name(&entry(0)[4..60]), TABLES_FILE);
        assert_eq!(&entry(0)[60..64], &64u32.to_le_bytes());
        assert_eq!(entry(0)[64], 1);
        assert_eq!(name(&entry(1)[4..60]), POINTERS_FILE);
        // ADD_POINTER: command 2, pointer file, pointee file, offset, size 8.
        for (i, offset) in [(2, 0u32), (3, 8)] {
            assert_eq!(&entry(i)[..4], &2u32.to_le_bytes());
            assert_eq!(name(&entry(i)[4..60]), POINTERS_FILE);
            assert_eq!(name(&entry(i)[60..116]), TABLES_FILE);
            assert_eq!(&entry(i)[116..120], &offset.to_le_bytes());
            assert_eq!(entry(i)[120], 8);
        }
        // The pointer fields start as offsets of checksummed tables.
        let (tables, offsets) = tables_file();
        assert_eq!(pointers_file(), [offsets[0].to_le_bytes(), offsets[1].to_le_bytes()].concat());
        for offset in offsets {
            let at = offset as usize;
            let length = u32::from_le_bytes(tables[at + 4..at + 8].try_into().unwrap()) as usize;
            assert!(sums_to_zero(&tables[at..at + length]));
        }
    }
}
