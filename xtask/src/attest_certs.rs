//! The development attestation chain: a dev ARK -> ASK -> VCEK in the
//! certificate profiles AMD's key distribution service (KDS) uses, so that
//! tools written for real SNP reports verify the development PSP's reports
//! unchanged:
//!
//! - ARK and ASK: RSA-4096, self-signed ARK, RSASSA-PSS with SHA-384, MGF1
//!   SHA-384, salt 48; ARK: key usage keyCertSign + cRLSign (critical), SKI,
//!   basic constraints CA (critical); ASK: SKI, AKI, CA with pathlen 0
//!   (critical), key usage keyCertSign (critical). AMD's CRL distribution
//!   point is left out (there is no development CRL).
//! - VCEK: ECDSA P-384 key, serial 0, signed by the ASK with RSASSA-PSS,
//!   and only AMD's extensions (OID arc 1.3.6.1.4.1.3704.1): structVersion,
//!   productName, the TCB SPLs (bootloader, TEE, SNP, reserved 4-7,
//!   microcode) and hwID = the 64-byte CHIP_ID, each extension value
//!   DER-encoded as AMD's are.
//!
//! Names follow AMD's (OU, C, L, ST, O, CN with CN `ARK-<product>`,
//! `SEV-<product>`, `SEV-VCEK`) but O says "not AMD", and every CN carries
//! "dev": nothing here can be mistaken for AMD's chain.
//!
//! The chain, VMPCK0 and the chip ID are generated once per build folder
//! (`build/attest/`) and handed to the development PSP by [`with_dev_psp`].
//!
//! Two things about that hand-over a reader must know:
//!
//! - It is **page data of the IGVM's native platform at a fixed GPA**
//!   (`abi::attestation::DEV_PSP_PARAMS_GPA`), not an IGVM parameter area
//!   (the issue asked for "an IGVM parameter"). A parameter area is filled
//!   by the loader (QEMU, the launcher) with facts it knows at load time;
//!   these keys are a build-time input no loader knows about. Page data
//!   with the native compatibility mask is loaded only on the dev platform
//!   and is not part of the SNP platform's pages, so the SNP launch digest
//!   stays what it is without it (checked on every build). The kernel reads
//!   the block there and wipes it before the guest gets the memory
//!   (`kernel::attest::dev_handover`).
//! - The MEASUREMENT it reports is **the image's SNP launch digest**, which
//!   covers the SNP platform's kernel (built without the development PSP),
//!   not the native kernel that actually runs on the dev platform (the
//!   native platform has no launch digest at all). It is chosen so that a
//!   development report is checked against the same expected value
//!   (`svsm.igvm.digest`) as a real one of the same image; it proves nothing
//!   about the code running in a development boot. Likewise the ID-block
//!   fields (FAMILY_ID, IMAGE_ID, GUEST_SVN, ID_KEY_DIGEST,
//!   AUTHOR_KEY_DIGEST) are what a real PSP would report after launching the
//!   file's SNP platform ([`LaunchIdentity::of_igvm`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use abi::attestation::{
    CERT_GUID_ARK, CERT_GUID_ASK, CERT_GUID_VCEK, DEV_PSP_PARAMS_MAGIC, DEV_PSP_PARAMS_MAX_SIZE,
    DEV_PSP_PARAMS_VERSION, DevPspParams, FirmwareVersion, Generation, TcbVersion, cert_table_len,
    write_cert_table,
};
use anyhow::{Context, Result, ensure};
use der::asn1::{BitString, Ia5String, Int, OctetString};
use der::{Decode, Encode, Sequence};
use p384::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use sha2::{Digest, Sha384};
use spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, ObjectIdentifier,
    SubjectPublicKeyInfoOwned,
};
use x509_cert::Certificate;
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::time::{Time, Validity};
use zerocopy::{FromZeros, IntoBytes};

