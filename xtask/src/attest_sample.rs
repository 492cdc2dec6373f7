//! `cargo xtask attest-sample DIR`: runs the SVSM's attestation protocol
//! (`kernel::protocols::attest`, the same code the kernel runs) on the host,
//! against the kernel's development PSP holding this build folder's keys,
//! and writes what a guest receives: `report.bin`, `manifest.bin`,
//! `nonce.hex`, `measurement.hex` and the certificates from the returned
//! certificate table (`certs/ark.pem`, `ask.pem`, `vcek.pem`).
//!
//! It exists to exercise the whole report path without booting (and to
//! hand standard tools such as `snpguest` a report to check). The vTPM
//! service's manifest data is a fixed stand-in until the vTPM registers its
//! EK public area in the SVSM.

use std::fs;
use std::path::Path;

use abi::attestation::{
    ATTEST_SERVICES, AttestServicesOp, CERT_GUID_ARK, CERT_GUID_ASK, CERT_GUID_VCEK, DevPspParams,
    VTPM_SERVICE_GUID, find_certificate,
};
use anyhow::{Context, Result, bail, ensure};
use kernel::attest::client::GuestRequestClient;
use kernel::attest::dev_psp::DevPsp;
use kernel::attest::guest_msg::Vmpck;
use kernel::attest::services::ServiceRegistry;
use kernel::guest_mem::{GuestMemory, InvalidGpa};
use kernel::protocols::CallRegisters;
use kernel::protocols::attest::{AttestContext, handle};
use sha2::{Digest, Sha384};
use zerocopy::IntoBytes;

use crate::attest_certs::{self, DevChain};
use crate::attest_verify::hex;

/// Stand-in for the vTPM's EK public area (a marshalled TPMT_PUBLIC).
pub const EK_PUBLIC_STAND_IN: &[u8] =
    b"\x00\x01\x00\x0b (stand-in EK TPMT_PUBLIC until the vTPM registers)";

/// What a guest got from ATTEST_SERVICES.
pub struct Sample {
    /// The report.
    pub report: Vec<u8>,
    /// The services manifest.
    pub manifest: Vec<u8>,
    /// The certificate table.
    pub certs: Vec<u8>,
}

const OP: u64 = 0x1000;
const NONCE: u64 = 0x2000;
const REPORT: u64 = 0x3000;
const MANIFEST: u64 = 0x4000;
const CERTS: u64 = 0x5000;
const CERTS_SIZE: usize = 0x4000;

/// Guest memory for one call: 0..0x9000.
struct Memory(std::cell::RefCell<Vec<u8>>);

impl Memory {
    fn range(&self, gpa: u64, len: u64) -> Result<std::ops::Range<usize>, InvalidGpa> {
        let start = usize::try_from(gpa).map_err(|_| InvalidGpa)?;
        let end =
            start.checked_add(usize::try_from(len).map_err(|_| InvalidGpa)?).ok_or(InvalidGpa)?;
        if end > self.0.borrow().len() {
            return Err(InvalidGpa);
        }
        Ok(start..end)
    }
}

impl GuestMemory for Memory {
    fn check(&self, gpa: u64, len: u64) -> Result<(), InvalidGpa> {
        self.range(gpa, len).map(|_| ())
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), InvalidGpa> {
        let range = self.range(gpa, buf.len() as u64)?;
        buf.copy_from_slice(&self.0.borrow()[range]);
        Ok(())
    }
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), InvalidGpa> {
        let range = self.range(gpa, data.len() as u64)?;
        self.0.borrow_mut()[range].copy_from_slice(data);
        Ok(())
    }
    fn zero(&self, gpa: u64, len: u64) -> Result<(), InvalidGpa> {
        let range = self.range(gpa, len)?;
        self.0.borrow_mut()[range].fill(0);
        Ok(())
    }
}

