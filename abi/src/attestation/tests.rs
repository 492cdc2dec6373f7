//! Layout tests against known bytes: offsets from the SNP firmware ABI
//! tables (as restated in snp-svsm.md §6), GUID byte orders from their
//! published string forms, and round trips of the tables.

use zerocopy::{FromBytes, FromZeros, IntoBytes};

use super::*;

/// A report whose every field is written at its table offset by hand.
fn report_from_table_offsets() -> [u8; REPORT_SIZE] {
    let mut b = [0u8; REPORT_SIZE];
    let mut put =
        |offset: usize, bytes: &[u8]| b[offset..offset + bytes.len()].copy_from_slice(bytes);
    put(0x000, &3u32.to_le_bytes());
    put(0x004, &7u32.to_le_bytes());
    put(0x008, &0x30000u64.to_le_bytes());
    put(0x010, &[0x11; 16]);
    put(0x020, &[0x22; 16]);
    put(0x030, &2u32.to_le_bytes());
    put(0x034, &1u32.to_le_bytes());
    put(0x038, &[3, 0, 0, 0, 0, 0, 8, 0x73]);
    put(0x040, &1u64.to_le_bytes());
    put(0x048, &(1u32 << 2).to_le_bytes());
    put(0x050, &[0x55; 64]);
    put(0x090, &[0x90; 48]);
    put(0x0C0, &[0xC0; 32]);
    put(0x0E0, &[0xE0; 48]);
    put(0x110, &[0x11; 48]);
    put(0x140, &[0x40; 32]);
    put(0x160, &[0xFF; 32]);
    put(0x180, &[3, 0, 0, 0, 0, 0, 8, 0x73]);
    put(0x188, &[0x19, 0x11, 0x01]);
    put(0x1A0, &[0xA0; 64]);
    put(0x1E0, &[2, 0, 0, 0, 0, 0, 7, 0x70]);
    put(0x1E8, &[4, 0x34, 1]);
    put(0x1EC, &[3, 0x33, 1]);
    put(0x1F0, &[1, 0, 0, 0, 0, 0, 6, 0x60]);
    put(0x2A0, &[0x0A; 48]);
    put(0x2E8, &[0x0B; 48]);
    b
}

#[test]
fn report_fields_sit_at_the_table_offsets() {
    let bytes = report_from_table_offsets();
    let report = AttestationReport::read_from_bytes(&bytes).unwrap();
    assert_eq!(report.version, 3);
    assert_eq!(report.guest_svn, 7);
    assert_eq!(report.policy, 0x30000);
    assert_eq!(report.family_id, [0x11; 16]);
    assert_eq!(report.image_id, [0x22; 16]);
    assert_eq!(report.vmpl, 2);
    assert_eq!(report.signature_algo, SIGNATURE_ALGO_ECDSA_P384_SHA384);
    assert_eq!(report.platform_info, platform_info::SMT_EN);
    assert_eq!(report.signing_key(), key_info::SIGNING_KEY_VLEK);
    assert_eq!(report.report_data, [0x55; 64]);
    assert_eq!(report.measurement, [0x90; 48]);
    assert_eq!(report.host_data, [0xC0; 32]);
    assert_eq!(report.id_key_digest, [0xE0; 48]);
    assert_eq!(report.author_key_digest, [0x11; 48]);
    assert_eq!(report.report_id, [0x40; 32]);
    assert_eq!(report.report_id_ma, [0xFF; 32]);
    assert_eq!((report.cpuid_family, report.cpuid_model, report.cpuid_stepping), (0x19, 0x11, 1));
    assert_eq!(report.generation(), Some(Generation::Genoa));
    assert_eq!(report.chip_id, [0xA0; 64]);
    assert_eq!(report.current_version, FirmwareVersion { build: 4, minor: 0x34, major: 1 });
    assert_eq!(report.committed_version, FirmwareVersion { build: 3, minor: 0x33, major: 1 });
    let tcb = |raw| TcbVersion::decode(raw, Generation::Genoa);
    assert_eq!(
        tcb(report.current_tcb),
        TcbVersion { fmc: 0, bootloader: 3, tee: 0, snp: 8, microcode: 0x73 }
    );
    assert_eq!(tcb(report.reported_tcb), tcb(report.current_tcb));
    assert_eq!(tcb(report.committed_tcb).microcode, 0x70);
    assert_eq!(tcb(report.launch_tcb).snp, 6);
    assert_eq!(report.signature.r[..48], [0x0A; 48]);
    assert_eq!(report.signature.s[..48], [0x0B; 48]);
    assert_eq!(report.as_bytes(), &bytes);
    assert_eq!(report.signed_bytes(), &bytes[..0x2A0]);
}

