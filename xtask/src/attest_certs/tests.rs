//! The development chain against AMD's KDS profile (compared with a real
//! AMD Turin VCEK from the `sev` crate's fixtures) and its hand-over.

use std::sync::OnceLock;
use std::time::UNIX_EPOCH;

use abi::attestation::find_certificate;
use der::Encode;

use super::*;
use crate::attest_verify::test_fixtures;

/// 2026-01-01T00:00:00Z: the test chains are valid from then (VCEK until
/// 2033, ARK and ASK until 2051), whenever the tests run.
pub fn test_chain_valid_from() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

/// One development chain (RSA-4096, as shipped) shared by the tests.
pub fn test_chain() -> &'static DevChain {
    static CHAIN: OnceLock<DevChain> = OnceLock::new();
    CHAIN.get_or_init(|| {
        generate_valid_from(ARK_ASK_BITS, "test", test_chain_valid_from())
            .expect("generating a development chain")
    })
}

/// A second, unrelated chain (RSA-2048 to save time: only its signatures
/// matter).
pub fn other_chain() -> &'static DevChain {
    static CHAIN: OnceLock<DevChain> = OnceLock::new();
    CHAIN.get_or_init(|| {
        generate_valid_from(2048, "other", test_chain_valid_from())
            .expect("generating a development chain")
    })
}

fn cert(der: &[u8]) -> Certificate {
    Certificate::from_der(der).unwrap()
}

fn extension(cert: &Certificate, oid: &str) -> Vec<u8> {
    let oid = ObjectIdentifier::new(oid).unwrap();
    let ext = cert.tbs_certificate().extensions().unwrap().iter().find(|e| e.extn_id == oid);
    ext.unwrap_or_else(|| panic!("no extension {oid}")).extn_value.as_bytes().to_vec()
}

#[test]
fn ark_and_ask_follow_amds_profile() {
    let chain = test_chain();
    let (ark, ask) = (cert(&chain.ark), cert(&chain.ask));
    assert_eq!(ark.tbs_certificate().issuer(), ark.tbs_certificate().subject());
    assert_eq!(ask.tbs_certificate().issuer(), ark.tbs_certificate().subject());
    assert_eq!(ark.tbs_certificate().serial_number().as_bytes(), &[1, 0, 0]);
    let key = <rsa::PublicKey as rsa::pkcs8::DecodePublicKey>::from_public_key_der(
        &ark.tbs_certificate().subject_public_key_info().to_der().unwrap(),
    )
    .unwrap();
    assert_eq!(rsa::traits::PublicKeyParts::size(&key) * 8, 4096);
    // keyCertSign + cRLSign, critical; CA, critical.
    assert_eq!(extension(&ark, "2.5.29.15"), [0x03, 0x02, 0x01, 0x06]);
    assert_eq!(extension(&ark, "2.5.29.19"), [0x30, 0x03, 0x01, 0x01, 0xFF]);
    // ASK: CA with pathlen 0, keyCertSign only.
    assert_eq!(extension(&ask, "2.5.29.19"), [0x30, 0x06, 0x01, 0x01, 0xFF, 0x02, 0x01, 0x00]);
    assert_eq!(extension(&ask, "2.5.29.15"), [0x03, 0x02, 0x02, 0x04]);
    let subject = ark.tbs_certificate().subject().to_string();
    assert!(subject.contains("CN=ARK-Genoa-test") && subject.contains("not AMD"), "{subject}");
}

#[test]
fn the_vcek_carries_amds_extensions_encoded_as_amds() {
    let chain = test_chain();
    let vcek = cert(&chain.vcek);
    assert_eq!(vcek.tbs_certificate().serial_number().as_bytes(), &[0]);
    let amd = |suffix: &str| extension(&vcek, &format!("1.3.6.1.4.1.3704.1.{suffix}"));
    assert_eq!(amd("1"), [0x02, 0x01, 0x00]);
    assert_eq!(amd("2"), b"\x16\x05Genoa");
    assert_eq!(amd("3.1"), [0x02, 0x01, DEV_TCB.bootloader]);
    assert_eq!(amd("3.3"), [0x02, 0x01, DEV_TCB.snp]);
    assert_eq!(amd("3.8"), [0x02, 0x01, DEV_TCB.microcode]);
    assert_eq!(amd("4"), chain.chip_id);
    let oids: Vec<String> = vcek
        .tbs_certificate()
        .extensions()
        .unwrap()
        .iter()
        .map(|e| e.extn_id.to_string())
        .collect();
    assert!(oids.iter().all(|oid| oid.starts_with("1.3.6.1.4.1.3704.1.")), "only AMD's: {oids:?}");
    assert!(vcek.tbs_certificate().extensions().unwrap().iter().all(|e| !e.critical));
}

