//! The vTPM protocol cases (SVSM protocol 2, spec §8): what Linux's
//! `tpm_svsm` and OVMF do through it (Startup, PCR_Extend, PCR_Read,
//! GetRandom, a quote whose ECDSA signature the guest verifies with the
//! key's public point) and hostile buffers. The request/response buffer is a
//! scratch page the guest validates first; the TPM commands and the
//! expected results are in [`crate::vtpm_commands`], host-tested against
//! the engine.

use abi::svsm::{
    CoreCall, ListHeader, PROTOCOL_VTPM, PageSize, PvalidateEntry, SVSM_ERR_INVALID_ADDRESS,
    SVSM_ERR_INVALID_PARAMETER, SVSM_ERR_UNSUPPORTED_CALL, SVSM_SUCCESS, TPM_SEND_COMMAND,
    VTPM_BUFFER_SIZE, VTPM_CMD, VTPM_QUERY, VtpmCommandHeader, request_rax,
};
use zerocopy::IntoBytes;

use crate::env::Env;
use crate::layout::scratch_page;
use crate::runner::{Code, expect_code, record};
use crate::snp::{CallOutcome, CallRegs, svsm_call};
use crate::vtpm_commands::{
    CREATE_SIGNING_KEY, GET_RANDOM_32, PCR_16_EXTENDED, PCR_EXTEND_16, PCR_READ_16, QUOTE_NONCE,
    QUOTE_PCR_DIGEST, STARTUP, created_ecc_point, created_handle, ecdsa_p256_valid, flush_context,
    parse_quote, quote, response_code,
};

/// The page the requests go in (after the core cases' pages).
const BUFFER_PAGE: u64 = scratch_page(16);
/// Largest TPM command a one-page buffer holds (4096 - 9).
const MAX_COMMAND: u32 = (VTPM_BUFFER_SIZE - size_of::<VtpmCommandHeader>()) as u32;
/// The local APIC: MMIO.
const MMIO_LAPIC: u64 = 0xFEE0_0000;
/// Far beyond the guest's RAM (the tests run with 512 MiB).
const BEYOND_RAM: u64 = 0x10_0000_0000;

/// Runs the cases in order (the PCR and quote cases build on Startup).
pub fn run_all(env: &Env) {
    let t = VtpmCases { env };
    if !t.validate_buffer() {
        return;
    }
    t.query_and_calls();
    t.measured_boot();
    t.random();
    t.quote();
    t.hostile_buffers();
}

struct VtpmCases<'a> {
    env: &'a Env,
}