#[test]
fn signature_components_are_stored_little_endian() {
    let mut r = [0u8; 48];
    let mut s = [0u8; 48];
    r[0] = 0x80; // most significant byte
    r[47] = 0x01;
    s[47] = 0x02;
    let signature = ReportSignature::from_big_endian(&r, &s);
    assert_eq!(signature.r[0], 0x01);
    assert_eq!(signature.r[47], 0x80);
    assert_eq!(signature.s[0], 0x02);
    assert!(signature.r[48..].iter().all(|&b| b == 0));
    assert_eq!(signature.to_big_endian(), Some((r, s)));
    let mut padded = signature;
    padded.s[50] = 1;
    assert_eq!(padded.to_big_endian(), None);
}

#[test]
fn tcb_versions_follow_each_generation_layout() {
    let tcb = TcbVersion { fmc: 1, bootloader: 2, tee: 3, snp: 4, microcode: 5 };
    assert_eq!(tcb.encode(Generation::Milan).to_le_bytes(), [2, 3, 0, 0, 0, 0, 4, 5]);
    assert_eq!(tcb.encode(Generation::Turin).to_le_bytes(), [1, 2, 3, 4, 0, 0, 0, 5]);
    assert_eq!(TcbVersion::decode(tcb.encode(Generation::Turin), Generation::Turin), tcb);
    let no_fmc = TcbVersion { fmc: 0, ..tcb };
    assert_eq!(TcbVersion::decode(tcb.encode(Generation::Genoa), Generation::Genoa), no_fmc);
}

#[test]
fn generations_from_cpuid() {
    assert_eq!(Generation::from_cpuid(0x19, 0x01), Some(Generation::Milan));
    assert_eq!(Generation::from_cpuid(0x19, 0x11), Some(Generation::Genoa));
    assert_eq!(Generation::from_cpuid(0x19, 0xA0), Some(Generation::Genoa));
    assert_eq!(Generation::from_cpuid(0x1A, 0x02), Some(Generation::Turin));
    assert_eq!(Generation::from_cpuid(0x17, 0x31), None);
}

#[test]
fn guest_message_header_matches_the_spec_table() {
    let header = GuestMessageHeader {
        authtag: [0xAA; 32],
        msg_seqno: 0x0102_0304_0506_0708,
        reserved0: [0; 8],
        algo: GUEST_MSG_ALGO_AES_256_GCM,
        hdr_version: GUEST_MSG_HEADER_VERSION,
        hdr_size: GUEST_MSG_HEADER_SIZE as u16,
        msg_type: msg_type::REPORT_REQ,
        msg_version: 1,
        msg_size: 0x60,
        reserved1: 0,
        msg_vmpck: 0,
        reserved2: [0; 35],
    };
    let mut expected = [0u8; 0x60];
    expected[..32].fill(0xAA);
    expected[0x20..0x28].copy_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
    expected[0x30..0x38].copy_from_slice(&[1, 1, 0x60, 0, 5, 1, 0x60, 0]);
    assert_eq!(header.as_bytes(), &expected);
    assert_eq!(header.aad(), &expected[0x30..]);
    assert_eq!(header.aad().len(), 48);
    assert_eq!(guest_msg_iv(0x0102_0304_0506_0708), [8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0]);
}

