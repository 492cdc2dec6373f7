//! The SNP launch sequence and run-time exits against the recording fake.

use super::fake::{Call, FakeSnp};
use super::*;
use crate::igvm_load::IdBlockDirective;
use crate::sample::{self, SNP_MASK};
use crate::vcpu::scripted::Step;

const MEMORY: u64 = 512 << 20;

fn options() -> SnpOptions {
    SnpOptions {
        memory: MEMORY,
        cpus: 1,
        timeout: Duration::from_secs(60),
        host_data: [0xAB; 32],
        planes: PlanesMode::Auto,
    }
}

fn launched(fake: &mut FakeSnp, igvm: &[u8]) -> (Result<(), SnpError>, GuestMemory) {
    let prepared = prepare(igvm, &options()).unwrap();
    let mut memory = GuestMemory::new(&prepared.layout).unwrap();
    let result = launch(fake, &prepared, &mut memory, &[0xAB; 32]);
    (result, memory)
}

fn update(gpa: u64, page_type: u8, head: &[u8]) -> [Call; 2] {
    let mut head = head.to_vec();
    head.resize(16, 0);
    [
        Call::SetMemoryAttributes { gpa, size: 4096, private: true },
        Call::LaunchUpdate { gpa, len: 4096, page_type, head },
    ]
}

#[test]
fn the_sample_file_launches_in_the_expected_sequence() {
    let code = sample::smoke_guest();
    let mut fake = FakeSnp::new();
    let (result, memory) = launched(&mut fake, &sample::sample_file(&code));
    result.unwrap();

    let mut cpuid_head = vec![3, 0, 0, 0];
    cpuid_head.resize(16, 0);
    let mut general = vec![1, 0, 0, 0, 1, 0, 0, 0];
    general.resize(16, 0);
    let mut map = vec![0; 8];
    map.extend_from_slice(&(MEMORY / 4096).to_le_bytes());
    let mut expected = vec![
        Call::SevInit2 { vmsa_features: 0, ghcb_version: 2 },
        Call::EnableExitHypercall(1 << 12),
        Call::AddMemoryRegion { slot: 0, gpa: 0, size: MEMORY },
        Call::LaunchStart { policy: 0x30000 },
        Call::CreateVcpu,
    ];
    expected.extend(update(sample::CODE_GPA, uapi::PAGE_TYPE_NORMAL, &code[..16]));
    expected.extend(update(sample::STACK_GPA, uapi::PAGE_TYPE_NORMAL, &[]));
    expected.extend(update(sample::SECRETS_GPA, uapi::PAGE_TYPE_SECRETS, &[]));
    expected.extend(update(sample::CPUID_GPA, uapi::PAGE_TYPE_CPUID, &cpuid_head));
    expected.extend(update(sample::GENERAL_PARAMS_GPA, uapi::PAGE_TYPE_UNMEASURED, &general));
    expected.extend(update(sample::MEMORY_MAP_GPA, uapi::PAGE_TYPE_UNMEASURED, &map));
    expected.extend(update(sample::UNMEASURED_GPA, uapi::PAGE_TYPE_UNMEASURED, b"unmeasured"));
    expected.extend([
        Call::SetMemoryAttributes {
            gpa: sample::REQUIRED_GPA,
            size: u64::from(sample::REQUIRED_SIZE),
            private: true,
        },
        Call::SetVcpuState {
            rip: sample::CODE_GPA,
            rsp: sample::STACK_GPA + 0x1000,
            cr0: 0x31,
            efer: 0x1000,
            cs: 8,
            xcr0: 1,
            pat: 0x0007_0406_0007_0406,
        },
        Call::LaunchFinish { id_block: false, ld_head: vec![], host_data: [0xAB; 32] },
    ]);
    assert_eq!(fake.calls(), expected);

    // The pages were copied into the shared mapping at their addresses,
    // and the CPUID page got KVM's values (leaf 1 eax from the fake).
    assert_eq!(memory.slice(sample::CODE_GPA, code.len() as u64).unwrap(), &code[..]);
    let leaf1_eax = memory.slice(sample::CPUID_GPA + 16 + 48 + 0x18, 4).unwrap();
    assert_eq!(leaf1_eax, &0x00a0_0f11u32.to_le_bytes());
}

