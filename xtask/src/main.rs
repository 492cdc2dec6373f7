//! `cargo xtask`: the one entry point for building, packaging, booting and
//! testing the SVSM. CI runs exactly what a developer runs.

mod attest_certs;
mod attest_e2e;
mod attest_sample;
mod attest_verify;
mod bench_call;
mod bios_image;
mod builder;
mod digest_check;
mod env;
mod firmware;
mod guest_linux;
mod guest_tests;
mod id_block;
mod igvm_image;
#[cfg(test)]
mod image_tests;
mod kvm_rules;
mod lint;
mod measure;
mod qemu;
mod run;
mod setup;
mod start_context;
mod test;
mod vtpm_bench;
mod vtpm_checks;
mod vtpm_cmd;
mod vtpm_conformance;
mod vtpm_diff;
mod vtpm_esapi;
mod vtpm_flows;
mod vtpm_procs;
mod vtpm_session;
mod vtpm_tools;
mod vtpm_wire;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, package, boot and test the SVSM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every test: host unit tests, the launch digest of the built
    /// images, in-kernel tests, the test guest, attestation, the Linux
    /// guest, vTPM conformance; one summary at the end.
    Test(test::TestArgs),
    /// Clippy with warnings as errors, host and bare-metal crates.
    Lint,
    /// Build stage2 and the kernel and write the IGVM file, its launch
    /// digest, page log and QEMU -bios wrapper.
    Build(run::BuildArgs),
    /// Build and boot the whole stack under QEMU: the SVSM, OVMF measuring
    /// the boot into the SVSM's vTPM, and a Linux guest that prints its
    /// PCRs and event log; ends with a summary (the replay must match).
    ///
    /// The first run downloads Debian's kernel and busybox into
    /// build/guest-linux/. --no-guest boots OVMF alone, --vmm launcher the
    /// SVSM alone under KVM.
    Run(run::RunArgs),
    /// Print the SNP launch digest of an IGVM file.
    Measure {
        /// The IGVM file.
        file: PathBuf,
        /// Also compute it with the igvm crate and replay it through
        /// sev-snp-measure (installed into build/venv), and fail unless
        /// all agree.
        #[arg(long)]
        cross_check: bool,
    },
    /// Verify an SNP attestation report: certificate chain, signature,
    /// measurement, REPORT_DATA against nonce and manifest, policy, VMPL.
    Verify(attest_verify::Cli),
    /// Run the SVSM's attestation protocol on the host against the
    /// development PSP and write a sample report, manifest and certificates.
    #[command(hide = true)]
    AttestSample {
        /// Output directory.
        out: PathBuf,
    },
    /// Benchmarks: figures only, nothing asserted.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Install what the other commands need (QEMU, OVMF, Python venv, Rust target,
    /// binutils, g++, the TPM tools).
    Setup,
    /// The vTPM conformance tier of `cargo xtask test` alone.
    /// `--swtpm` points every check at swtpm instead, to check the checks.
    #[command(hide = true)]
    VtpmConformance {
        #[arg(long)]
        swtpm: bool,
    },
}

/// What `cargo xtask bench` measures.
#[derive(Subcommand)]
enum BenchWhat {
    /// SVSM calls per second from the test guest, against a bare VMGEXIT
    /// round trip without dispatch.
    Call,
    /// The vTPM engine against swtpm, command by command, and its memory use.
    Vtpm,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run_command(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The cause chain, without anyhow's backtrace (RUST_BACKTRACE is
            // often set on developer machines; the backtrace says nothing to
            // a user).
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_command(command: Command) -> Result<()> {
    let env = env::Env::discover()?;
    match command {
        Command::Test(args) => test::run(&env, &args),
        Command::Lint => lint::run(&env),
        Command::Build(args) => run::build(&env, &args),
        Command::Run(args) => run::run(&env, &args),
        Command::Measure { file, cross_check: false } => builder::measure_file(&file),
        Command::Measure { file, cross_check: true } => {
            builder::measure_file(&file)?;
            println!("{}", digest_check::cross_check(&env, &file)?);
            Ok(())
        }
        Command::Verify(args) => attest_verify::main(&args, &env.build),
        Command::AttestSample { out } => attest_sample::main(&out, &env.build),
        Command::Bench { what: BenchWhat::Call } => bench_call::run(&env),
        Command::Bench { what: BenchWhat::Vtpm } => vtpm_bench::run(&env),
        Command::Setup => setup::run(&env),
        Command::VtpmConformance { swtpm } => {
            if swtpm {
                vtpm_conformance::run_against(&env, vtpm_conformance::Against::Swtpm)
            } else {
                vtpm_conformance::run(&env)
            }
        }
    }
}