#[test]
fn signature_algorithms_match_a_real_amd_vcek() {
    let fixtures = test_fixtures::sev_crate_dir();
    let amd_vcek = std::fs::read(fixtures.join("tests/certs_data/vcek_turin.der")).unwrap();
    let amd = cert(&amd_vcek);
    let chain = test_chain();
    for der in [&chain.ark, &chain.ask, &chain.vcek] {
        let ours = cert(der);
        assert_eq!(
            ours.signature_algorithm().to_der().unwrap(),
            amd.signature_algorithm().to_der().unwrap()
        );
    }
    // Integer SPLs above 0x7F need a leading zero byte, as AMD encodes them.
    let high = TcbVersion { microcode: 0xD5, ..DEV_TCB };
    let extensions = vcek_extensions("Genoa", high, &[0; 64]).unwrap();
    assert_eq!(extensions[9].extn_value.as_bytes(), [0x02, 0x02, 0x00, 0xD5]);
}

#[test]
fn the_chain_is_created_once_per_folder() {
    let dir = std::env::temp_dir().join(format!("attest-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    store(test_chain(), &dir).unwrap();
    let first = load_or_create(&dir).unwrap();
    let second = load_or_create(&dir).unwrap();
    assert_eq!(
        (&first.ark, &first.vcek, first.vmpck0),
        (&test_chain().ark, &test_chain().vcek, test_chain().vmpck0)
    );
    assert_eq!((&second.ask, second.chip_id), (&first.ask, first.chip_id));
    assert_eq!(second.vcek_key.to_bytes(), test_chain().vcek_key.to_bytes());
    std::fs::write(dir.join(SECRETS_FILE), b"short").unwrap();
    let error = load_or_create(&dir).err().unwrap().to_string();
    assert!(error.contains("delete"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_hand_over_carries_keys_platform_facts_and_certificates() {
    let chain = test_chain();
    let launch = LaunchIdentity {
        measurement: [0x77; 48],
        policy: 0x30000,
        host_data: [0x4D; 32],
        family_id: [0xFA; 16],
        image_id: [0x1A; 16],
        guest_svn: 5,
        id_key_digest: [0x1D; 48],
        author_key_digest: [0xAD; 48],
    };
    let bytes = dev_psp_params(chain, &launch).unwrap();
    let (params, table) = DevPspParams::parse(&bytes).unwrap();
    assert_eq!(params.vmpck0, chain.vmpck0);
    assert_eq!(&params.vcek_private[..], &chain.vcek_key.to_bytes()[..]);
    assert_eq!(params.measurement, [0x77; 48]);
    assert_eq!(params.policy, 0x30000);
    assert_eq!(params.host_data, [0x4D; 32]);
    assert_eq!((params.family_id, params.image_id, params.guest_svn), ([0xFA; 16], [0x1A; 16], 5));
    assert_eq!((params.id_key_digest, params.author_key_digest), ([0x1D; 48], [0xAD; 48]));
    assert_eq!(params.chip_id, chain.chip_id);
    assert_eq!(TcbVersion::decode(params.reported_tcb, DEV_GENERATION), DEV_TCB);
    assert_eq!(find_certificate(table, CERT_GUID_VCEK), Ok(Some(chain.vcek.as_slice())));
    assert_eq!(find_certificate(table, CERT_GUID_ARK), Ok(Some(chain.ark.as_slice())));
}

/// A small two-platform IGVM file (SNP and native), with `extra`
/// directives appended.
fn two_platform_file(extra: Vec<igvm::IgvmDirectiveHeader>) -> igvm::IgvmFile {
    use abi::layout::{NATIVE_PLATFORM_MASK, SNP_PLATFORM_MASK};
    use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader};
    use igvm_defs::{
        IGVM_VHS_SUPPORTED_PLATFORM, IgvmPageDataFlags, IgvmPageDataType, IgvmPlatformType,
    };
    let platform = |mask, platform_type, vtl| {
        IgvmPlatformHeader::SupportedPlatform(IGVM_VHS_SUPPORTED_PLATFORM {
            compatibility_mask: mask,
            highest_vtl: vtl,
            platform_type,
            platform_version: 1,
            shared_gpa_boundary: 0,
        })
    };
    let page = |gpa: u64, mask| IgvmDirectiveHeader::PageData {
        gpa,
        compatibility_mask: mask,
        flags: IgvmPageDataFlags::new(),
        data_type: IgvmPageDataType::NORMAL,
        data: vec![0xAB; 4096],
    };
    let mut directives = vec![
        page(0x10_0000, SNP_PLATFORM_MASK | NATIVE_PLATFORM_MASK),
        page(0xFFFF_F000, SNP_PLATFORM_MASK),
    ];
    directives.extend(extra);
    IgvmFile::new(
        igvm::IgvmRevision::V2 { arch: igvm::Arch::X64, page_size: 4096 },
        vec![
            platform(SNP_PLATFORM_MASK, IgvmPlatformType::SEV_SNP, 2),
            platform(NATIVE_PLATFORM_MASK, IgvmPlatformType::NATIVE, 0),
        ],
        vec![IgvmInitializationHeader::GuestPolicy {
            policy: 0x30000,
            compatibility_mask: SNP_PLATFORM_MASK,
        }],
        directives,
    )
    .unwrap()
}

/// The development PSP's hand-over pages of `file`, joined.
fn handover_of(file: &igvm::IgvmFile) -> Vec<u8> {
    let base = abi::attestation::DEV_PSP_PARAMS_GPA;
    let mut handover = Vec::new();
    for directive in file.directives() {
        if let igvm::IgvmDirectiveHeader::PageData { gpa, data, .. } = directive
            && (base..base + abi::attestation::DEV_PSP_PARAMS_MAX_SIZE as u64).contains(gpa)
        {
            handover.extend_from_slice(data);
        }
    }
    handover
}

#[test]
fn the_hand_over_goes_into_native_pages_without_changing_the_snp_digest() {
    use igvm::{IgvmDirectiveHeader, IgvmFile, IsolationType};
    let file = two_platform_file(Vec::new());
    let dir = std::env::temp_dir().join(format!("attest-hook-{}", std::process::id()));
    store(test_chain(), &dir).unwrap();
    let with = with_dev_psp(&file, &dir).unwrap();
    let gpas: Vec<u64> = with
        .directives()
        .iter()
        .filter_map(|d| match d {
            IgvmDirectiveHeader::PageData { gpa, .. } => Some(*gpa),
            _ => None,
        })
        .collect();
    assert!(gpas.windows(2).all(|w| w[0] < w[1]), "ascending: {gpas:x?}");
    assert!(gpas.contains(&abi::attestation::DEV_PSP_PARAMS_GPA));
    // Serialized and read back per platform: only the native one has the keys.
    let mut bytes = Vec::new();
    with.serialize(&mut bytes).unwrap();
    let has_keys = |isolation| {
        let parsed = IgvmFile::new_from_binary(&bytes, Some(isolation)).unwrap();
        parsed.directives().iter().any(|d| {
            matches!(d, IgvmDirectiveHeader::PageData { gpa, data, .. }
            if *gpa == abi::attestation::DEV_PSP_PARAMS_GPA && data.starts_with(b"SVSMDPSP"))
        })
    };
    assert!(has_keys(IsolationType::NotIsolated));
    assert!(!has_keys(IsolationType::Snp));
    let digest = crate::measure::measure_snp(&file).unwrap().digest;
    let handover = handover_of(&with);
    let (params, _) = DevPspParams::parse(&handover).unwrap();
    assert_eq!(params.measurement, digest, "MEASUREMENT is the file's SNP launch digest");
    assert_eq!((params.family_id, params.id_key_digest), ([0; 16], [0; 48]), "no ID block");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// ID_KEY_DIGEST computed here from the key itself: SHA-384 of AMD's
/// public-key structure, CURVE 2 then Qx and Qy little-endian in 72 bytes
/// each, zero to 0x404 bytes.
fn amd_key_digest(key: &p384::ecdsa::SigningKey) -> [u8; 48] {
    use p384::elliptic_curve::sec1::ToSec1Point;
    let point = key.verifying_key().as_affine().to_sec1_point(false);
    let mut bytes = 2u32.to_le_bytes().to_vec();
    for coordinate in [point.x().unwrap(), point.y().unwrap()] {
        let mut little = coordinate.to_vec();
        little.reverse();
        little.resize(72, 0);
        bytes.extend(little);
    }
    bytes.resize(0x404, 0);
    Sha384::digest(&bytes).into()
}

/// An image built with `--id-key`: the development PSP reports its ID
/// block's fields and key digest, as a real PSP would after LAUNCH_FINISH.
#[test]
fn the_dev_psp_reports_the_images_id_block() {
    use crate::id_block;
    let key = p384::ecdsa::SigningKey::from_slice(&[0x17; 48]).unwrap();
    let plain = two_platform_file(Vec::new());
    let digest = crate::measure::measure_snp(&plain).unwrap().digest;
    let snp = abi::layout::SNP_PLATFORM_MASK;
    let signed = two_platform_file(vec![id_block::directive(&key, &digest, 0x30000, snp)]);
    assert_eq!(crate::measure::measure_snp(&signed).unwrap().digest, digest, "not measured");

    let launch = LaunchIdentity::of_igvm(&signed, [0x4D; 32]).unwrap();
    assert_eq!(launch.measurement, digest);
    assert_eq!(launch.policy, 0x30000);
    assert_eq!(launch.host_data, [0x4D; 32]);
    assert_eq!((launch.family_id, launch.image_id), (id_block::FAMILY_ID, id_block::IMAGE_ID));
    assert_eq!(launch.guest_svn, id_block::GUEST_SVN);
    assert_eq!(launch.id_key_digest, amd_key_digest(&key));
    assert_eq!(launch.author_key_digest, [0; 48], "no author key");
    let other_key = p384::ecdsa::SigningKey::from_slice(&[0x18; 48]).unwrap();
    assert_ne!(launch.id_key_digest, amd_key_digest(&other_key));

    // Through the hand-over into a report of the kernel's development PSP.
    let dir = std::env::temp_dir().join(format!("attest-idblock-{}", std::process::id()));
    store(test_chain(), &dir).unwrap();
    let with = with_dev_psp(&signed, &dir).unwrap();
    let handover = handover_of(&with);
    let (params, table) = DevPspParams::parse(&handover).unwrap();
    let psp = kernel::attest::dev_psp::DevPsp::new(&params, table, [0; 32]).unwrap();
    let request = abi::attestation::ReportRequest {
        report_data: [0; 64],
        vmpl: 0,
        key_sel: abi::attestation::KEY_SEL_VCEK,
        reserved: [0; 24],
    };
    let report = psp.signed_report(&request);
    assert_eq!(report.measurement, digest);
    assert_eq!((report.family_id, report.image_id), (id_block::FAMILY_ID, id_block::IMAGE_ID));
    assert_eq!(report.guest_svn, id_block::GUEST_SVN);
    assert_eq!(report.id_key_digest, amd_key_digest(&key));
    assert_eq!(report.host_data, DEV_HOST_DATA);
    assert_eq!(report.key_info & abi::attestation::key_info::AUTHOR_KEY_EN, 0);
    std::fs::remove_dir_all(&dir).unwrap();

    // An ID block for another launch digest: LAUNCH_FINISH would refuse it.
    let stale = two_platform_file(vec![id_block::directive(&key, &[0x42; 48], 0x30000, snp)]);
    let error = LaunchIdentity::of_igvm(&stale, [0; 32]).unwrap_err().to_string();
    assert!(error.contains("would refuse to launch it"), "{error}");
}
