//! A small SNP-aware guest firmware that the xtask packages in place of
//! OVMF to test the SVSM: it calls every core-protocol call with valid
//! input and checks the results, then with hostile input (SVSM memory,
//! MMIO, misalignment, overlaps, overflowing counts, bad VMSAs, unknown
//! protocols and calls), checking each exact result code; a boot of its own
//! touches SVSM memory directly, which the SVSM must stop and report. It
//! also times SVSM calls for `cargo xtask bench call`, and asks the SVSM for
//! attestation (protocol 1) and the vTPM's endorsement key (protocol 2),
//! handing what it receives to the xtask to verify.
//!
//! Like OVMF it starts at the reset vector, carries SEV metadata naming its
//! secrets, CPUID and calling-area pages, finds the SVSM through the
//! secrets page, calls it through the GHCB MSR protocol and VMGEXIT, and
//! forwards port I/O through the GHCB from its #VC handler when SNP
//! encryption is really active, so the same binary would run on SNP.
//!
//! The layout, the output format, the mode selection, the TPM commands and
//! the port-I/O decoder are plain code tested on the host (the xtask reads
//! the output with [`report`] and [`blob`]); the rest only builds for the
//! bare-metal target.

#![cfg_attr(target_os = "none", no_std)]

pub mod blob;
pub mod ek;
pub mod layout;
pub mod mode;
pub mod port_io;
pub mod report;
pub mod vtpm_commands;

#[cfg(target_os = "none")]
mod ap;
#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod attest;
#[cfg(target_os = "none")]
mod bench;
#[cfg(target_os = "none")]
mod cases;
#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
mod env;
#[cfg(target_os = "none")]
mod idt;
#[cfg(target_os = "none")]
mod runner;
#[cfg(target_os = "none")]
mod snp;
#[cfg(target_os = "none")]
mod vtpm;

#[cfg(target_os = "none")]
pub use boot::{abort, run_ap, run_boot_vcpu};

#[cfg(target_os = "none")]
mod boot {
    use core::fmt;

    use crate::mode::Mode;
    use crate::report::{self, Access};
    use crate::{ap, arch, attest, bench, cases, console, env, idt, println, runner, snp, vtpm};

    /// The boot vCPU, from the reset code: set up, find the SVSM, run this
    /// boot's mode.
    pub fn run_boot_vcpu() -> ! {
        idt::init();
        idt::load();
        if snp::encryption_active() {
            // Port I/O (the console) needs the GHCB page on real SNP.
            if snp::setup_ghcb(crate::layout::CALLING_AREA_GPA).is_err() {
                snp::terminate();
            }
        }
        console::init();
        runner::console_ready();
        println!(
            "{}started: SEV_STATUS {:#x}, C-bit mask {:#x}",
            report::PREFIX,
            snp::sev_status().0,
            snp::c_bit_mask()
        );
        env::check_link_layout();
        let mode = env::read_mode();
        println!("{}mode {}", report::PREFIX, mode.name());
        if !snp::snp_active() {
            abort(format_args!(
                "SEV_STATUS shows no SNP: run this guest under the SVSM (dev platform or SNP)"
            ));
        }
        let env = env::Env::discover();
        match mode {
            Mode::Calls => {
                cases::run_all(&env);
                vtpm::run_all(&env);
                runner::check_count(report::CALL_CASES);
                console::exit(runner::summary())
            }
            Mode::ReadSvsm => touch_svsm(&env, Access::Read),
            Mode::WriteSvsm => touch_svsm(&env, Access::Write),
            Mode::Bench => bench::run(&env),
            Mode::Attest => {
                attest::run(&env);
                runner::check_count(report::ATTEST_CASES);
                console::exit(runner::summary())
            }
        }
    }

    /// The deliberate access to SVSM memory: the SVSM must stop the guest
    /// here; if it does not, the guest says so and fails.
    fn touch_svsm(env: &env::Env, access: Access) -> ! {
        let gpa = match access {
            Access::Read => env.svsm_base,
            Access::Write => env.svsm_base + env.svsm_size / 2,
        };
        console::with_console(|out| {
            let _ = report::write_touch(out, access, gpa);
        });
        // SAFETY: deliberately not safe: this is SVSM memory, which the
        // guest may not touch; the test is that the SVSM stops the guest
        // before the access completes. Nothing in the guest uses the value.
        let value = unsafe {
            match access {
                Access::Read => arch::read_u64(gpa),
                Access::Write => {
                    arch::write_u64(gpa, 0x5EC0_0000_DEAD_BEEF);
                    0
                }
            }
        };
        println!("{} (read {value:#x})", report::NOT_STOPPED);
        console::exit(false)
    }

    /// The AP, from `ap_entry`.
    pub fn run_ap() -> ! {
        ap::run()
    }

    /// Ends the run with a failure.
    pub fn abort(args: fmt::Arguments<'_>) -> ! {
        runner::abort(args)
    }
}
