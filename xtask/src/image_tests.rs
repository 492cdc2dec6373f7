//! Tests of the whole image pipeline on stand-in inputs: a hand-assembled
//! stage2 that prints over COM1 and exits through the exit port, a small
//! kernel ELF, and OVMF (the real one `setup` unpacks, or a synthetic one).
//!
//! They check the launch digest against two independent implementations
//! (the igvm crate's and sev-snp-measure's), that the file parses for both
//! platforms, the KVM/QEMU rules, the ROM conversion on a fake machine, and
//! a real QEMU boot through the ROM loader.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use abi::layout::*;
use igvm::{IgvmDirectiveHeader, IgvmFile, IsolationType};
use igvm_defs::{IgvmPageDataFlags, IgvmPageDataType};
use romloader::fw_cfg::FwCfgPorts;
use romloader::loader::GuestMemory;

use crate::env::Env;
use crate::firmware::{self, GuestFirmware};
use crate::igvm_image::{self, ImageInputs};
use crate::kvm_rules::{self, RuleError};
use crate::measure::{self, PageType};
use crate::{builder, digest_check, qemu, setup};

const STAND_IN_MESSAGE: &str = "stand-in stage2: hello from the IGVM native platform\n";

/// A minimal ELF64 executable with one PT_LOAD segment of `code` at
/// `vaddr` (memory size `mem_size`), entry at `vaddr`.
fn elf_with_segment(vaddr: u64, code: &[u8], mem_size: u64, flags: u32) -> Vec<u8> {
    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&vaddr.to_le_bytes()); // entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // shoff
    elf.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, 1, 64, 0, 0] {
        elf.extend_from_slice(&v.to_le_bytes());
    }
    let offset = 64u64 + 56;
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&flags.to_le_bytes());
    for v in [offset, vaddr, vaddr, code.len() as u64, mem_size, 0x1000] {
        elf.extend_from_slice(&v.to_le_bytes());
    }
    elf.extend_from_slice(code);
    elf
}

/// The stand-in stage2: 32-bit code at STAGE2_BASE that writes `message`
/// to COM1, then EXIT_SUCCESS to the exit port, then halts. A second page
/// of bss checks that zero pages are loaded.
pub fn stand_in_stage2(message: &str) -> Vec<u8> {
    let mut code = Vec::new();
    for byte in message.bytes() {
        code.extend_from_slice(&[0x66, 0xBA]); // mov dx, imm16
        code.extend_from_slice(&SERIAL_PORT.to_le_bytes());
        code.extend_from_slice(&[0xB0, byte, 0xEE]); // mov al, byte; out dx, al
    }
    code.extend_from_slice(&[0x66, 0xBA]);
    code.extend_from_slice(&DEBUG_EXIT_PORT.to_le_bytes());
    code.extend_from_slice(&[0xB0, EXIT_SUCCESS, 0xEE]);
    code.extend_from_slice(&[0xF4, 0xEB, 0xFD]); // hlt; jmp hlt
    elf_with_segment(STAGE2_BASE, &code, 0x2000 + code.len() as u64, 5)
}

/// A small kernel stand-in: a valid ELF whose bytes vary, plus padding to
/// several pages (some of them zero).
fn stand_in_kernel() -> Vec<u8> {
    let code: Vec<u8> = (0..0x2800u32).map(|i| (i * 7 % 251) as u8 + 1).collect();
    let mut elf = elf_with_segment(KERNEL_VIRT_BASE, &code, 0x4000, 5);
    elf.resize(elf.len() + 0x2000, 0);
    elf.extend_from_slice(b"trailing section data");
    elf
}

fn env() -> Env {
    Env::discover().expect("workspace")
}

/// Tests run in parallel threads: install things once per process.
fn once<T: Clone>(cell: &'static OnceLock<T>, make: impl FnOnce() -> T) -> T {
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _guard = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    cell.get_or_init(make).clone()
}

/// The real OVMF (installed if missing, once per test process).
pub(crate) fn real_ovmf() -> GuestFirmware {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    let path = once(&PATH, || {
        setup::ensure_ovmf(&env())
            .expect("OVMF is needed for this test: `cargo xtask setup` installs it")
    });
    GuestFirmware::ovmf(&path).expect("parsing the real OVMF")
}