/// The processor generation the development chain imitates.
pub const DEV_GENERATION: Generation = Generation::Genoa;
/// CPUID family/model/stepping of a Genoa part (family 0x19, model 0x11).
pub const DEV_CPUID: (u8, u8, u8) = (0x19, 0x11, 0x01);
/// The TCB the development VCEK certifies (values of a Genoa in the field).
pub const DEV_TCB: TcbVersion =
    TcbVersion { fmc: 0, bootloader: 9, tee: 0, snp: 23, microcode: 72 };
/// The SNP firmware version the development PSP claims.
pub const DEV_FIRMWARE: FirmwareVersion = FirmwareVersion { build: 4, minor: 55, major: 1 };
/// RSA key size of AMD's ARK and ASK.
pub const ARK_ASK_BITS: usize = 4096;

/// AMD's OID arc for the VCEK extensions.
const AMD_VCEK_ARC: &str = "1.3.6.1.4.1.3704.1";

/// The files of a development chain in its directory (snpguest's names).
pub const ARK_FILE: &str = "ark.pem";
/// The ASK certificate.
pub const ASK_FILE: &str = "ask.pem";
/// The VCEK certificate.
pub const VCEK_FILE: &str = "vcek.pem";
/// The VCEK private key (PKCS#8 PEM). Development only.
const VCEK_KEY_FILE: &str = "vcek-key.pem";
/// VMPCK0 (32 bytes) and the chip ID (64 bytes). Development only.
const SECRETS_FILE: &str = "dev-psp-secrets.bin";

/// A development chain and the development PSP's secrets.
pub struct DevChain {
    /// The ARK certificate (DER).
    pub ark: Vec<u8>,
    /// The ASK certificate (DER).
    pub ask: Vec<u8>,
    /// The VCEK certificate (DER).
    pub vcek: Vec<u8>,
    /// The VCEK's private key.
    pub vcek_key: p384::SecretKey,
    /// VMPCK0 shared by the SVSM and the development PSP.
    pub vmpck0: [u8; 32],
    /// The chip ID the VCEK certifies.
    pub chip_id: [u8; 64],
}

/// The build folder's development chain directory.
pub fn chain_dir(build_dir: &Path) -> PathBuf {
    build_dir.join("attest")
}

/// Loads the development chain of `dir`, creating it first if it does not
/// exist yet (RSA-4096 key generation takes a few seconds).
pub fn load_or_create(dir: &Path) -> Result<DevChain> {
    if !dir.join(SECRETS_FILE).exists() {
        create(dir, ARK_ASK_BITS, "dev")?;
    }
    load(dir)
}

/// Generates a new chain (`bits`-bit ARK/ASK, `tag` in every CN) and stores
/// it in `dir`, which must not hold one yet.
pub fn create(dir: &Path, bits: usize, tag: &str) -> Result<DevChain> {
    ensure!(
        !dir.join(SECRETS_FILE).exists(),
        "{} already holds a development chain",
        dir.display()
    );
    let chain = generate(bits, tag)?;
    store(&chain, dir)?;
    Ok(chain)
}

/// Generates a new chain (`bits`-bit ARK/ASK), valid from yesterday; `tag`
/// goes into every CN.
pub fn generate(bits: usize, tag: &str) -> Result<DevChain> {
    generate_valid_from(bits, tag, SystemTime::now() - Duration::from_secs(86400))
}