impl VtpmCases<'_> {
    fn call(&self, call: u32, rcx: u64) -> CallOutcome {
        let regs = CallRegs { rax: request_rax(PROTOCOL_VTPM, call), rcx, ..CallRegs::default() };
        svsm_call(self.env.calling_area, regs)
    }

    /// PVALIDATE of the buffer page, the list in the calling area.
    fn validate_buffer(&self) -> bool {
        let list = self.env.calling_area + 8;
        let header = ListHeader { entries: 1, next: 0, reserved: 0 };
        let entry = PvalidateEntry::new(BUFFER_PAGE, PageSize::Size4K, true, false);
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(header.as_bytes());
        raw[8..].copy_from_slice(&entry.0.to_le_bytes());
        // SAFETY: the list lies in the guest's own calling area.
        unsafe { write_bytes(list, &raw) };
        let outcome =
            svsm_call(self.env.calling_area, CallRegs::core(CoreCall::Pvalidate, list, 0, 0));
        expect_code("vtpm/validate-buffer-page", &outcome, SVSM_SUCCESS)
    }

    /// Writes a TPM_SEND_COMMAND request at `gpa` and sends it.
    fn send_at(
        &self,
        gpa: u64,
        platform_command: u32,
        locality: u8,
        size: u32,
        command: &[u8],
    ) -> CallOutcome {
        let header = VtpmCommandHeader { command: platform_command, locality, size };
        // SAFETY: `gpa` is the validated buffer page (every caller passes an
        // offset into it that leaves room for the request).
        unsafe {
            write_bytes(gpa, header.as_bytes());
            write_bytes(gpa + size_of::<VtpmCommandHeader>() as u64, command);
        }
        self.call(VTPM_CMD, gpa)
    }

    /// Sends `command`; returns the TPM response if the call succeeded,
    /// else records the failure as case `name`.
    fn send(&self, name: &str, command: &[u8]) -> Option<([u8; 512], usize)> {
        let outcome = self.send_at(BUFFER_PAGE, TPM_SEND_COMMAND, 0, command.len() as u32, command);
        if !(outcome.delivered() && outcome.code() == SVSM_SUCCESS) {
            expect_code(name, &outcome, SVSM_SUCCESS);
            return None;
        }
        Some(read_response(BUFFER_PAGE))
    }

    /// Sends `command` without recording anything.
    fn send_quiet(&self, command: &[u8]) -> Option<([u8; 512], usize)> {
        let outcome = self.send_at(BUFFER_PAGE, TPM_SEND_COMMAND, 0, command.len() as u32, command);
        (outcome.delivered() && outcome.code() == SVSM_SUCCESS).then(|| read_response(BUFFER_PAGE))
    }

    /// A case on the TPM's response code.
    fn expect_rc(&self, name: &str, command: &[u8], expected: u32) -> Option<([u8; 512], usize)> {
        let (response, len) = self.send(name, command)?;
        let rc = response_code(&response[..len]);
        let ok = record(
            name,
            rc == Some(expected),
            format_args!("expected TPM rc {expected:#x}, got {}", Rc(rc)),
        );
        ok.then_some((response, len))
    }

    fn query_and_calls(&self) {
        let query = self.call(VTPM_QUERY, 0);
        let ok = query.delivered()
            && query.code() == SVSM_SUCCESS
            && query.regs.rcx == 1 << TPM_SEND_COMMAND
            && query.regs.rdx == 0;
        record(
            "vtpm/query-send-command-no-features",
            ok,
            format_args!(
                "expected {} with RCX 0x100 RDX 0, got {} with RCX {:#x} RDX {:#x}",
                Code(SVSM_SUCCESS),
                Code(query.code()),
                query.regs.rcx,
                query.regs.rdx
            ),
        );
        expect_code("vtpm/unknown-call-2", &self.call(2, 0), SVSM_ERR_UNSUPPORTED_CALL);
    }

    fn measured_boot(&self) {
        self.expect_rc("vtpm/startup-clear", &STARTUP, 0);
        self.expect_rc("vtpm/startup-again-is-initialize", &STARTUP, 0x100);
        self.expect_rc("vtpm/pcr-extend-16", &PCR_EXTEND_16, 0);
        if let Some((response, len)) = self.send("vtpm/pcr-read-16", &PCR_READ_16) {
            let ok = response_code(&response[..len]) == Some(0)
                && response[..len].ends_with(&PCR_16_EXTENDED);
            record(
                "vtpm/pcr-read-16",
                ok,
                format_args!("expected PCR 16 = SHA-256(0^32 || 0xAB^32)"),
            );
        }
    }

    fn random(&self) {
        let first = self.expect_rc("vtpm/get-random-32", &GET_RANDOM_32, 0);
        let second = self.send_quiet(&GET_RANDOM_32);
        if let (Some((a, 44)), Some((b, 44))) = (first, second) {
            record(
                "vtpm/get-random-differs",
                a[12..44] != b[12..44],
                format_args!("expected two different 32-byte draws"),
            );
        } else {
            record("vtpm/get-random-differs", false, format_args!("no 32-byte answers"));
        }
    }

    fn quote(&self) {
        let Some((created, len)) =
            self.expect_rc("vtpm/create-signing-key", &CREATE_SIGNING_KEY, 0)
        else {
            record("vtpm/quote-pcr-16", false, format_args!("no key to quote with"));
            return;
        };
        let Some(key) = created_handle(&created[..len]) else {
            record(
                "vtpm/quote-pcr-16",
                false,
                format_args!("no handle in the CreatePrimary response"),
            );
            return;
        };
        let point = created_ecc_point(&created[..len]);
        if let Some((response, len)) = self.send("vtpm/quote-pcr-16", &quote(key)) {
            let info = parse_quote(&response[..len]);
            let ok = info.as_ref().is_some_and(|info| {
                info.magic == 0xFF54_4347
                    && info.kind == 0x8018
                    && info.extra_data == QUOTE_NONCE
                    && info.pcr_digest == QUOTE_PCR_DIGEST
            });
            record(
                "vtpm/quote-pcr-16",
                ok,
                format_args!(
                    "expected a quote of SHA-256 PCR 16 with the nonce, got (magic, type, \
                     extra data, PCR digest) {:x?}",
                    info.as_ref().map(|i| (i.magic, i.kind, i.extra_data, i.pcr_digest))
                ),
            );
            let signed = point.zip(info.as_ref()).is_some_and(|(point, info)| {
                info.ecdsa.is_some_and(|signature| ecdsa_p256_valid(point, info.attest, signature))
            });
            record(
                "vtpm/quote-signature",
                signed,
                format_args!("expected the quote's ECDSA P-256 signature to verify with the key"),
            );
        }
        let _ = self.send_quiet(&flush_context(key));
    }

    fn hostile_buffers(&self) {
        for (name, platform_command, locality) in [
            ("vtpm/platform-command-7", 7, 0),
            ("vtpm/platform-command-9", 9, 0),
            ("vtpm/locality-1", TPM_SEND_COMMAND, 1),
        ] {
            let outcome = self.send_at(BUFFER_PAGE, platform_command, locality, 12, &STARTUP);
            expect_code(name, &outcome, SVSM_ERR_INVALID_PARAMETER);
        }
        let oversize = self.send_at(BUFFER_PAGE, TPM_SEND_COMMAND, 0, MAX_COMMAND + 1, &[]);
        let rc = oversize
            .delivered()
            .then(|| read_response(BUFFER_PAGE))
            .and_then(|(r, l)| response_code(&r[..l]));
        record(
            "vtpm/oversize-command-is-tpm-rc-command-size",
            oversize.code() == SVSM_SUCCESS && rc == Some(0x142),
            format_args!(
                "expected {} and TPM rc 0x142, got {} and TPM rc {}",
                Code(SVSM_SUCCESS),
                Code(oversize.code()),
                Rc(rc)
            ),
        );
        let mut bad_tag = STARTUP;
        bad_tag[..2].copy_from_slice(&[0x12, 0x34]);
        self.expect_rc("vtpm/bad-tag-is-tpm-rc-bad-tag", &bad_tag, 0x1E);
        for (name, gpa) in [
            ("vtpm/buffer-in-svsm-memory", self.env.svsm_base + 0x100),
            ("vtpm/buffer-at-mmio", MMIO_LAPIC),
            ("vtpm/buffer-beyond-ram", BEYOND_RAM),
        ] {
            expect_code(name, &self.call(VTPM_CMD, gpa), SVSM_ERR_INVALID_ADDRESS);
        }
    }
}

/// A TPM response code for case lines (`none` without a response).
struct Rc(Option<u32>);

impl core::fmt::Display for Rc {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(rc) => write!(f, "{rc:#x}"),
            None => f.write_str("none"),
        }
    }
}

/// Copies `data` to guest memory at `gpa`.
///
/// # Safety
/// `[gpa, gpa + data.len())` must be validated guest memory the guest owns,
/// identity mapped.
unsafe fn write_bytes(gpa: u64, data: &[u8]) {
    // SAFETY: per the contract.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), gpa as *mut u8, data.len()) };
}

/// The response at `gpa` (size field, then up to 512 bytes).
fn read_response(gpa: u64) -> ([u8; 512], usize) {
    let mut response = [0u8; 512];
    // SAFETY: the buffer page is validated and identity mapped; reads stay
    // within its first 4 + 512 bytes.
    let size = unsafe {
        let size = core::ptr::read_volatile(gpa as *const u32) as usize;
        let len = size.min(response.len());
        core::ptr::copy_nonoverlapping((gpa + 4) as *const u8, response.as_mut_ptr(), len);
        len
    };
    (response, size)
}