fn venv_python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    once(&PYTHON, || {
        setup::ensure_python_venv(&env())
            .expect("sev-snp-measure could not be installed into build/venv: this test needs it")
    })
}

fn ensure_qemu() {
    static QEMU: OnceLock<()> = OnceLock::new();
    once(&QEMU, || {
        setup::ensure_qemu(&env())
            .expect("QEMU is needed for this test: `cargo xtask setup` installs it");
    })
}

fn synthetic_firmware() -> GuestFirmware {
    let image = firmware::tests::synthetic_ovmf(&firmware::tests::TRIXIE_SECTIONS);
    let sev = firmware::parse_sev_metadata(&image).expect("synthetic metadata");
    GuestFirmware { name: "synthetic".into(), image, sev: Some(sev) }
}

fn assemble(
    firmware: Option<&GuestFirmware>,
    key: Option<&p384::ecdsa::SigningKey>,
) -> (IgvmFile, Vec<u8>) {
    let stage2 = stand_in_stage2(STAND_IN_MESSAGE);
    let kernel = stand_in_kernel();
    let inputs =
        ImageInputs { stage2_elf: &stage2, kernel_snp: &kernel, kernel_native: &kernel, firmware };
    let file = igvm_image::assemble(&inputs, key).expect("assembling");
    let bytes = igvm_image::serialize(&file).expect("serializing");
    let parsed = IgvmFile::new_from_binary(&bytes, None).expect("parsing back");
    (parsed, bytes)
}

fn test_key() -> p384::ecdsa::SigningKey {
    let scalar: Vec<u8> = (1..=48).collect();
    p384::ecdsa::SigningKey::from_slice(&scalar).expect("valid scalar")
}

fn reference_digest(file: &IgvmFile) -> [u8; 48] {
    digest_check::igvm_crate_digest(file).expect("the igvm crate measures the file")
}

#[test]
fn digest_equals_the_igvm_crate_measurement() {
    let ovmf = real_ovmf();
    let synthetic = synthetic_firmware();
    let key = test_key();
    for (firmware, key) in
        [(Some(&ovmf), None), (Some(&ovmf), Some(&key)), (Some(&synthetic), None), (None, None)]
    {
        let (file, _) = assemble(firmware, key);
        let ours = measure::measure_snp(&file).unwrap();
        assert_eq!(
            ours.digest,
            reference_digest(&file),
            "firmware {:?}",
            firmware.map(|f| &f.name)
        );
    }
    // The ID block does not change the digest, and carries it.
    let (plain, _) = assemble(Some(&ovmf), None);
    let (signed, _) = assemble(Some(&ovmf), Some(&key));
    let digest = measure::measure_snp(&plain).unwrap().digest;
    assert_eq!(measure::measure_snp(&signed).unwrap().digest, digest);
    let ld = signed.directives().iter().find_map(|d| match d {
        IgvmDirectiveHeader::SnpIdBlock { ld, .. } => Some(*ld),
        _ => None,
    });
    assert_eq!(ld, Some(digest));
}

#[test]
fn digest_changes_with_any_measured_byte() {
    let (file, _) = assemble(Some(&synthetic_firmware()), None);
    let base = measure::measure_snp(&file).unwrap().digest;
    let mut other_fw = synthetic_firmware();
    other_fw.image[0] ^= 1;
    let (changed, _) = assemble(Some(&other_fw), None);
    assert_ne!(measure::measure_snp(&changed).unwrap().digest, base);
}