/// Generates a new chain whose certificates are valid from `not_before`
/// (ARK and ASK for 25 years, the VCEK for 7, as AMD's).
pub fn generate_valid_from(bits: usize, tag: &str, not_before: SystemTime) -> Result<DevChain> {
    let mut rng = rsa::rand_core::UnwrapErr(getrandom::SysRng);
    let ark_key = rsa::PrivateKey::new(&mut rng, bits).context("generating the ARK key")?;
    let ask_key = rsa::PrivateKey::new(&mut rng, bits).context("generating the ASK key")?;
    let vcek_key = <p384::SecretKey as rsa::Generate>::generate_from_rng(&mut rng);
    let mut vmpck0 = [0u8; 32];
    let mut chip_id = [0u8; 64];
    getrandom::fill(&mut vmpck0).context("random VMPCK0")?;
    getrandom::fill(&mut chip_id).context("random chip ID")?;

    let product = DEV_GENERATION.name();
    let ark_name = amd_style_name(&format!("ARK-{product}-{tag}"))?;
    let ask_name = amd_style_name(&format!("SEV-{product}-{tag}"))?;
    let vcek_name = amd_style_name(&format!("SEV-VCEK-{tag}"))?;
    let now = not_before;
    let years = |n: u64| now + Duration::from_secs(n * 365 * 86400);

    let ark_spki = rsa_spki(&ark_key)?;
    let ask_spki = rsa_spki(&ask_key)?;
    let ark_ski = key_id(&ark_spki);
    let ask_ski = key_id(&ask_spki);
    let ark = sign_certificate(
        &ark_key,
        Tbs {
            serial: &[0x01, 0x00, 0x00],
            issuer: ark_name.clone(),
            subject: ark_name.clone(),
            validity: validity(now, years(25))?,
            spki: ark_spki,
            extensions: vec![
                ext("2.5.29.15", true, &key_usage(&[5, 6]))?,
                ext("2.5.29.14", false, &OctetString::new(ark_ski.to_vec())?.to_der()?)?,
                ext("2.5.29.19", true, &basic_constraints(None)?)?,
            ],
        },
    )?;
    let ask = sign_certificate(
        &ark_key,
        Tbs {
            serial: &[0x01, 0x00, 0x01],
            issuer: ark_name,
            subject: ask_name.clone(),
            validity: validity(now, years(25))?,
            spki: ask_spki,
            extensions: vec![
                ext("2.5.29.14", false, &OctetString::new(ask_ski.to_vec())?.to_der()?)?,
                ext("2.5.29.35", false, &authority_key_id(&ark_ski)?)?,
                ext("2.5.29.19", true, &basic_constraints(Some(0))?)?,
                ext("2.5.29.15", true, &key_usage(&[5]))?,
            ],
        },
    )?;
    let vcek_spki = SubjectPublicKeyInfoOwned::from_der(
        vcek_key.public_key().to_public_key_der().context("VCEK public key")?.as_bytes(),
    )?;
    let vcek = sign_certificate(
        &ask_key,
        Tbs {
            serial: &[0x00],
            issuer: ask_name,
            subject: vcek_name,
            validity: validity(now, years(7))?,
            spki: vcek_spki,
            extensions: vcek_extensions(product, DEV_TCB, &chip_id)?,
        },
    )?;
    Ok(DevChain { ark, ask, vcek, vcek_key, vmpck0, chip_id })
}

pub(crate) fn store(chain: &DevChain, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (file, der) in [(ARK_FILE, &chain.ark), (ASK_FILE, &chain.ask), (VCEK_FILE, &chain.vcek)] {
        let pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der)?;
        fs::write(dir.join(file), pem)?;
    }
    let key = chain.vcek_key.to_pkcs8_pem(der::pem::LineEnding::LF)?;
    fs::write(dir.join(VCEK_KEY_FILE), key.as_bytes())?;
    let mut secrets = chain.vmpck0.to_vec();
    secrets.extend_from_slice(&chain.chip_id);
    fs::write(dir.join(SECRETS_FILE), secrets)?;
    Ok(())
}