#[test]
fn report_request_and_response_layouts() {
    let request =
        ReportRequest { report_data: [7; 64], vmpl: 2, key_sel: KEY_SEL_VCEK, reserved: [0; 24] };
    let bytes = request.as_bytes();
    assert_eq!(&bytes[..64], &[7; 64]);
    assert_eq!(&bytes[0x40..0x48], &[2, 0, 0, 0, 1, 0, 0, 0]);
    let mut response = ReportResponse::new_zeroed();
    response.header.status = REPORT_STATUS_INVALID_PARAM;
    response.header.report_size = REPORT_SIZE as u32;
    response.report.version = 3;
    let bytes = response.as_bytes();
    assert_eq!(&bytes[..8], &[0x16, 0, 0, 0, 0xA0, 4, 0, 0]);
    assert_eq!(&bytes[0x20..0x24], &[3, 0, 0, 0]);
}

#[test]
fn guids_have_both_byte_orders() {
    // The GHCB certificate table stores GUIDs in RFC 4122 order.
    assert_eq!(
        CERT_GUID_VCEK.to_rfc4122_bytes(),
        [
            0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8,
            0xac, 0xcd
        ]
    );
    // The services manifest stores them in UEFI order.
    assert_eq!(
        SERVICES_MANIFEST_GUID.to_uefi_bytes(),
        [
            0xbb, 0x9e, 0x84, 0x63, 0x92, 0x3d, 0x70, 0x46, 0xa1, 0xff, 0x58, 0xf9, 0xc9, 0x4b,
            0x87, 0xbb
        ]
    );
    extern crate std;
    use std::string::ToString;
    assert_eq!(VTPM_SERVICE_GUID.to_string(), "c476f1eb-0123-45a5-9641-b4e7dde5bfe3");
    assert_eq!(CERT_GUID_ARK.to_string(), "c0b406a4-a803-4952-9743-3fb6014cd0ae");
    for guid in [CERT_GUID_ARK, CERT_GUID_ASK, CERT_GUID_CRL, VTPM_SERVICE_GUID] {
        assert_eq!(Guid::from_uefi_bytes(guid.to_uefi_bytes()), guid);
        assert_eq!(Guid::from_rfc4122_bytes(guid.to_rfc4122_bytes()), guid);
    }
}

