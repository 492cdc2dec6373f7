//! `launcher`: boots the SVSM's IGVM file under KVM.
//!
//! ```text
//! launcher run IGVM [--platform native|snp] [--memory 512M] [--cpus 1] [--timeout SECS]
//!                   [--host-data HEX] [--planes auto|off|require]
//! launcher preflight [IGVM]        # what an SNP launch needs from this host
//! ```
//!
//! Exit status: `(v << 1) | 1` when the guest writes `v` to port 0x501 (33
//! for the SVSM's success, 35 for its failure), 124 when the watchdog fires,
//! 4 when the guest stops any other way, 2 for launcher errors.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use launcher::igvm_load::Platform;
use launcher::layout::parse_size;
use launcher::snp::PlanesMode;
use launcher::vcpu::STATUS_ERROR;
use launcher::{RunOptions, snp};

#[derive(Parser)]
#[command(name = "launcher", about = "Boot the SVSM's IGVM file under KVM")]
struct Cli {
    /// Print launch steps on stderr.
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum PlatformArg {
    Native,
    Snp,
}

#[derive(Clone, Copy, ValueEnum)]
enum PlanesArg {
    Auto,
    Off,
    Require,
}

#[derive(Subcommand)]
enum Command {
    /// Load an IGVM file and run it.
    Run {
        /// The IGVM file.
        igvm: PathBuf,
        /// Which platform of the file to load.
        #[arg(long, value_enum, default_value = "native")]
        platform: PlatformArg,
        /// Guest RAM (K, M or G suffix).
        #[arg(long, default_value = "512M", value_parser = parse_size)]
        memory: u64,
        /// vCPUs (the launcher runs one).
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        /// Watchdog timeout in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// SNP host data for LAUNCH_FINISH: 64 hex digits (32 bytes).
        #[arg(long, value_parser = snp::parse_host_data)]
        host_data: Option<[u8; 32]>,
        /// SNP: use the KVM planes uAPI (multi-VMPL) when present.
        #[arg(long, value_enum, default_value = "auto")]
        planes: PlanesArg,
    },
    /// Check what an SNP launch needs from this host, and say how to fix
    /// what is missing.
    Preflight {
        /// The IGVM file (its VMSA decides the SEV features needed).
        igvm: Option<PathBuf>,
        /// Whether a guest at VMPL2 is wanted.
        #[arg(long, value_enum, default_value = "auto")]
        planes: PlanesArg,
    },
}

fn planes_mode(p: PlanesArg) -> PlanesMode {
    match p {
        PlanesArg::Auto => PlanesMode::Auto,
        PlanesArg::Off => PlanesMode::Off,
        PlanesArg::Require => PlanesMode::Require,
    }
}

/// Logs `info` and above (`debug` with --verbose) to stderr.
struct StderrLogger {
    verbose: bool,
}

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn || self.verbose
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("launcher: {}: {}", record.level().as_str().to_lowercase(), record.args());
        }
    }

    fn flush(&self) {}
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logger = Box::leak(Box::new(StderrLogger { verbose: cli.verbose }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
    match dispatch(cli.command) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            eprintln!("launcher: error: {e:#}");
            ExitCode::from(STATUS_ERROR as u8)
        }
    }
}

fn dispatch(command: Command) -> Result<u8> {
    match command {
        Command::Run { igvm, platform, memory, cpus, timeout, host_data, planes } => {
            let options = RunOptions {
                igvm,
                platform: match platform {
                    PlatformArg::Native => Platform::Native,
                    PlatformArg::Snp => Platform::Snp,
                },
                memory,
                cpus,
                timeout: Duration::from_secs(timeout),
                host_data: host_data.unwrap_or([0; 32]),
                planes: planes_mode(planes),
            };
            let mut stdout = std::io::stdout();
            let ending = launcher::run(&options, &mut stdout)?;
            stdout.flush().context("flushing the console")?;
            eprintln!("launcher: {ending}");
            Ok(ending.exit_status() as u8)
        }
        Command::Preflight { igvm, planes } => {
            let features = match igvm {
                Some(path) => {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    snp::required_vmsa_features(&bytes)?
                }
                None => 0,
            };
            let report = snp::preflight::run_on_host(features, planes_mode(planes));
            print!("{report}");
            Ok(if report.ready() { 0 } else { 1 })
        }
    }
}