fn load(dir: &Path) -> Result<DevChain> {
    let read_cert = |file: &str| -> Result<Vec<u8>> {
        let path = dir.join(file);
        let pem =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let (label, der) = der::pem::decode_vec(pem.as_bytes())
            .with_context(|| format!("{} is not a PEM file", path.display()))?;
        ensure!(label == "CERTIFICATE", "{} holds a {label}, not a certificate", path.display());
        Ok(der)
    };
    let key_path = dir.join(VCEK_KEY_FILE);
    let key_pem =
        fs::read_to_string(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
    let vcek_key = p384::SecretKey::from_pkcs8_pem(&key_pem)
        .with_context(|| format!("{} is not a P-384 PKCS#8 key", key_path.display()))?;
    let secrets = fs::read(dir.join(SECRETS_FILE))?;
    ensure!(
        secrets.len() == 96,
        "{} is damaged: delete {} to make a new development chain",
        SECRETS_FILE,
        dir.display()
    );
    Ok(DevChain {
        ark: read_cert(ARK_FILE)?,
        ask: read_cert(ASK_FILE)?,
        vcek: read_cert(VCEK_FILE)?,
        vcek_key,
        vmpck0: secrets[..32].try_into().expect("checked length"),
        chip_id: secrets[32..].try_into().expect("checked length"),
    })
}

/// HOST_DATA of development launches. A real PSP reports the 32 bytes the
/// host gave LAUNCH_FINISH; on the dev platform there is no launch command
/// and the development PSP's facts are fixed when the image is built, so it
/// reports what the project's launcher and QEMU pass by default: zero.
pub const DEV_HOST_DATA: [u8; 32] = [0; 32];

/// What a PSP reports about the launched image (besides the platform's own
/// facts): what LAUNCH_START, LAUNCH_UPDATE and LAUNCH_FINISH gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchIdentity {
    /// The SNP launch digest (MEASUREMENT).
    pub measurement: [u8; 48],
    /// The guest policy.
    pub policy: u64,
    /// HOST_DATA (LAUNCH_FINISH).
    pub host_data: [u8; 32],
    /// FAMILY_ID of the ID block (zero without one).
    pub family_id: [u8; 16],
    /// IMAGE_ID of the ID block.
    pub image_id: [u8; 16],
    /// GUEST_SVN of the ID block.
    pub guest_svn: u32,
    /// SHA-384 of the ID key (AMD's 0x404-byte public-key structure).
    pub id_key_digest: [u8; 48],
    /// SHA-384 of the author key, if the ID block enables it.
    pub author_key_digest: [u8; 48],
}

impl Default for LaunchIdentity {
    /// All zero: no launch digest, policy or ID block.
    fn default() -> LaunchIdentity {
        LaunchIdentity {
            measurement: [0; 48],
            policy: 0,
            host_data: [0; 32],
            family_id: [0; 16],
            image_id: [0; 16],
            guest_svn: 0,
            id_key_digest: [0; 48],
            author_key_digest: [0; 48],
        }
    }
}

impl LaunchIdentity {
    /// What a PSP would report after launching the SNP platform of `file`
    /// with `host_data`: its launch digest and guest policy and, if it has
    /// an ID block, that block's fields and key digests. An ID block whose
    /// launch digest is not the file's is refused, as LAUNCH_FINISH would.
    pub fn of_igvm(file: &igvm::IgvmFile, host_data: [u8; 32]) -> Result<LaunchIdentity> {
        let measurement = crate::measure::measure_snp(file)?.digest;
        let policy = file
            .initializations()
            .iter()
            .find_map(|init| match init {
                igvm::IgvmInitializationHeader::GuestPolicy { policy, .. } => Some(*policy),
                _ => None,
            })
            .context("the IGVM file has no SNP guest policy")?;
        let mut identity = LaunchIdentity { measurement, policy, host_data, ..Default::default() };
        let id_block = file.directives().iter().find(|d| {
            matches!(d, igvm::IgvmDirectiveHeader::SnpIdBlock { compatibility_mask, .. }
                if compatibility_mask & abi::layout::SNP_PLATFORM_MASK != 0)
        });
        if let Some(igvm::IgvmDirectiveHeader::SnpIdBlock {
            ld,
            family_id,
            image_id,
            guest_svn,
            id_public_key,
            author_key_enabled,
            author_public_key,
            ..
        }) = id_block
        {
            ensure!(
                *ld == measurement,
                "the IGVM file's ID block is for launch digest {}, the file's is {}: an SNP host \
                 would refuse to launch it",
                crate::attest_verify::hex(ld),
                crate::attest_verify::hex(&measurement)
            );
            identity.family_id = *family_id;
            identity.image_id = *image_id;
            identity.guest_svn = *guest_svn;
            identity.id_key_digest = key_digest(id_public_key);
            if *author_key_enabled != 0 {
                identity.author_key_digest = key_digest(author_public_key);
            }
        }
        Ok(identity)
    }
}

