//! What an SNP launch needs from the host, checked before anything is
//! created, each missing piece named with how to fix it: access to /dev/kvm
//! and /dev/sev, SNP enabled in kvm_amd, the SNP VM type, guest_memfd and
//! private memory attributes, page-state-change exits, the VMSA features
//! the IGVM file asks for, and the planes uAPI a guest at VMPL2 needs.
//!
//! The host is read through [`HostProbe`], so every message is tested with
//! a fake host.

use std::fmt;

use super::{PlanesMode, planes, uapi, vmsa};
use crate::host;

/// What the preflight reads from the host.
pub trait HostProbe {
    /// Opens a device read-write; the error is the errno.
    fn open(&self, path: &str) -> Result<(), i32>;
    /// Reads a sysfs file (module parameters).
    fn read(&self, path: &str) -> Option<String>;
    /// KVM_CHECK_EXTENSION on /dev/kvm.
    fn check_extension(&self, cap: u32) -> i32;
    /// KVM's supported VMSA features; the error is the errno.
    fn vmsa_features(&self) -> Result<u64, i32>;
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The launch cannot work.
    Fatal,
    /// The launch works with a limit.
    Warning,
}

/// One problem: what is missing and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Fatal or a warning.
    pub severity: Severity,
    /// What is missing.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.severity {
            Severity::Fatal => "missing",
            Severity::Warning => "note",
        };
        write!(f, "{tag}: {}\n  fix: {}", self.problem, self.fix)
    }
}

/// The preflight's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Problems found.
    pub findings: Vec<Finding>,
    planes: bool,
}

impl Report {
    /// Whether nothing fatal was found.
    pub fn ready(&self) -> bool {
        self.findings.iter().all(|f| f.severity != Severity::Fatal)
    }

    /// Whether the host KVM can run a guest at VMPL2 (planes uAPI).
    pub fn planes_available(&self) -> bool {
        self.planes
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Warning)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        if self.ready() {
            writeln!(f, "SNP launch: ready")
        } else {
            writeln!(f, "SNP launch: not possible on this host until the problems above are fixed")
        }
    }
}

const KVM_AMD_PARAMS: &str = "/sys/module/kvm_amd/parameters";

struct Checks<'a> {
    probe: &'a dyn HostProbe,
    findings: Vec<Finding>,
}