#[test]
fn vmsa_features_and_the_id_block_reach_kvm() {
    let mut vmsa = sample::snp_vmsa(sample::CODE_GPA, 0);
    vmsa.sev_features = vmsa.sev_features.with_debug_swap(true);
    let mut directives = sample::sample_directives(&[0x90]);
    let last = directives.len() - 1;
    directives[last] = sample::snp_context(vmsa);
    let id = IdBlockDirective {
        ld: [0x5A; 48],
        family_id: [0; 16],
        image_id: [0; 16],
        version: 1,
        guest_svn: 0,
        id_key_algorithm: 1,
        author_key_algorithm: 0,
        author_key_enabled: false,
        id_block_signature: ([1; 72], [2; 72]),
        id_key: (2, [3; 72], [4; 72]),
        id_key_signature: ([0; 72], [0; 72]),
        author_key: (0, [0; 72], [0; 72]),
    };
    directives.insert(
        0,
        igvm::IgvmDirectiveHeader::SnpIdBlock {
            compatibility_mask: SNP_MASK,
            author_key_enabled: 0,
            reserved: [0; 3],
            ld: id.ld,
            family_id: id.family_id,
            image_id: id.image_id,
            version: id.version,
            guest_svn: id.guest_svn,
            id_key_algorithm: id.id_key_algorithm,
            author_key_algorithm: id.author_key_algorithm,
            id_key_signature: Box::new(igvm_defs::IGVM_VHS_SNP_ID_BLOCK_SIGNATURE {
                r_comp: [1; 72],
                s_comp: [2; 72],
            }),
            id_public_key: Box::new(igvm_defs::IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY {
                curve: 2,
                reserved: 0,
                qx: [3; 72],
                qy: [4; 72],
            }),
            author_key_signature: Box::new(igvm_defs::IGVM_VHS_SNP_ID_BLOCK_SIGNATURE {
                r_comp: [0; 72],
                s_comp: [0; 72],
            }),
            author_public_key: Box::new(igvm_defs::IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY {
                curve: 0,
                reserved: 0,
                qx: [0; 72],
                qy: [0; 72],
            }),
        },
    );
    let igvm =
        sample::serialize(sample::platforms(), vec![sample::policy(0x30000)], directives).unwrap();
    assert_eq!(required_vmsa_features(&igvm).unwrap(), 1 << 5);
    let mut fake = FakeSnp::new();
    let (result, _) = launched(&mut fake, &igvm);
    result.unwrap();
    let calls = fake.calls();
    assert_eq!(calls[0], Call::SevInit2 { vmsa_features: 1 << 5, ghcb_version: 2 });
    assert_eq!(
        calls.last(),
        Some(&Call::LaunchFinish { id_block: true, ld_head: vec![0x5A; 4], host_data: [0xAB; 32] })
    );
}

#[test]
fn a_corrected_cpuid_page_is_retried_once() {
    let igvm = sample::sample_file(&[0x90]);
    let mut corrected = sample::cpuid_leaf_list();
    corrected.resize(4096, 0);
    corrected[16 + 48 + 0x18] = 0x42;
    let mut fake = FakeSnp::new();
    fake.cpuid_correction = Some(corrected.clone());
    let (result, memory) = launched(&mut fake, &igvm);
    result.unwrap();
    let cpuid_updates: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::LaunchUpdate { page_type: 6, .. }))
        .collect();
    assert_eq!(cpuid_updates.len(), 2, "rejected once, then retried");
    // The retry used the firmware's corrected table.
    assert_eq!(memory.slice(sample::CPUID_GPA, 4096).unwrap(), &corrected[..]);

    let mut fake = FakeSnp::new();
    fake.cpuid_always_rejected = true;
    let (result, _) = launched(&mut fake, &igvm);
    let err = result.unwrap_err();
    assert!(err.to_string().contains("corrected CPUID page too"), "{err}");
}

#[test]
fn a_failed_finish_names_the_firmware_status() {
    let mut fake = FakeSnp::new();
    fake.finish_fw_error = Some(0x0B);
    let (result, _) = launched(&mut fake, &sample::sample_file(&[0x90]));
    let err = result.unwrap_err().to_string();
    assert!(err.contains("SNP_LAUNCH_FINISH"), "{err}");
    assert!(err.contains("bad measurement"), "{err}");
}