/// Runs ATTEST_SERVICES with `nonce` against a development PSP built from
/// `chain` for an image with launch digest `measurement`.
pub fn attest_services(chain: &DevChain, measurement: [u8; 48], nonce: &[u8]) -> Result<Sample> {
    let launch =
        attest_certs::LaunchIdentity { measurement, policy: 0x30000, ..Default::default() };
    let handover = attest_certs::dev_psp_params(chain, &launch)?;
    let (params, table) = DevPspParams::parse(&handover).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut report_id = [0u8; 32];
    getrandom::fill(&mut report_id).context("random REPORT_ID")?;
    let psp = DevPsp::new(&params, table, report_id).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut client = GuestRequestClient::new(psp, Vmpck::new(chain.vmpck0, 0));
    let mut services = ServiceRegistry::new();
    services.register(VTPM_SERVICE_GUID, EK_PUBLIC_STAND_IN.to_vec());

    let memory = Memory(std::cell::RefCell::new(vec![0; CERTS as usize + CERTS_SIZE]));
    let op = AttestServicesOp {
        report_gpa: REPORT,
        report_size: 0x1000,
        nonce_gpa: NONCE,
        nonce_size: u16::try_from(nonce.len()).context("nonce too long")?,
        manifest_gpa: MANIFEST,
        manifest_size: 0x1000,
        certs_gpa: CERTS,
        certs_size: CERTS_SIZE as u32,
        ..Default::default()
    };
    ensure!(nonce.len() <= 0x1000, "a nonce has at most 4096 bytes");
    memory.write(OP, op.as_bytes()).map_err(|_| anyhow::anyhow!("operation does not fit"))?;
    memory.write(NONCE, nonce).map_err(|_| anyhow::anyhow!("nonce does not fit"))?;
    let mut regs = CallRegisters { rcx: OP, ..Default::default() };
    let mut context = AttestContext { services: &services, reports: &mut client };
    let code = handle(ATTEST_SERVICES, &mut regs, &memory, &mut context);
    if code != 0 {
        bail!("ATTEST_SERVICES failed with {code:#x}");
    }
    let memory = memory.0.into_inner();
    let take = |gpa: u64, len: u64| memory[gpa as usize..][..len as usize].to_vec();
    Ok(Sample {
        report: take(REPORT, regs.r8),
        manifest: take(MANIFEST, regs.rcx),
        certs: take(CERTS, regs.rdx),
    })
}

/// `cargo xtask attest-sample DIR`.
pub fn main(out: &Path, build_dir: &Path) -> Result<()> {
    let chain = attest_certs::load_or_create(&attest_certs::chain_dir(build_dir))?;
    let measurement: [u8; 48] = Sha384::digest(b"attest-sample: a stand-in launch digest").into();
    let mut nonce = [0u8; 64];
    getrandom::fill(&mut nonce).context("random nonce")?;
    let sample = attest_services(&chain, measurement, &nonce)?;
    let certs_dir = out.join("certs");
    fs::create_dir_all(&certs_dir).with_context(|| format!("creating {}", certs_dir.display()))?;
    fs::write(out.join("report.bin"), &sample.report)?;
    fs::write(out.join("manifest.bin"), &sample.manifest)?;
    fs::write(out.join("nonce.hex"), hex(&nonce))?;
    fs::write(out.join("measurement.hex"), hex(&measurement))?;
    for (guid, name) in [(CERT_GUID_ARK, "ark"), (CERT_GUID_ASK, "ask"), (CERT_GUID_VCEK, "vcek")] {
        let der = find_certificate(&sample.certs, guid)
            .map_err(|e| anyhow::anyhow!("certificate table: {e:?}"))?
            .with_context(|| format!("no {name} in the certificate table"))?;
        let pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der)?;
        fs::write(certs_dir.join(format!("{name}.pem")), pem)?;
    }
    println!(
        "wrote {}: report.bin, manifest.bin, nonce.hex, measurement.hex, certs/",
        out.display()
    );
    println!(
        "verify: cargo xtask verify {0}/report.bin --certs {0}/certs --measurement {1} --nonce {2} --manifest {0}/manifest.bin",
        out.display(),
        hex(&measurement),
        hex(&nonce)
    );
    Ok(())
}