/// ID_KEY_DIGEST / AUTHOR_KEY_DIGEST: SHA-384 of the key in AMD's 0x404-byte
/// public-key structure (CURVE u32 @0, QX[72] @4, QY[72] @0x4C, zero to the
/// end; virtee `sev`'s `generate_key_digest` hashes the same bytes). IGVM
/// stores the key with a reserved u32 after the curve, which AMD's layout
/// does not have.
pub fn key_digest(key: &igvm_defs::IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY) -> [u8; 48] {
    let mut amd = [0u8; 0x404];
    amd[..4].copy_from_slice(&key.curve.to_le_bytes());
    amd[4..0x4C].copy_from_slice(&key.qx);
    amd[0x4C..0x94].copy_from_slice(&key.qy);
    Sha384::digest(amd).into()
}

/// The development PSP's hand-over for an image launched as `launch`
/// describes: the bytes the IGVM builder puts at
/// `abi::attestation::DEV_PSP_PARAMS_GPA`, native platform only.
pub fn dev_psp_params(chain: &DevChain, launch: &LaunchIdentity) -> Result<Vec<u8>> {
    let tcb = DEV_TCB.encode(DEV_GENERATION);
    let mut params = DevPspParams::new_zeroed();
    params.magic = DEV_PSP_PARAMS_MAGIC;
    params.version = DEV_PSP_PARAMS_VERSION;
    params.vmpck0 = chain.vmpck0;
    params.vcek_private.copy_from_slice(&chain.vcek_key.to_bytes());
    params.chip_id = chain.chip_id;
    params.measurement = launch.measurement;
    params.policy = launch.policy;
    params.host_data = launch.host_data;
    params.family_id = launch.family_id;
    params.image_id = launch.image_id;
    params.guest_svn = launch.guest_svn;
    params.id_key_digest = launch.id_key_digest;
    params.author_key_digest = launch.author_key_digest;
    params.platform_info = abi::attestation::platform_info::SMT_EN;
    params.current_tcb = tcb;
    params.reported_tcb = tcb;
    params.committed_tcb = tcb;
    params.launch_tcb = tcb;
    (params.cpuid_family, params.cpuid_model, params.cpuid_stepping) = DEV_CPUID;
    params.current_version = DEV_FIRMWARE;
    params.committed_version = DEV_FIRMWARE;
    let table = chain.cert_table()?;
    params.certs_len = table.len() as u32;
    let mut bytes = params.as_bytes().to_vec();
    bytes.extend_from_slice(&table);
    ensure!(
        bytes.len() <= DEV_PSP_PARAMS_MAX_SIZE,
        "the development PSP hand-over ({} bytes) exceeds its {} bytes",
        bytes.len(),
        DEV_PSP_PARAMS_MAX_SIZE
    );
    Ok(bytes)
}

/// Adds the development PSP's hand-over to an assembled IGVM file: the
/// chain of `chain_dir` (created on first use), VMPCK0 and what a real PSP
/// would report for the file's SNP platform ([`LaunchIdentity::of_igvm`],
/// HOST_DATA [`DEV_HOST_DATA`]), as page data at `DEV_PSP_PARAMS_GPA` for
/// the native platform only. The SNP platform's pages, and so its launch
/// digest, do not change (checked).
///
/// Hook for the IGVM builder: call it on the assembled file of a build
/// whose native kernel has feature `dev-psp`, before serializing.
pub fn with_dev_psp(file: &igvm::IgvmFile, chain_dir: &Path) -> Result<igvm::IgvmFile> {
    let chain = load_or_create(chain_dir)?;
    let launch = LaunchIdentity::of_igvm(file, DEV_HOST_DATA)?;
    let params = dev_psp_params(&chain, &launch)?;
    let with = add_native_pages(file, abi::attestation::DEV_PSP_PARAMS_GPA, &params)?;
    let after = crate::measure::measure_snp(&with)?.digest;
    ensure!(
        launch.measurement == after,
        "adding the development PSP's pages changed the SNP launch digest"
    );
    Ok(with)
}