#[test]
fn options_and_vmsa_are_checked_before_any_kvm_call() {
    let igvm = sample::sample_file(&[0x90]);
    let mut two = options();
    two.cpus = 2;
    assert!(matches!(prepare(&igvm, &two), Err(SnpError::Cpus(2))));
    let mut vmsa = sample::snp_vmsa(0, 0);
    vmsa.dr0 = 1;
    let mut directives = sample::sample_directives(&[0x90]);
    let last = directives.len() - 1;
    directives[last] = sample::snp_context(vmsa);
    let igvm =
        sample::serialize(sample::platforms(), vec![sample::policy(0x30000)], directives).unwrap();
    let err = prepare(&igvm, &options()).unwrap_err();
    assert!(matches!(err, SnpError::Vmsa(_)), "{err}");
}

#[test]
fn run_time_page_state_changes_faults_and_exit() {
    let mut fake = FakeSnp::new();
    let (result, memory) = launched(&mut fake, &sample::sample_file(&[0x90]));
    result.unwrap();
    let before = fake.calls().len();
    fake.script(vec![
        Step::Hypercall(12, [0x40_0000, 16, 0x10, 0, 0, 0]),
        Step::Hypercall(12, [0x40_1000, 1, 0, 0, 0, 0]),
        Step::Hypercall(12, [0x40_0123, 1, 0, 0, 0, 0]),
        Step::Hypercall(12, [0x40_0000, u64::MAX, 0x10, 0, 0, 0]),
        Step::Hypercall(7, [0; 6]),
        Step::MemoryFault(0x50_0123, 0x10, 8),
        Step::MemoryFault(0x60_0000, 0x2000, 0),
        Step::Out(0x3f8, b"ok".to_vec()),
        Step::Out(0x501, vec![0x10]),
    ]);
    let mut console = Vec::new();
    let ending =
        run_launched(&mut fake, &memory, None, &mut console, Duration::from_secs(60)).unwrap();
    assert_eq!(ending.exit_status(), 33);
    assert_eq!(console, b"ok");
    assert_eq!(
        fake.returned(),
        &[0, 0, uapi::KVM_EINVAL_RET, uapi::KVM_EINVAL_RET, crate::vcpu::KVM_ENOSYS]
    );
    assert_eq!(
        fake.calls()[before..],
        [
            Call::SetMemoryAttributes { gpa: 0x40_0000, size: 0x10000, private: true },
            Call::SetMemoryAttributes { gpa: 0x40_1000, size: 0x1000, private: false },
            Call::SetMemoryAttributes { gpa: 0x50_0000, size: 0x1000, private: true },
            Call::SetMemoryAttributes { gpa: 0x60_0000, size: 0x2000, private: false },
        ]
    );
}