impl Checks<'_> {
    fn fatal(&mut self, problem: impl Into<String>, fix: impl Into<String>) {
        self.findings.push(Finding {
            severity: Severity::Fatal,
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    fn device(&mut self, path: &str, missing_fix: &str) -> bool {
        match self.probe.open(path) {
            Ok(()) => true,
            Err(libc::ENOENT) => {
                self.fatal(format!("{path} does not exist"), missing_fix);
                false
            }
            Err(libc::EACCES | libc::EPERM) => {
                self.fatal(
                    format!("{path}: permission denied (this user cannot open it read-write)"),
                    host::permission_fix(path),
                );
                false
            }
            Err(errno) => {
                self.fatal(
                    host::device_problem(path, errno),
                    format!("give the launching user read-write access to {path}, or run as root"),
                );
                false
            }
        }
    }

    fn module_param(&mut self, name: &str) {
        match self.probe.read(&format!("{KVM_AMD_PARAMS}/{name}")).map(|v| v.trim().to_string()) {
            Some(v) if v == "Y" || v == "1" => {}
            Some(v) => self.fatal(
                format!("kvm_amd.{name} is {v}: SEV-SNP is not enabled in KVM"),
                "reload kvm_amd with `sudo modprobe -r kvm_amd && sudo modprobe kvm_amd sev=1 sev_es=1 sev_snp=1` \
                 (or add kvm_amd.sev_snp=1 to the kernel command line); if it stays N, SNP is off in the BIOS \
                 (enable SEV-SNP, SMEE and the SNP memory coverage / RMP table) or the SEV firmware is too old (see `dmesg | grep -i sev`)",
            ),
            None => self.fatal(
                format!("kvm_amd has no `{name}` parameter: kvm_amd is not loaded or predates SEV-SNP host support"),
                "load kvm_amd (`sudo modprobe kvm_amd`) from a Linux 6.11 or newer host kernel",
            ),
        }
    }

    fn capability(&mut self, cap: u32, bits: i32, problem: &str, fix: &str) {
        let value = self.probe.check_extension(cap);
        if value & bits != bits || value <= 0 {
            self.fatal(format!("{problem} (KVM_CHECK_EXTENSION({cap}) = {value})"), fix);
        }
    }
}

/// Checks the host for an SNP launch whose VMSA needs `required_features`
/// (SEV_FEATURES without SNPActive).
pub fn check(probe: &dyn HostProbe, required_features: u64, planes_mode: PlanesMode) -> Report {
    let mut c = Checks { probe, findings: Vec::new() };
    let kvm = c.device(
        "/dev/kvm",
        "load the KVM module for AMD (`sudo modprobe kvm_amd`) and enable SVM in the BIOS",
    );
    c.device(
        "/dev/sev",
        "the ccp driver has not set up the AMD Secure Processor: `sudo modprobe ccp`, enable SEV-SNP in the BIOS, \
         and check `dmesg | grep -i -e ccp -e sev` for firmware errors",
    );
    c.module_param("sev_snp");
    if !kvm {
        return Report { findings: c.findings, planes: false };
    }
    c.capability(
        uapi::KVM_CAP_VM_TYPES,
        1 << uapi::KVM_X86_SNP_VM,
        "KVM does not offer the SNP VM type (KVM_X86_SNP_VM)",
        "use a Linux 6.11 or newer host with kvm_amd.sev_snp=1 and SNP initialised by the ccp driver",
    );
    c.capability(
        uapi::KVM_CAP_GUEST_MEMFD,
        1,
        "KVM has no guest_memfd (KVM_CAP_GUEST_MEMFD)",
        "use a Linux 6.8 or newer host kernel built with CONFIG_KVM_AMD_SEV",
    );
    c.capability(
        uapi::KVM_CAP_USER_MEMORY2,
        1,
        "KVM has no KVM_SET_USER_MEMORY_REGION2 (KVM_CAP_USER_MEMORY2)",
        "use a Linux 6.8 or newer host kernel",
    );
    c.capability(
        uapi::KVM_CAP_MEMORY_ATTRIBUTES,
        uapi::KVM_MEMORY_ATTRIBUTE_PRIVATE as i32,
        "KVM cannot mark guest memory private (KVM_CAP_MEMORY_ATTRIBUTES lacks PRIVATE)",
        "use a Linux 6.8 or newer host kernel built with CONFIG_KVM_AMD_SEV (which selects the private-memory attributes)",
    );
    c.capability(
        uapi::KVM_CAP_EXIT_HYPERCALL,
        1 << uapi::KVM_HC_MAP_GPA_RANGE,
        "KVM cannot forward the guest's page-state changes (KVM_CAP_EXIT_HYPERCALL lacks MAP_GPA_RANGE)",
        "use a Linux 6.11 or newer host kernel",
    );
    match probe.vmsa_features() {
        Ok(supported) if required_features & !supported != 0 => c.fatal(
            format!(
                "the IGVM file's VMSA asks for SEV features KVM does not support: {} (KVM supports: {})",
                vmsa::sev_feature_names(required_features & !supported),
                vmsa::sev_feature_names(supported)
            ),
            "enable them in KVM where possible (DebugSwap: kvm_amd.debug_swap=1; RestrictedInjection needs the \
             planes kernel) or build the IGVM file without them",
        ),
        Ok(_) => {}
        Err(errno) => c.fatal(
            format!(
                "KVM cannot report its supported VMSA features (KVM_GET_DEVICE_ATTR KVM_X86_SEV_VMSA_FEATURES: {})",
                std::io::Error::from_raw_os_error(errno)
            ),
            "use a Linux 6.10 or newer host kernel with kvm_amd.sev_snp=1",
        ),
    }
    let planes = planes::supports_vmpl2(probe.check_extension(planes::KVM_CAP_PLANES));
    if !planes {
        let problem = "this KVM runs SNP guests at VMPL0 only (no KVM planes uAPI, KVM_CAP_PLANES): \
                       a guest (OVMF/Linux) at VMPL2 under the SVSM needs it";
        let fix = "for a guest at VMPL2, run the out-of-tree planes kernel (coconut-svsm/linux, branch svsm); \
                   SVSM-only boots (in-SVSM tests at VMPL0, `cargo xtask test --platform snp`) work without it";
        let severity = match planes_mode {
            PlanesMode::Require => Severity::Fatal,
            PlanesMode::Auto | PlanesMode::Off => Severity::Warning,
        };
        c.findings.push(Finding { severity, problem: problem.into(), fix: fix.into() });
    }
    Report { findings: c.findings, planes }
}

/// The real host.
pub struct RealHost {
    kvm: Option<kvm_ioctls::Kvm>,
}

impl HostProbe for RealHost {
    fn open(&self, path: &str) -> Result<(), i32> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(drop)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    }

    fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    fn check_extension(&self, cap: u32) -> i32 {
        self.kvm.as_ref().map_or(0, |k| k.check_extension_raw(u64::from(cap)))
    }

    fn vmsa_features(&self) -> Result<u64, i32> {
        match &self.kvm {
            Some(kvm) => super::kvm::supported_vmsa_features(kvm),
            None => Err(libc::ENODEV),
        }
    }
}

/// Runs the preflight on this host.
pub fn run_on_host(required_features: u64, planes_mode: PlanesMode) -> Report {
    let host = RealHost { kvm: kvm_ioctls::Kvm::new().ok() };
    check(&host, required_features, planes_mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A host with everything an SNP launch needs; tests remove one piece.
    struct FakeHost {
        devices: BTreeMap<&'static str, i32>,
        params: BTreeMap<String, String>,
        caps: BTreeMap<u32, i32>,
        vmsa_features: Result<u64, i32>,
    }

    impl FakeHost {
        fn complete() -> Self {
            FakeHost {
                devices: BTreeMap::new(),
                params: [(format!("{KVM_AMD_PARAMS}/sev_snp"), "Y\n".to_string())].into(),
                caps: [
                    (uapi::KVM_CAP_VM_TYPES, 0b11101),
                    (uapi::KVM_CAP_GUEST_MEMFD, 1),
                    (uapi::KVM_CAP_USER_MEMORY2, 1),
                    (uapi::KVM_CAP_MEMORY_ATTRIBUTES, 8),
                    (uapi::KVM_CAP_EXIT_HYPERCALL, 1 << 12),
                    (planes::KVM_CAP_PLANES, 4),
                ]
                .into(),
                vmsa_features: Ok(1 << 5),
            }
        }
    }

    impl HostProbe for FakeHost {
        fn open(&self, path: &str) -> Result<(), i32> {
            match self.devices.get(path) {
                Some(errno) => Err(*errno),
                None => Ok(()),
            }
        }

        fn read(&self, path: &str) -> Option<String> {
            self.params.get(path).cloned()
        }

        fn check_extension(&self, cap: u32) -> i32 {
            self.caps.get(&cap).copied().unwrap_or(0)
        }

        fn vmsa_features(&self) -> Result<u64, i32> {
            self.vmsa_features
        }
    }

    /// The single finding for a host that lacks one thing.
    fn only_finding(host: FakeHost, features: u64, mode: PlanesMode) -> Finding {
        let report = check(&host, features, mode);
        assert_eq!(report.findings.len(), 1, "{report}");
        report.findings[0].clone()
    }

    #[test]
    fn a_complete_host_is_ready_with_planes() {
        let report = check(&FakeHost::complete(), 1 << 5, PlanesMode::Require);
        assert!(report.findings.is_empty(), "{report}");
        assert!(report.ready());
        assert!(report.planes_available());
        assert!(report.to_string().contains("ready"));
    }

    #[test]
    fn missing_dev_kvm() {
        let mut host = FakeHost::complete();
        host.devices.insert("/dev/kvm", libc::ENOENT);
        let report = check(&host, 0, PlanesMode::Auto);
        assert!(!report.ready());
        assert_eq!(report.findings.len(), 1, "KVM checks are skipped without /dev/kvm: {report}");
        assert!(report.findings[0].problem.contains("/dev/kvm does not exist"));
        assert!(report.findings[0].fix.contains("modprobe kvm_amd"));
    }

    #[test]
    fn dev_kvm_permission() {
        let mut host = FakeHost::complete();
        host.devices.insert("/dev/kvm", libc::EACCES);
        let report = check(&host, 0, PlanesMode::Auto);
        assert!(report.findings[0].problem.contains("/dev/kvm: permission denied"));
        assert!(report.findings[0].fix.contains("usermod -aG kvm"));
    }

    #[test]
    fn missing_dev_sev() {
        let mut host = FakeHost::complete();
        host.devices.insert("/dev/sev", libc::ENOENT);
        let f = only_finding(host, 0, PlanesMode::Auto);
        assert!(f.problem.contains("/dev/sev does not exist"));
        assert!(f.fix.contains("modprobe ccp"));
    }

    #[test]
    fn dev_sev_permission() {
        let mut host = FakeHost::complete();
        host.devices.insert("/dev/sev", libc::EACCES);
        let f = only_finding(host, 0, PlanesMode::Auto);
        assert!(f.problem.contains("/dev/sev: permission denied"));
        assert!(f.fix.contains("run the launcher as root"), "{}", f.fix);
        assert!(f.fix.contains("KERNEL==\"sev\", GROUP=\"kvm\", MODE=\"0660\""), "{}", f.fix);
    }

    #[test]
    fn snp_disabled_in_kvm_amd() {
        let mut host = FakeHost::complete();
        host.params.insert(format!("{KVM_AMD_PARAMS}/sev_snp"), "N\n".into());
        let f = only_finding(host, 0, PlanesMode::Auto);
        assert!(f.problem.contains("kvm_amd.sev_snp is N"));
        assert!(f.fix.contains("sev_snp=1"));
    }

    #[test]
    fn kvm_amd_without_snp_support() {
        let mut host = FakeHost::complete();
        host.params.clear();
        let f = only_finding(host, 0, PlanesMode::Auto);
        assert!(f.problem.contains("no `sev_snp` parameter"));
        assert!(f.fix.contains("6.11"));
    }

    #[test]
    fn no_snp_vm_type() {
        let mut host = FakeHost::complete();
        host.caps.insert(uapi::KVM_CAP_VM_TYPES, 1);
        let f = only_finding(host, 0, PlanesMode::Auto);
        assert!(f.problem.contains("KVM_X86_SNP_VM"));
    }

    #[test]
    fn no_guest_memfd() {
        let mut host = FakeHost::complete();
        host.caps.remove(&uapi::KVM_CAP_GUEST_MEMFD);
        let f = only_finding(host, 0, PlanesMode::Auto);
        assert!(f.problem.contains("guest_memfd"));
    }

    #[test]
    fn no_user_memory2() {
        let mut host = FakeHost::complete();
        host.caps.remove(&uapi::KVM_CAP_USER_MEMORY2);
        let f = only_finding(host, 0, PlanesMode::Auto);
        assert!(f.problem.contains("KVM_SET_USER_MEMORY_REGION2"));
    }

    #[test]
    fn no_private_memory_attributes() {
        let mut host = FakeHost::complete();
        host.caps.insert(uapi::KVM_CAP_MEMORY_ATTRIBUTES, 0);
        let f = only_finding(host, 0, PlanesMode::Auto);
        assert!(f.problem.contains("cannot mark guest memory private"));
    }

    #[test]
    fn no_map_gpa_range_exits() {
        let mut host = FakeHost::complete();
        host.caps.insert(uapi::KVM_CAP_EXIT_HYPERCALL, 1);
        let f = only_finding(host, 0, PlanesMode::Auto);
        assert!(f.problem.contains("MAP_GPA_RANGE"));
    }

    #[test]
    fn unsupported_vmsa_features() {
        let f = only_finding(FakeHost::complete(), (1 << 3) | (1 << 5), PlanesMode::Auto);
        assert!(f.problem.contains("RestrictedInjection"), "{f}");
        assert!(!f.problem.contains("support: DebugSwap,"), "{f}");
        assert!(f.problem.contains("KVM supports: DebugSwap"), "{f}");
    }

    #[test]
    fn vmsa_features_cannot_be_read() {
        let mut host = FakeHost::complete();
        host.vmsa_features = Err(libc::ENXIO);
        let f = only_finding(host, 0, PlanesMode::Auto);
        assert!(f.problem.contains("KVM_X86_SEV_VMSA_FEATURES"));
        assert!(f.fix.contains("6.10"));
    }

    #[test]
    fn no_planes_is_a_note_unless_required() {
        let mut host = FakeHost::complete();
        host.caps.remove(&planes::KVM_CAP_PLANES);
        let report = check(&host, 0, PlanesMode::Auto);
        assert!(report.ready());
        assert!(!report.planes_available());
        let f = &report.findings[0];
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.problem.contains("VMPL2"));
        assert!(f.fix.contains("SVSM-only boots"));
        assert!(f.to_string().starts_with("note: "));
        let mut host = FakeHost::complete();
        host.caps.remove(&planes::KVM_CAP_PLANES);
        let f = only_finding(host, 0, PlanesMode::Require);
        assert_eq!(f.severity, Severity::Fatal);
    }
}