/// A copy of `file` with `data` as native-platform pages at `gpa`, placed
/// so that page directives stay in ascending GPA order.
fn add_native_pages(file: &igvm::IgvmFile, gpa: u64, data: &[u8]) -> Result<igvm::IgvmFile> {
    use igvm::IgvmDirectiveHeader;
    use igvm_defs::{IgvmPageDataFlags, IgvmPageDataType};
    let page_size = abi::layout::PAGE_SIZE;
    let end = gpa + data.len().div_ceil(page_size as usize) as u64 * page_size;
    let mut directives = file.directives().to_vec();
    let overlapping = directives.iter().any(
        |d| matches!(d, IgvmDirectiveHeader::PageData { gpa: at, .. } if (gpa..end).contains(at)),
    );
    ensure!(!overlapping, "the IGVM file already has pages at {gpa:#x}..{end:#x}");
    let at = directives
        .iter()
        .position(|d| match d {
            IgvmDirectiveHeader::PageData { gpa: at, .. } => *at > gpa,
            IgvmDirectiveHeader::X64NativeVpContext { .. }
            | IgvmDirectiveHeader::SnpVpContext { .. } => true,
            _ => false,
        })
        .unwrap_or(directives.len());
    let pages = data.chunks(page_size as usize).enumerate().map(|(i, chunk)| {
        IgvmDirectiveHeader::PageData {
            gpa: gpa + i as u64 * page_size,
            compatibility_mask: abi::layout::NATIVE_PLATFORM_MASK,
            flags: IgvmPageDataFlags::new(),
            data_type: IgvmPageDataType::NORMAL,
            data: chunk.to_vec(),
        }
    });
    directives.splice(at..at, pages);
    let revision = igvm::IgvmRevision::V2 { arch: igvm::Arch::X64, page_size: page_size as u32 };
    igvm::IgvmFile::new(
        revision,
        file.platforms().to_vec(),
        file.initializations().to_vec(),
        directives,
    )
    .context("the igvm crate rejected the file with the development PSP's pages")
}

impl DevChain {
    /// The extended-report certificate table (ARK, ASK, VCEK).
    pub fn cert_table(&self) -> Result<Vec<u8>> {
        let certs = [
            (CERT_GUID_ARK, self.ark.as_slice()),
            (CERT_GUID_ASK, self.ask.as_slice()),
            (CERT_GUID_VCEK, self.vcek.as_slice()),
        ];
        let mut table = vec![0u8; cert_table_len(&certs)];
        write_cert_table(&certs, &mut table).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(table)
    }
}

/// RFC 5280 TBSCertificate, v3 (the fields this chain uses).
#[derive(Sequence)]
struct TbsCertificate {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    version: u8,
    serial: Int,
    signature: AlgorithmIdentifierOwned,
    issuer: Name,
    validity: Validity,
    subject: Name,
    spki: SubjectPublicKeyInfoOwned,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT")]
    extensions: Vec<Extension>,
}

/// RFC 5280 Certificate over an already-encoded TBSCertificate.
#[derive(Sequence)]
struct SignedCertificate {
    tbs: der::asn1::Any,
    algorithm: AlgorithmIdentifierOwned,
    signature: BitString,
}

struct Tbs<'a> {
    serial: &'a [u8],
    issuer: Name,
    subject: Name,
    validity: Validity,
    spki: SubjectPublicKeyInfoOwned,
    extensions: Vec<Extension>,
}

fn sign_certificate(issuer_key: &rsa::PrivateKey, tbs: Tbs<'_>) -> Result<Vec<u8>> {
    let signer = rsa::pss::SigningKey::<Sha384>::new(issuer_key.clone());
    let algorithm = signer.signature_algorithm_identifier()?;
    let tbs = TbsCertificate {
        version: 2,
        serial: Int::new(tbs.serial)?,
        signature: algorithm.clone(),
        issuer: tbs.issuer,
        validity: tbs.validity,
        subject: tbs.subject,
        spki: tbs.spki,
        extensions: tbs.extensions,
    }
    .to_der()?;
    let signature =
        signer.sign_with_rng(&mut rsa::rand_core::UnwrapErr(getrandom::SysRng), &tbs).to_vec();
    let der = SignedCertificate {
        tbs: der::asn1::Any::from_der(&tbs)?,
        algorithm,
        signature: BitString::from_bytes(&signature)?,
    }
    .to_der()?;
    // What we wrote must be a certificate a standard parser accepts.
    Certificate::from_der(&der).context("the generated certificate does not parse")?;
    Ok(der)
}