#[test]
fn planes_events_create_plane_vcpus_and_termination_is_decoded() {
    let mut fake = FakeSnp::new();
    let (result, memory) = launched(&mut fake, &sample::sample_file(&[0x90]));
    result.unwrap();
    let before = fake.calls().len();
    let mut event = vec![0u8; 16];
    event[0] = 1; // CREATE_VCPU
    event[4] = 2; // plane 2
    fake.script(vec![
        Step::Unsupported(planes::KVM_EXIT_PLANE_EVENT, event.clone()),
        Step::SystemEvent(6, vec![0x0003_1100]),
    ]);
    let mut console = Vec::new();
    let ending = run_launched(
        &mut fake,
        &memory,
        Some(planes::Planes::new()),
        &mut console,
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(
        fake.calls()[before..],
        [Call::CreatePlane(2), Call::CreatePlaneVcpu { plane: 2, apic_id: 0 }]
    );
    assert!(ending.to_string().contains("not running at VMPL0"), "{ending}");

    // Without planes the same exit is an error, not silently ignored.
    fake.script(vec![Step::Unsupported(planes::KVM_EXIT_PLANE_EVENT, event)]);
    let err =
        run_launched(&mut fake, &memory, None, &mut console, Duration::from_secs(60)).unwrap_err();
    assert!(err.to_string().contains("exit reason 44"), "{err}");
}

#[test]
fn host_data_parses_from_hex() {
    let text = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let data = parse_host_data(text).unwrap();
    assert_eq!(data[1], 0x11);
    assert_eq!(data[31], 0xff);
    assert!(parse_host_data("abc").is_err());
    assert!(parse_host_data(&"zz".repeat(32)).is_err());
}

/// The recorded launch measures to the igvm crate's digest, with the VMSA
/// KVM would build from the vCPU state the launcher set (not the file's).
#[test]
fn the_recorded_sequence_measures_to_the_igvm_crates_digest() {
    let igvm = sample::sample_file(&sample::smoke_guest());
    let mut fake = FakeSnp::new();
    let (result, _) = launched(&mut fake, &igvm);
    result.unwrap();
    let file = igvm::IgvmFile::new_from_binary(&igvm, None).unwrap();
    let expected = igvm::measurement::generate_snp_measurement(
        file.initializations(),
        file.directives(),
        SNP_MASK,
    )
    .unwrap();
    let state = fake.vcpu_state.clone().expect("the launch set vCPU 0's state");
    let vmsa = measure::kvm_vmsa(&state, 0).unwrap();
    use zerocopy::IntoBytes;
    assert_eq!(fake.updates.len(), 7);
    assert_eq!(measure::launch_digest(&fake.updates, vmsa.as_bytes()), expected);
}

/// The 96-byte ID block as the SNP ABI defines it (table "ID_BLOCK"): LD,
/// FAMILY_ID, IMAGE_ID, VERSION, GUEST_SVN, POLICY; built here from the
/// specification, independently of [`uapi::IdBlock`].
fn spec_id_block(ld: &[u8; 48], family: &[u8; 16], image: &[u8; 16], policy: u64) -> Vec<u8> {
    let mut block = ld.to_vec();
    block.extend_from_slice(family);
    block.extend_from_slice(image);
    block.extend_from_slice(&1u32.to_le_bytes());
    block.extend_from_slice(&0u32.to_le_bytes());
    block.extend_from_slice(&policy.to_le_bytes());
    block
}

/// A big-endian value as the firmware's little-endian, zero-padded 72 bytes.
fn firmware_72(big_endian: &[u8]) -> [u8; 72] {
    let mut out = [0u8; 72];
    out.iter_mut().zip(big_endian.iter().rev()).for_each(|(d, s)| *d = *s);
    out
}

/// The firmware's 72-byte little-endian form back to 48 big-endian bytes;
/// the padding must be zero.
fn from_firmware_72(bytes: &[u8]) -> Vec<u8> {
    assert_eq!(bytes.len(), 72);
    assert!(bytes[48..].iter().all(|b| *b == 0), "padding beyond 48 bytes is not zero");
    bytes[..48].iter().rev().copied().collect()
}

/// A sample file with an ID block for launch digest `ld`, signed with
/// `key` the way `cargo xtask build --id-key` signs (ECDSA P-384 over
/// SHA-384 of the 96-byte block).
fn signed_file(key: &p384::ecdsa::SigningKey, ld: &[u8; 48], code: &[u8]) -> Vec<u8> {
    use p384::ecdsa::signature::Signer;
    use p384::elliptic_curve::sec1::ToSec1Point;
    let (family, image) = (*b"rust-svsm\0\0\0\0\0\0\0", *b"svsm-igvm\0\0\0\0\0\0\0");
    let signature: p384::ecdsa::Signature =
        key.sign(&spec_id_block(ld, &family, &image, sample::POLICY));
    let (r, s) = signature.split_bytes();
    let point = key.verifying_key().as_affine().to_sec1_point(false);
    let (x, y) = (point.x().expect("uncompressed"), point.y().expect("uncompressed"));
    let no_signature = || {
        Box::new(igvm_defs::IGVM_VHS_SNP_ID_BLOCK_SIGNATURE { r_comp: [0; 72], s_comp: [0; 72] })
    };
    let mut directives = sample::sample_directives(code);
    directives.insert(
        0,
        igvm::IgvmDirectiveHeader::SnpIdBlock {
            compatibility_mask: SNP_MASK,
            author_key_enabled: 0,
            reserved: [0; 3],
            ld: *ld,
            family_id: family,
            image_id: image,
            version: 1,
            guest_svn: 0,
            id_key_algorithm: 1,
            author_key_algorithm: 0,
            id_key_signature: Box::new(igvm_defs::IGVM_VHS_SNP_ID_BLOCK_SIGNATURE {
                r_comp: firmware_72(&r),
                s_comp: firmware_72(&s),
            }),
            id_public_key: Box::new(igvm_defs::IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY {
                curve: 2,
                reserved: 0,
                qx: firmware_72(x),
                qy: firmware_72(y),
            }),
            author_key_signature: no_signature(),
            author_public_key: Box::new(igvm_defs::IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY {
                curve: 0,
                reserved: 0,
                qx: [0; 72],
                qy: [0; 72],
            }),
        },
    );
    sample::serialize(sample::platforms(), vec![sample::policy(sample::POLICY)], directives)
        .unwrap()
}

/// Verifies an ID_AUTH_INFO structure's ID-block signature over `block` as
/// the PSP does (SNP ABI table "ID_AUTH_INFO": ID_KEY_ALGO at 0, the
/// signature's R and S at 0x40 and 0x88, the ID key's CURVE at 0x240, QX at
/// 0x244, QY at 0x28C; ECDSA P-384 over SHA-384 of the 96-byte block).
fn psp_verifies(auth: &[u8], block: &[u8]) -> bool {
    use p384::ecdsa::signature::hazmat::PrehashVerifier;
    use sha2::{Digest, Sha384};
    assert_eq!(auth.len(), 4096);
    assert_eq!(block.len(), 96);
    assert_eq!(&auth[0..4], &1u32.to_le_bytes(), "ID_KEY_ALGO: ECDSA P-384 with SHA-384");
    assert_eq!(&auth[0x240..0x244], &2u32.to_le_bytes(), "ID key CURVE: P-384");
    let mut signature = from_firmware_72(&auth[0x40..0x88]);
    signature.extend(from_firmware_72(&auth[0x88..0xD0]));
    let mut point = vec![4u8];
    point.extend(from_firmware_72(&auth[0x244..0x28C]));
    point.extend(from_firmware_72(&auth[0x28C..0x2D4]));
    // An ID key that is not a curve point, or r/s out of range, fails.
    let Ok(key) = p384::ecdsa::VerifyingKey::from_sec1_bytes(&point) else { return false };
    let Ok(signature) = p384::ecdsa::Signature::from_slice(&signature) else { return false };
    key.verify_prehash(&Sha384::digest(block), &signature).is_ok()
}

#[test]
fn a_signed_id_block_reaches_launch_finish_as_the_psp_verifies_it() {
    // The xtask's test key (scalar 1..=48).
    let scalar: Vec<u8> = (1..=48).collect();
    let key = p384::ecdsa::SigningKey::from_slice(&scalar).unwrap();
    let code = sample::smoke_guest();
    // The digest this launch implies, signed into the file: the PSP would
    // find the ID block's LD equal to the launch digest (the ID block
    // itself is not measured) and the signature valid.
    let ld = measure::expected_launch_digest(&sample::sample_file(&code)).unwrap();
    let igvm = signed_file(&key, &ld, &code);
    assert_eq!(measure::expected_launch_digest(&igvm).unwrap(), ld);

    let mut fake = FakeSnp::new();
    let (result, _) = launched(&mut fake, &igvm);
    result.unwrap();
    let id = fake.finish_id.as_ref().expect("LAUNCH_FINISH got an ID block");
    let block = zerocopy::IntoBytes::as_bytes(&id.block);
    let auth = zerocopy::IntoBytes::as_bytes(&*id.auth);
    let (family, image) = (*b"rust-svsm\0\0\0\0\0\0\0", *b"svsm-igvm\0\0\0\0\0\0\0");
    assert_eq!(block, spec_id_block(&ld, &family, &image, sample::POLICY));
    assert!(!id.author_key);
    assert!(psp_verifies(auth, block), "the repacked ID auth does not verify");

    // The check can fail: a block with another policy or digest does not
    // verify, nor does the signature under another key.
    let mut other_policy = block.to_vec();
    other_policy[0x58] ^= 1;
    assert!(!psp_verifies(auth, &other_policy));
    let mut other_ld = block.to_vec();
    other_ld[0] ^= 1;
    assert!(!psp_verifies(auth, &other_ld));
    let mut other_key = auth.to_vec();
    other_key[0x244] ^= 1;
    assert!(!psp_verifies(&other_key, block));
}