#[test]
fn cert_table_round_trip_and_hostile_tables() {
    let certs: [(Guid, &[u8]); 3] =
        [(CERT_GUID_ARK, b"ark"), (CERT_GUID_ASK, b"ask!"), (CERT_GUID_VCEK, b"vcek-der")];
    let mut out = [0u8; 256];
    let len = write_cert_table(&certs, &mut out).unwrap();
    assert_eq!(len, 4 * 24 + 3 + 4 + 8);
    assert_eq!(&out[..16], &CERT_GUID_ARK.to_rfc4122_bytes());
    assert_eq!(&out[16..24], &[96, 0, 0, 0, 3, 0, 0, 0]);
    assert_eq!(find_certificate(&out[..len], CERT_GUID_VCEK), Ok(Some(&b"vcek-der"[..])));
    assert_eq!(find_certificate(&out[..len], CERT_GUID_CRL), Ok(None));
    assert_eq!(cert_table_extent(&out), Ok(len));
    assert_eq!(cert_table_extent(&[0u8; 24]), Ok(24));
    assert_eq!(write_cert_table(&certs, &mut [0u8; 50]), Err(TableError::TooSmall(len)));

    // No terminator inside the buffer.
    let mut unterminated = [0u8; 30];
    unterminated[..16].copy_from_slice(&CERT_GUID_ARK.to_rfc4122_bytes());
    unterminated[20] = 1; // offset 0, length 1: inside the buffer
    assert_eq!(find_certificate(&unterminated, CERT_GUID_CRL), Err(TableError::Unterminated));
    // An entry pointing outside the buffer.
    let mut bad = out;
    bad[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(find_certificate(&bad[..len], CERT_GUID_VCEK), Err(TableError::OutOfBounds(0)));
    // An all-zero buffer is an empty table.
    assert_eq!(cert_table_entries(&[0u8; 24]).count(), 0);
}

#[test]
fn manifest_round_trip_and_hostile_manifests() {
    let services: [(Guid, &[u8]); 2] = [(VTPM_SERVICE_GUID, b"ek-public"), (CERT_GUID_CRL, b"")];
    let mut out = [0u8; 128];
    let len = write_manifest(&services, &mut out).unwrap();
    assert_eq!(len, 24 + 2 * 24 + 9);
    assert_eq!(&out[16..24], &[len as u8, 0, 0, 0, 2, 0, 0, 0]);
    assert_eq!(&out[24..40], &VTPM_SERVICE_GUID.to_uefi_bytes());
    assert_eq!(&out[40..48], &[72, 0, 0, 0, 9, 0, 0, 0]);
    let parsed: std::vec::Vec<_> = manifest_entries(&out[..len]).unwrap().collect();
    assert_eq!(parsed, services.to_vec());

    assert_eq!(write_manifest(&services, &mut [0u8; 40]), Err(TableError::TooSmall(len)));
    // Length field not equal to the manifest's size.
    assert!(matches!(manifest_entries(&out[..len - 1]), Err(TableError::BadHeader)));
    let mut bad = out;
    bad[0] ^= 1;
    assert!(matches!(manifest_entries(&bad[..len]), Err(TableError::BadHeader)));
    let mut bad = out;
    bad[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(manifest_entries(&bad[..len]), Err(TableError::BadHeader)));
    let mut bad = out;
    bad[44..48].copy_from_slice(&100u32.to_le_bytes());
    assert!(matches!(manifest_entries(&bad[..len]), Err(TableError::OutOfBounds(0))));
}

extern crate std;

#[test]
fn attest_operations_match_the_spec_tables() {
    let op = AttestSingleServiceOp {
        services: AttestServicesOp {
            report_gpa: 0x1000,
            report_size: 0x2000,
            nonce_gpa: 0x3008,
            nonce_size: 64,
            manifest_gpa: 0x4000,
            manifest_size: 0x1000,
            certs_gpa: 0x5000,
            certs_size: 0x4000,
            ..Default::default()
        },
        service_guid: VTPM_SERVICE_GUID.to_uefi_bytes(),
        manifest_version: 0,
        reserved: 0,
    };
    let b = op.as_bytes();
    assert_eq!(b.len(), 0x58);
    assert_eq!(&b[0x00..0x10], &[0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&b[0x10..0x20], &[8, 0x30, 0, 0, 0, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&b[0x38..0x3C], &[0, 0x40, 0, 0]);
    assert_eq!(&b[0x40..0x50], &VTPM_SERVICE_GUID.to_uefi_bytes());
    assert!(op.services.reserved_clear());
    let mut dirty = op.services;
    dirty.reserved1[5] = 1;
    assert!(!dirty.reserved_clear());
}

#[test]
fn dev_psp_params_parse_checks_everything() {
    let mut params = DevPspParams::new_zeroed();
    params.magic = DEV_PSP_PARAMS_MAGIC;
    params.version = DEV_PSP_PARAMS_VERSION;
    params.certs_len = 5;
    let mut area = [0u8; 1024];
    area[..core::mem::size_of::<DevPspParams>()].copy_from_slice(params.as_bytes());
    area[core::mem::size_of::<DevPspParams>()..][..5].copy_from_slice(b"certs");
    let (parsed, certs) = DevPspParams::parse(&area).unwrap();
    assert_eq!(parsed, params);
    assert_eq!(certs, b"certs");

    assert_eq!(DevPspParams::parse(&area[..10]), Err(DevPspParamsError::Truncated));
    assert_eq!(DevPspParams::parse(&[0u8; 1024]), Err(DevPspParamsError::BadMagic));
    let mut bad = area;
    bad[8] = 2;
    assert_eq!(DevPspParams::parse(&bad), Err(DevPspParamsError::UnsupportedVersion(2)));
    let mut bad = area;
    bad[12..16].copy_from_slice(&0x10_0000u32.to_le_bytes());
    assert_eq!(DevPspParams::parse(&bad), Err(DevPspParamsError::BadCertsLength(0x10_0000)));
}