fn amd_style_name(cn: &str) -> Result<Name> {
    let name = format!(
        "CN={cn},O=SVSM development chain (not AMD),ST=CA,L=Santa Clara,C=US,OU=Engineering"
    );
    name.parse().with_context(|| format!("building the name {name}"))
}

/// UTCTime before 2050, GeneralizedTime after, as RFC 5280 requires.
fn validity(from: SystemTime, to: SystemTime) -> Result<Validity> {
    Ok(Validity::new(Time::try_from(from)?, Time::try_from(to)?))
}

fn rsa_spki(key: &rsa::PrivateKey) -> Result<SubjectPublicKeyInfoOwned> {
    let der = rsa::pkcs8::EncodePublicKey::to_public_key_der(&key.to_public_key())?;
    Ok(SubjectPublicKeyInfoOwned::from_der(der.as_bytes())?)
}

/// A subject key identifier: SHA-1-sized prefix of SHA-384 of the key.
fn key_id(spki: &SubjectPublicKeyInfoOwned) -> [u8; 20] {
    let digest = Sha384::digest(spki.subject_public_key.raw_bytes());
    digest[..20].try_into().expect("SHA-384 has 48 bytes")
}

fn ext(oid: &str, critical: bool, value: &[u8]) -> Result<Extension> {
    Ok(Extension {
        extn_id: ObjectIdentifier::new(oid).with_context(|| format!("OID {oid}"))?,
        critical,
        extn_value: OctetString::new(value.to_vec())?,
    })
}

/// KeyUsage BIT STRING with the given bits set (5 keyCertSign, 6 cRLSign).
fn key_usage(bits: &[u8]) -> Vec<u8> {
    let mut byte = 0u8;
    for &bit in bits {
        byte |= 0x80 >> bit;
    }
    let unused = byte.trailing_zeros().min(7) as u8;
    vec![0x03, 0x02, unused, byte]
}

fn basic_constraints(path_len: Option<u8>) -> Result<Vec<u8>> {
    #[derive(Sequence)]
    struct BasicConstraints {
        ca: bool,
        #[asn1(optional = "true")]
        path_len: Option<u8>,
    }
    Ok(BasicConstraints { ca: true, path_len }.to_der()?)
}

fn authority_key_id(key_id: &[u8]) -> Result<Vec<u8>> {
    #[derive(Sequence)]
    struct AuthorityKeyIdentifier {
        #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
        key_id: OctetString,
    }
    Ok(AuthorityKeyIdentifier { key_id: OctetString::new(key_id.to_vec())? }.to_der()?)
}

/// AMD's VCEK extensions, in AMD's order.
pub fn vcek_extensions(
    product: &str,
    tcb: TcbVersion,
    chip_id: &[u8; 64],
) -> Result<Vec<Extension>> {
    let int = |value: u8| -> Result<Vec<u8>> { Ok(u32::from(value).to_der()?) };
    let amd = |suffix: &str, value: &[u8]| ext(&format!("{AMD_VCEK_ARC}.{suffix}"), false, value);
    Ok(vec![
        amd("1", &int(0)?)?,
        amd("2", &Ia5String::new(product)?.to_der()?)?,
        amd("3.1", &int(tcb.bootloader)?)?,
        amd("3.2", &int(tcb.tee)?)?,
        amd("3.4", &int(0)?)?,
        amd("3.5", &int(0)?)?,
        amd("3.6", &int(0)?)?,
        amd("3.7", &int(0)?)?,
        amd("3.3", &int(tcb.snp)?)?,
        amd("3.8", &int(tcb.microcode)?)?,
        amd("4", chip_id)?,
    ])
}

#[cfg(test)]
pub(crate) mod tests;