#[test]
fn file_parses_for_both_platforms_with_the_layout() {
    let (_, bytes) = assemble(Some(&real_ovmf()), Some(&test_key()));
    let snp = IgvmFile::new_from_binary(&bytes, Some(IsolationType::Snp)).expect("SNP view");
    let native =
        IgvmFile::new_from_binary(&bytes, Some(IsolationType::NotIsolated)).expect("native view");

    let last = snp.directives().last().unwrap();
    assert!(matches!(last, IgvmDirectiveHeader::SnpVpContext { gpa: SNP_VMSA_GPA, .. }));
    let types = |file: &IgvmFile, t: IgvmPageDataType| -> Vec<u64> {
        file.directives()
            .iter()
            .filter_map(|d| match d {
                IgvmDirectiveHeader::PageData { gpa, data_type, .. } if *data_type == t => {
                    Some(*gpa)
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(types(&snp, IgvmPageDataType::SECRETS), vec![SECRETS_GPA]);
    assert_eq!(types(&snp, IgvmPageDataType::CPUID_DATA), vec![CPUID_GPA]);
    assert!(types(&native, IgvmPageDataType::SECRETS).is_empty());
    assert!(
        native
            .directives()
            .iter()
            .any(|d| matches!(d, IgvmDirectiveHeader::X64NativeVpContext { vp_index: 0, .. }))
    );
    assert!(
        !native.directives().iter().any(|d| matches!(d, IgvmDirectiveHeader::SnpVpContext { .. }))
    );

    // OVMF ends at 4 GiB on SNP and sits at the staging base on native.
    let normal_gpas = |file: &IgvmFile| types(file, IgvmPageDataType::NORMAL);
    let snp_pages = normal_gpas(&snp);
    assert_eq!(*snp_pages.last().unwrap(), (1 << 32) - PAGE_SIZE);
    assert!(snp_pages.contains(&((1 << 32) - 0x40_0000)));
    let native_pages = normal_gpas(&native);
    assert_eq!(*native_pages.last().unwrap(), FIRMWARE_STAGING_BASE + 0x40_0000 - PAGE_SIZE);
    // Stage2 stack pages are there as zero pages; the kernel ELF starts at its GPA.
    assert!(native_pages.contains(&STAGE2_STACK_BASE) && native_pages.contains(&KERNEL_ELF_GPA));
    assert!(snp.directives().iter().any(|d| matches!(
        d,
        IgvmDirectiveHeader::RequiredMemory { gpa: KERNEL_REGION_BASE, number_of_bytes, .. }
            if u64::from(*number_of_bytes) == KERNEL_REGION_SIZE
    )));
}

#[test]
fn built_file_obeys_kvm_and_qemu_rules() {
    let (file, _) = assemble(Some(&synthetic_firmware()), Some(&test_key()));
    assert_eq!(kvm_rules::check(&file, SNP_PLATFORM_MASK, NATIVE_PLATFORM_MASK), Ok(()));
}

/// Rebuilds `file` with its directives changed by `change`.
fn mutated(file: &IgvmFile, change: impl FnOnce(&mut Vec<IgvmDirectiveHeader>)) -> IgvmFile {
    let mut directives = file.directives().to_vec();
    change(&mut directives);
    let revision = igvm::IgvmRevision::V2 { arch: igvm::Arch::X64, page_size: 4096 };
    IgvmFile::new(revision, file.platforms().to_vec(), file.initializations().to_vec(), directives)
        .unwrap()
}

fn vmsa_mut(d: &mut [IgvmDirectiveHeader]) -> &mut igvm::snp_defs::SevVmsa {
    d.iter_mut()
        .find_map(|d| match d {
            IgvmDirectiveHeader::SnpVpContext { vmsa, .. } => Some(vmsa.as_mut()),
            _ => None,
        })
        .unwrap()
}

#[test]
fn rule_violations_are_named() {
    let (file, _) = assemble(Some(&synthetic_firmware()), None);
    let check = |f: &IgvmFile| kvm_rules::check(f, SNP_PLATFORM_MASK, NATIVE_PLATFORM_MASK);
    let not_last = mutated(&file, |d| {
        let n = d.len();
        d.swap(n - 1, n - 2)
    });
    assert_eq!(check(&not_last), Err(RuleError::VmsaNotLast));
    let moved = mutated(&file, |d| {
        if let Some(IgvmDirectiveHeader::SnpVpContext { gpa, .. }) = d.last_mut() {
            *gpa = 0x80_0000;
        }
    });
    assert_eq!(check(&moved), Err(RuleError::VmsaGpa(0x80_0000)));
    let paging = mutated(&file, |d| vmsa_mut(d).cr0 = 0x8000_0031);
    assert_eq!(check(&paging), Err(RuleError::VmsaCr0(0x8000_0031)));
    let features = mutated(&file, |d| vmsa_mut(d).sev_features.set_debug_swap(true));
    assert_eq!(check(&features), Err(RuleError::SevFeatures(0x21, 0x1)));
    let unsynced = mutated(&file, |d| vmsa_mut(d).star = 1);
    assert_eq!(check(&unsynced), Err(RuleError::VmsaUnsyncedField(0x200)));
    let command_line = mutated(&file, |d| {
        d.insert(
            0,
            IgvmDirectiveHeader::ParameterArea {
                number_of_bytes: 4096,
                parameter_area_index: 7,
                initial_data: vec![],
            },
        );
        d.insert(
            1,
            IgvmDirectiveHeader::CommandLine(igvm_defs::IGVM_VHS_PARAMETER {
                parameter_area_index: 7,
                byte_offset: 0,
            }),
        );
    });
    assert!(
        matches!(check(&command_line), Err(RuleError::DirectiveType(name)) if name == "CommandLine")
    );
    let shared = mutated(&file, |d| {
        if let IgvmDirectiveHeader::PageData { flags, .. } = &mut d[0] {
            *flags = IgvmPageDataFlags::new().with_shared(true);
        }
    });
    assert_eq!(check(&shared), Err(RuleError::PageFlags(BOOT_PARAMS_GPA)));
    let unordered = mutated(&file, |d| {
        let at = d
            .iter()
            .position(|x| matches!(x, IgvmDirectiveHeader::PageData { gpa: STAGE2_STACK_BASE, .. }))
            .unwrap();
        d.swap(at, at + 1);
    });
    assert!(matches!(check(&unordered), Err(RuleError::PageOrder { gpa: STAGE2_STACK_BASE, .. })));
    let two_vmsas = mutated(&file, |d| {
        let vmsa = d.last().unwrap().clone();
        d.insert(d.len() - 1, vmsa);
    });
    assert_eq!(check(&two_vmsas), Err(RuleError::VmsaCount(2)));
}

#[test]
fn oversized_inputs_are_refused_with_the_limit() {
    let kernel = stand_in_kernel();
    let outside = elf_with_segment(STAGE2_LIMIT - 0x1000, &[0x90; 16], 0x2000, 5);
    let error = igvm_image::assemble(
        &ImageInputs {
            stage2_elf: &outside,
            kernel_snp: &kernel,
            kernel_native: &kernel,
            firmware: None,
        },
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("does not fit [0x110000, 0x200000)"), "{error}");

    let stage2 = stand_in_stage2("x");
    let mut big_kernel = stand_in_kernel();
    big_kernel.resize((KERNEL_ELF_LIMIT - KERNEL_ELF_GPA) as usize + 1, 1);
    let error = igvm_image::assemble(
        &ImageInputs {
            stage2_elf: &stage2,
            kernel_snp: &big_kernel,
            kernel_native: &big_kernel,
            firmware: None,
        },
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("more than the 6291456 bytes reserved"), "{error}");
}

#[test]
fn page_log_replays_through_sev_snp_measure() {
    let env = env();
    let python = venv_python();
    let (file, _) = assemble(Some(&real_ovmf()), Some(&test_key()));
    let measurement = measure::measure_snp(&file).unwrap();
    let replayed = digest_check::sev_snp_measure_replay(
        &python,
        &env.build.join("test-replay"),
        &file,
        &measurement,
    )
    .unwrap();
    assert_eq!(replayed, measurement.digest_hex());
    // The log covers every kind of step the file has.
    let kinds: std::collections::BTreeSet<_> =
        measurement.steps.iter().map(|s| s.page_type.name()).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["cpuid", "normal", "secrets", "unmeasured", "vmsa"]
    );
    assert_eq!(measurement.steps.last().unwrap().page_type, PageType::Vmsa);
}

/// fw_cfg of QEMU q35 with 512 MiB and `cpus` vCPUs.
struct FakeQemuFwCfg {
    items: Vec<(u16, Vec<u8>)>,
    selected: Vec<u8>,
    at: usize,
}

impl FakeQemuFwCfg {
    fn new(cpus: u16) -> FakeQemuFwCfg {
        let mut e820 = Vec::new();
        for (address, length, kind) in [(0u64, 0x2000_0000u64, 1u32), (0xfeff_c000, 0x4000, 2)] {
            e820.extend_from_slice(&address.to_le_bytes());
            e820.extend_from_slice(&length.to_le_bytes());
            e820.extend_from_slice(&kind.to_le_bytes());
        }
        let mut dir = 1u32.to_be_bytes().to_vec();
        dir.extend_from_slice(&(e820.len() as u32).to_be_bytes());
        dir.extend_from_slice(&0x30u16.to_be_bytes());
        dir.extend_from_slice(&[0, 0]);
        let mut name = [0u8; 56];
        name[..8].copy_from_slice(b"etc/e820");
        dir.extend_from_slice(&name);
        let items = vec![
            (0, b"QEMU".to_vec()),
            (5, cpus.to_le_bytes().to_vec()),
            (0x19, dir),
            (0x30, e820),
        ];
        FakeQemuFwCfg { items, selected: Vec::new(), at: 0 }
    }
}

impl FwCfgPorts for FakeQemuFwCfg {
    fn select(&mut self, key: u16) {
        self.selected =
            self.items.iter().find(|(k, _)| *k == key).map(|(_, d)| d.clone()).unwrap_or_default();
        self.at = 0;
    }
    fn read_byte(&mut self) -> u8 {
        self.at += 1;
        self.selected.get(self.at - 1).copied().unwrap_or(0)
    }
}

/// Guest memory by page; untouched pages read as 0xEE so missed zeroing shows.
#[derive(Default)]
struct PagedMemory {
    pages: std::collections::HashMap<u64, Vec<u8>>,
}

impl PagedMemory {
    fn byte(&mut self, gpa: u64) -> &mut u8 {
        let page = self.pages.entry(gpa & !0xfff).or_insert_with(|| vec![0xEE; 4096]);
        &mut page[(gpa & 0xfff) as usize]
    }
    fn page(&self, gpa: u64) -> Option<&Vec<u8>> {
        self.pages.get(&gpa)
    }
}

impl GuestMemory for PagedMemory {
    fn write(&mut self, gpa: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            *self.byte(gpa + i as u64) = b;
        }
    }
    fn zero(&mut self, gpa: u64, size: u64) {
        for a in gpa..gpa + size {
            *self.byte(a) = 0;
        }
    }
}

/// The ROM's load table, run on a fake machine, leaves memory exactly as
/// the IGVM file's native platform says, with the parameters filled.
#[test]
fn rom_loads_exactly_the_native_platform() {
    let (_, bytes) = assemble(Some(&synthetic_firmware()), None);
    let loader = vec![0xF4; romloader::table::LOADER_SIZE as usize];
    let rom = crate::bios_image::build_rom(&bytes, &loader).unwrap();
    let mut memory = PagedMemory::default();
    let report = romloader::loader::load(&rom, FakeQemuFwCfg::new(2), &mut memory).unwrap();
    let stage2 = abi::elf::Elf::parse(&stand_in_stage2(STAND_IN_MESSAGE)).unwrap().entry();
    assert_eq!((report.start.rip, report.start.rsp), (stage2, STAGE2_STACK_TOP));
    assert_eq!((report.start.cr0, report.start.code_attributes), (0x31, 0xc09b));

    let native = IgvmFile::new_from_binary(&bytes, Some(IsolationType::NotIsolated)).unwrap();
    let mut page_count = 0;
    for d in native.directives() {
        if let IgvmDirectiveHeader::PageData { gpa, data, .. } = d {
            let mut expected = data.clone();
            expected.resize(4096, 0);
            assert_eq!(memory.page(*gpa), Some(&expected), "page {gpa:#x}");
            page_count += 1;
        }
    }
    // Pages + 2 parameter pages, nothing else written.
    assert_eq!(memory.pages.len(), page_count + 2);
    let general = memory.page(GENERAL_PARAMS_GPA).unwrap();
    assert_eq!(&general[..8], &[2, 0, 0, 0, 0, 0, 0, 0]);
    assert!(general[8..].iter().all(|&b| b == 0));
    let mut ranges = [abi::boot::MemoryRange::default(); 4];
    let n = abi::boot::parse_memory_map(memory.page(MEMORY_MAP_GPA).unwrap(), &mut ranges).unwrap();
    assert_eq!(&ranges[..n], &[abi::boot::MemoryRange { base: 0, size: 0x2000_0000 }]);
}

fn romloader_elf(env: &Env) -> PathBuf {
    builder::build_bare_metal(env, "romloader", "bare-metal").expect("building the ROM loader")
}

/// The stand-in stage2, packaged with the real OVMF, boots under QEMU
/// through the ROM loader: the loader copies ~4 MiB of firmware, fills the
/// parameters, drops to 32-bit protected mode and the stand-in prints and
/// exits with EXIT_SUCCESS.
#[test]
fn qemu_boots_the_stand_in_through_the_rom_loader() {
    let env = env();
    ensure_qemu();
    let loader = std::fs::read(romloader_elf(&env)).unwrap();
    let stage2 = stand_in_stage2(STAND_IN_MESSAGE);
    let kernel = stand_in_kernel();
    let ovmf = real_ovmf();
    let inputs = ImageInputs {
        stage2_elf: &stage2,
        kernel_snp: &kernel,
        kernel_native: &kernel,
        firmware: Some(&ovmf),
    };
    let out = env.build.join("test-standin");
    std::fs::create_dir_all(&out).unwrap();
    let image = builder::write_image(&inputs, None, &loader, &out, None).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("svsm.igvm.digest")).unwrap().trim(), image.digest);
    let options = qemu::QemuOptions {
        echo: false,
        timeout: std::time::Duration::from_secs(60),
        ..Default::default()
    };
    let result = qemu::boot(&image.rom, &options).unwrap();
    assert!(
        result.ending.is_success() && result.serial.contains(STAND_IN_MESSAGE),
        "{:?}\nserial:\n{}\nqemu:\n{}",
        result.ending,
        result.serial,
        result.qemu_stderr
    );
    assert!(result.serial.contains("romloader:"), "{}", result.serial);
}

/// A ROM whose load table needs more RAM than the VM has stops with the
/// loader's message and EXIT_FAILURE.
#[test]
fn rom_loader_reports_missing_ram_and_fails() {
    let env = env();
    ensure_qemu();
    let loader = std::fs::read(romloader_elf(&env)).unwrap();
    let (_, bytes) = assemble(None, None);
    let rom =
        crate::bios_image::build_rom(&bytes, &crate::bios_image::loader_image(&loader).unwrap())
            .unwrap();
    let path = env.build.join("test-standin/small-ram.bios");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, rom).unwrap();
    // 128 MiB ends exactly where the kernel region starts: its RequiredMemory fails.
    let options = qemu::QemuOptions {
        echo: false,
        memory: "128M".into(),
        timeout: std::time::Duration::from_secs(60),
        ..Default::default()
    };
    let result = qemu::boot(Path::new(&path), &options).unwrap();
    assert_eq!(result.ending, qemu::Ending::Failure, "{}", result.serial);
    assert!(result.serial.contains("romloader: error: step"), "{}", result.serial);
    assert!(result.serial.contains("is not RAM"), "{}", result.serial);
}

const VERIFY_SCRIPT: &str = r#"
import sys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
block, r, s, qx, qy = (bytes.fromhex(a) for a in sys.argv[1:6])
le = lambda b: int.from_bytes(b, 'little')
key = ec.EllipticCurvePublicNumbers(le(qx), le(qy), ec.SECP384R1()).public_key()
signature = encode_dss_signature(le(r), le(s))
key.verify(signature, block, ec.ECDSA(hashes.SHA384()))
try:
    key.verify(signature, bytes([block[0] ^ 1]) + block[1:], ec.ECDSA(hashes.SHA384()))
    sys.exit('a changed ID block verified')
except InvalidSignature:
    print('verified')
"#;

/// The ID block's signature, read back from the file, verifies with an
/// independent ECDSA implementation (Python's `cryptography`, installed
/// with sev-snp-measure) over the 96-byte block the firmware checks.
#[test]
fn id_block_signature_verifies_with_python_cryptography() {
    let python = venv_python();
    let (file, _) = assemble(Some(&synthetic_firmware()), Some(&test_key()));
    let Some(IgvmDirectiveHeader::SnpIdBlock { ld, id_key_signature, id_public_key, .. }) =
        file.directives().iter().find(|d| matches!(d, IgvmDirectiveHeader::SnpIdBlock { .. }))
    else {
        panic!("no ID block in a signed image");
    };
    let block = crate::id_block::id_block_bytes(ld, crate::igvm_image::SNP_GUEST_POLICY);
    let hex = measure::hex;
    let out = Command::new(&python)
        .arg("-c")
        .arg(VERIFY_SCRIPT)
        .args([
            hex(&block),
            hex(&id_key_signature.r_comp),
            hex(&id_key_signature.s_comp),
            hex(&id_public_key.qx),
            hex(&id_public_key.qy),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "verified");
}
