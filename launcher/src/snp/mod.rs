//! Launching the IGVM file's SEV-SNP platform on an SNP host.
//!
//! The sequence (igvm-and-launch.md §5.3, snp-svsm.md §8.11):
//! KVM_SEV_INIT2 (vmsa_features from the IGVM VMSA) → KVM_CAP_EXIT_HYPERCALL
//! → guest_memfd-backed memory slots → SNP_LAUNCH_START (the IGVM policy) →
//! vCPU 0 with KVM's CPUID → for each import in file order: mark it private,
//! copy it into the shared mapping, SNP_LAUNCH_UPDATE with its page type →
//! required memory made private → the VMSA applied to vCPU 0 →
//! SNP_LAUNCH_FINISH (ID block/auth, host data). Every KVM call goes through
//! [`SnpVm`], so [`fake::FakeSnp`] records the sequence in tests, and
//! [`measure`] replays it to compute the launch digest it implies.
//!
//! At run time, page-state changes arrive as MAP_GPA_RANGE hypercalls and
//! implicit conversions as memory faults; both flip the KVM memory
//! attributes. Planes (multi-VMPL) events are handled in [`planes`].

pub mod cpuid;
pub mod fake;
pub mod kvm;
pub mod measure;
pub mod planes;
pub mod preflight;
pub mod uapi;
pub mod vmsa;

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_cpuid_entry2, kvm_sev_init, kvm_sev_snp_launch_start, kvm_sregs};
use thiserror::Error;

use crate::guest_memory::{GuestMemory, OutOfRange};
use crate::igvm_load::{IgvmImage, IgvmLoadError, LoadPlan, PageKind, Platform, StartContext};
use crate::layout::{GuestLayout, LayoutError, PAGE_SIZE};
use crate::vcpu::{Ending, ExitHooks, KvmError, PortBus, RunError, Vcpu, run_vcpu};
use crate::watchdog::Watchdog;
use uapi::IdMaterial;
use vmsa::VcpuState;

/// Whether to use the KVM planes uAPI (a guest at VMPL>0 under the SVSM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanesMode {
    /// Use it when the host has it; otherwise boot at VMPL0 only.
    Auto,
    /// Never use it (SVSM-only boots).
    Off,
    /// Fail unless the host has it.
    Require,
}

/// A failed SEV command, with the firmware status.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{op} failed: {}; firmware status {fw_error:#x} ({})", io::Error::from_raw_os_error(*errno), uapi::firmware_status_name(*fw_error))]
pub struct SevError {
    /// The command.
    pub op: &'static str,
    /// The errno of the ioctl.
    pub errno: i32,
    /// `kvm_sev_cmd.error`.
    pub fw_error: u32,
}

/// A failed SNP_LAUNCH_UPDATE of one range.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UpdateError {
    /// The command failed.
    #[error(transparent)]
    Sev(#[from] SevError),
    /// KVM answered EAGAIN/EINTR too many times in a row.
    #[error(
        "SNP_LAUNCH_UPDATE at GFN {gfn:#x} was interrupted {retries} times in a row ({left:#x} bytes left); the last answer: {last}. Retry the launch; if it persists, the host is starved of memory or a signal keeps arriving"
    )]
    Interrupted {
        /// The first GFN not yet done.
        gfn: u64,
        /// Bytes not yet done.
        left: u64,
        /// How many retries were made.
        retries: u32,
        /// The last failure.
        last: SevError,
    },
    /// KVM reported success but did not advance the range.
    #[error(
        "SNP_LAUNCH_UPDATE at GFN {gfn:#x} returned success without processing a page ({left:#x} bytes left); the host KVM breaks its documented contract (on success gfn_start, uaddr and len describe the part not yet done, Documentation/virt/kvm/x86/amd-memory-encryption.rst). Report it with the kernel version (uname -r)"
    )]
    NoProgress {
        /// The first GFN not yet done.
        gfn: u64,
        /// Bytes not yet done.
        left: u64,
    },
    /// KVM wrote back a remainder that does not follow from the pages done.
    #[error(
        "SNP_LAUNCH_UPDATE wrote back an impossible remainder: before gfn {:#x} uaddr {:#x} len {:#x}, after gfn {:#x} uaddr {:#x} len {:#x} (expected len to shrink by whole pages, gfn to advance by as many pages, uaddr to advance by as many bytes or stay); report it with the kernel version (uname -r)",
        before.0, before.1, before.2, after.0, after.1, after.2
    )]
    Inconsistent {
        /// gfn_start, uaddr, len before the call.
        before: (u64, u64, u64),
        /// The same after it.
        after: (u64, u64, u64),
    },
}

/// Why an SNP launch could not run.
#[derive(Debug, Error)]
pub enum SnpError {
    /// The IGVM file is not loadable.
    #[error(transparent)]
    Load(#[from] IgvmLoadError),
    /// The memory size or firmware placement is not usable.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// More than one vCPU was asked for.
    #[error(
        "--cpus {0}: the SNP launch runs exactly one vCPU: the launcher creates only vCPU 0 and tells the guest a VP count of 1 (more would each need a VMSA measured at LAUNCH_FINISH, or creating for the guest's AP-creation requests, which this launcher does not do); use --cpus 1"
    )]
    Cpus(u32),
    /// The host lacks something the launch needs.
    #[error("this host cannot launch the SNP guest:\n{0}")]
    Preflight(preflight::Report),
    /// Host memory for the guest could not be mapped.
    #[error("mapping guest memory failed: {0}; lower --memory")]
    Memory(io::Error),
    /// A page did not fit guest memory.
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
    /// A KVM call failed.
    #[error(transparent)]
    Kvm(#[from] KvmError),
    /// An SEV command failed.
    #[error(transparent)]
    Sev(#[from] SevError),
    /// A LAUNCH_UPDATE failed.
    #[error(transparent)]
    Update(#[from] UpdateError),
    /// The VMSA cannot be reproduced by KVM.
    #[error("{0}")]
    Vmsa(String),
    /// The CPUID page is unusable or was rejected twice.
    #[error("{0}")]
    Cpuid(String),
    /// /dev/kvm or /dev/sev cannot be used.
    #[error("{0}")]
    Device(String),
    /// The watchdog could not start.
    #[error("starting the watchdog failed: {0}")]
    Watchdog(io::Error),
    /// The run loop failed.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// VM-level KVM calls that are also needed while the guest runs.
pub trait VmControl {
    /// KVM_SET_MEMORY_ATTRIBUTES: private or shared.
    fn set_memory_attributes(&self, gpa: u64, size: u64, private: bool) -> Result<(), KvmError>;
    /// KVM_CHECK_EXTENSION on the VM.
    fn check_extension(&self, cap: u32) -> i32;
    /// KVM_CREATE_PLANE (planes series).
    fn create_plane(&self, plane: u32) -> Result<OwnedFd, KvmError>;
    /// KVM_CREATE_VCPU on a plane fd (planes series).
    fn create_plane_vcpu(&self, plane: &OwnedFd, apic_id: u64) -> Result<OwnedFd, KvmError>;
}

/// Every KVM call of an SNP launch.
pub trait SnpVm {
    /// The VM-level calls.
    fn control(&self) -> &dyn VmControl;
    /// KVM_SEV_INIT2.
    fn sev_init2(&mut self, init: &kvm_sev_init) -> Result<(), SevError>;
    /// KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL) with `mask`.
    fn enable_exit_hypercall(&mut self, mask: u64) -> Result<(), KvmError>;
    /// A guest_memfd plus KVM_SET_USER_MEMORY_REGION2 for one region whose
    /// shared half is mapped at `host_addr`.
    fn add_memory_region(
        &mut self,
        slot: u32,
        gpa: u64,
        size: u64,
        host_addr: u64,
    ) -> Result<(), KvmError>;
    /// SNP_LAUNCH_START.
    fn launch_start(&mut self, start: &kvm_sev_snp_launch_start) -> Result<(), SevError>;
    /// SNP_LAUNCH_UPDATE of `data` into `gfn..`, until the whole range is
    /// done. For CPUID pages the firmware may rewrite `data`.
    fn launch_update(
        &mut self,
        gfn: u64,
        data: &mut [u8],
        page_type: u8,
    ) -> Result<(), UpdateError>;
    /// Creates vCPU 0 and gives it KVM's supported CPUID.
    fn create_vcpu(&mut self) -> Result<(), KvmError>;
    /// KVM's supported CPUID.
    fn supported_cpuid(&self) -> Result<Vec<kvm_cpuid_entry2>, KvmError>;
    /// vCPU 0's reset segment state.
    fn vcpu_sregs(&self) -> Result<kvm_sregs, KvmError>;
    /// Sets vCPU 0's registers (regs, sregs, FPU, XCR0, debug regs, PAT).
    fn set_vcpu_state(&mut self, state: &VcpuState) -> Result<(), KvmError>;
    /// SNP_LAUNCH_FINISH.
    fn launch_finish(
        &mut self,
        id: Option<&IdMaterial>,
        host_data: &[u8; 32],
    ) -> Result<(), SevError>;
    /// The vCPU and the VM-level calls, for the run loop.
    fn parts(&mut self) -> Result<(&mut dyn Vcpu, &dyn VmControl), KvmError>;
}

/// What an SNP launch needs besides the file.
#[derive(Clone, Debug)]
pub struct SnpOptions {
    /// Guest memory in bytes.
    pub memory: u64,
    /// vCPU count.
    pub cpus: u32,
    /// Watchdog timeout.
    pub timeout: Duration,
    /// LAUNCH_FINISH host data.
    pub host_data: [u8; 32],
    /// Planes (multi-VMPL) use.
    pub planes: PlanesMode,
}

/// A checked SNP plan.
#[derive(Debug)]
pub struct Prepared {
    /// Guest memory layout.
    pub layout: GuestLayout,
    /// The load plan.
    pub plan: LoadPlan,
    /// INIT2 vmsa_features: the VMSA's SEV_FEATURES without SNPActive.
    pub vmsa_features: u64,
}

/// The SEV features (without SNPActive) the file's VMSA needs from KVM.
pub fn required_vmsa_features(igvm: &[u8]) -> Result<u64, IgvmLoadError> {
    let image = IgvmImage::parse(igvm, Platform::Snp)?;
    Ok(image.vmsa_sev_features().unwrap_or(0) & !vmsa::SEV_FEATURE_SNP)
}

/// Parses `host_data` as 64 hex digits.
pub fn parse_host_data(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    if text.len() != 64 {
        return Err(format!("host data must be 64 hex digits (32 bytes), got {}", text.len()));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("`{text}` is not hexadecimal"))?;
    }
    Ok(out)
}

/// Parses the file's SNP platform and checks it can be launched.
pub fn prepare(igvm: &[u8], options: &SnpOptions) -> Result<Prepared, SnpError> {
    if options.cpus != 1 {
        return Err(SnpError::Cpus(options.cpus));
    }
    let image = IgvmImage::parse(igvm, Platform::Snp)?;
    let layout = GuestLayout::new(options.memory, image.firmware_range())?;
    let plan = image.plan(&layout, options.cpus)?;
    let StartContext::Snp(vmsa) = &plan.start else {
        return Err(SnpError::Vmsa("the SNP platform has a native start context".into()));
    };
    vmsa::check_vmsa(vmsa).map_err(SnpError::Vmsa)?;
    let vmsa_features = vmsa.sev_features.into_bits() & !vmsa::SEV_FEATURE_SNP;
    measure::check_reproducible(vmsa, vmsa_features).map_err(SnpError::Vmsa)?;
    Ok(Prepared { layout, plan, vmsa_features })
}

fn page_type(kind: PageKind) -> u8 {
    match kind {
        PageKind::Normal | PageKind::Zero => uapi::PAGE_TYPE_NORMAL,
        PageKind::Unmeasured | PageKind::Parameter => uapi::PAGE_TYPE_UNMEASURED,
        PageKind::Secrets => uapi::PAGE_TYPE_SECRETS,
        PageKind::Cpuid => uapi::PAGE_TYPE_CPUID,
    }
}

/// Runs the launch sequence on `vm`, with `memory` as the shared backing.
pub fn launch(
    vm: &mut dyn SnpVm,
    prepared: &Prepared,
    memory: &mut GuestMemory,
    host_data: &[u8; 32],
) -> Result<(), SnpError> {
    let plan = &prepared.plan;
    let StartContext::Snp(vmsa) = &plan.start else {
        return Err(SnpError::Vmsa("the SNP platform has a native start context".into()));
    };
    let policy = plan.policy.ok_or_else(|| SnpError::Vmsa("no SNP guest policy".into()))?;
    vm.sev_init2(&uapi::init2(prepared.vmsa_features))?;
    vm.enable_exit_hypercall(1 << uapi::KVM_HC_MAP_GPA_RANGE)?;
    for (slot, host) in memory.regions().iter().enumerate() {
        let r = host.region();
        vm.add_memory_region(slot as u32, r.gpa, r.size, host.host_addr())?;
    }
    vm.launch_start(&uapi::launch_start(policy))?;
    vm.create_vcpu()?;
    let supported = vm.supported_cpuid()?;
    for import in &plan.imports {
        let len = import.data.len() as u64;
        vm.control().set_memory_attributes(import.gpa, len, true)?;
        let buffer = memory.slice_mut(import.gpa, len)?;
        buffer.copy_from_slice(&import.data);
        let gfn = import.gpa / PAGE_SIZE;
        let kind = page_type(import.kind);
        if import.kind == PageKind::Cpuid {
            update_cpuid(vm, gfn, buffer, &supported)?;
        } else {
            vm.launch_update(gfn, buffer, kind)?;
        }
    }
    for range in &plan.required {
        vm.control().set_memory_attributes(range.start, range.end - range.start, true)?;
    }
    let state = vmsa::vcpu_state(vmsa, vm.vcpu_sregs()?);
    vm.set_vcpu_state(&state)?;
    let id = plan.id_block.as_ref().map(|d| IdMaterial::from_directive(d, policy));
    vm.launch_finish(id.as_ref(), host_data)?;
    Ok(())
}

/// Fills and launches the CPUID page; when the firmware corrects it, logs
/// what changed and retries once with the corrected table.
fn update_cpuid(
    vm: &mut dyn SnpVm,
    gfn: u64,
    page: &mut [u8],
    supported: &[kvm_cpuid_entry2],
) -> Result<(), SnpError> {
    cpuid::fill(page, supported).map_err(SnpError::Cpuid)?;
    let ours = page.to_vec();
    match vm.launch_update(gfn, page, uapi::PAGE_TYPE_CPUID) {
        Err(UpdateError::Sev(e)) if e.fw_error == uapi::SEV_RET_INVALID_PARAM => {
            let changes = cpuid::differences(&ours, page);
            log::warn!(
                "the firmware corrected the CPUID page at GFN {gfn:#x} ({} entries): {}; retrying with its values",
                changes.len(),
                changes.join("; ")
            );
            vm.launch_update(gfn, page, uapi::PAGE_TYPE_CPUID).map_err(|e| {
                SnpError::Cpuid(format!("the firmware rejected the corrected CPUID page too: {e}"))
            })
        }
        other => other.map_err(SnpError::from),
    }
}

/// Run-time exits of an SNP guest: page-state changes, memory faults and
/// planes events.
pub struct SnpHooks<'a> {
    control: &'a dyn VmControl,
    planes: Option<planes::Planes>,
}

impl<'a> SnpHooks<'a> {
    /// Hooks over `control`; `planes` when multi-VMPL is in use.
    pub fn new(control: &'a dyn VmControl, planes: Option<planes::Planes>) -> Self {
        SnpHooks { control, planes }
    }

    fn convert(&self, gpa: u64, size: u64, private: bool) -> Result<(), KvmError> {
        let start = gpa & !(PAGE_SIZE - 1);
        let end = gpa.saturating_add(size).next_multiple_of(PAGE_SIZE);
        self.control.set_memory_attributes(start, end - start, private)
    }
}

impl ExitHooks for SnpHooks<'_> {
    fn hypercall(&mut self, nr: u64, args: &[u64; 6]) -> Result<u64, RunError> {
        if nr != uapi::KVM_HC_MAP_GPA_RANGE {
            log::debug!("hypercall {nr} is not handled");
            return Ok(crate::vcpu::KVM_ENOSYS);
        }
        let [gpa, pages, attributes, ..] = *args;
        let size = pages.checked_mul(PAGE_SIZE);
        let Some(size) = size.filter(|s| *s > 0 && gpa % PAGE_SIZE == 0) else {
            log::warn!("MAP_GPA_RANGE with a bad range: gpa {gpa:#x}, {pages} pages");
            return Ok(uapi::KVM_EINVAL_RET);
        };
        let private = attributes & uapi::KVM_MAP_GPA_RANGE_ENCRYPTED != 0;
        match self.convert(gpa, size, private) {
            Ok(()) => Ok(0),
            Err(e) => {
                log::warn!("page-state change of {gpa:#x}+{size:#x} failed: {e}");
                Ok(uapi::KVM_EINVAL_RET)
            }
        }
    }

    fn memory_fault(&mut self, gpa: u64, size: u64, flags: u64) -> Result<(), RunError> {
        let private = flags & uapi::KVM_MEMORY_EXIT_FLAG_PRIVATE != 0;
        self.convert(gpa, size, private).map_err(RunError::from)
    }

    fn unsupported(&mut self, reason: u32, union: &[u8; 256]) -> Result<bool, RunError> {
        match &mut self.planes {
            Some(p) if reason == planes::KVM_EXIT_PLANE_EVENT => {
                p.handle_event(self.control, union).map_err(RunError::Hook)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Runs a launched SNP guest until it stops.
pub fn run_launched(
    vm: &mut dyn SnpVm,
    memory: &GuestMemory,
    planes: Option<planes::Planes>,
    console: &mut dyn Write,
    timeout: Duration,
) -> Result<Ending, SnpError> {
    let watchdog = Watchdog::start(timeout).map_err(SnpError::Watchdog)?;
    let (vcpu, control) = vm.parts()?;
    let mut hooks = SnpHooks::new(control, planes);
    let note = |suberror| crate::host::internal_error_note(suberror, None);
    Ok(run_vcpu(vcpu, &mut PortBus::new(console), &mut hooks, &watchdog, Some(memory), &note)?)
}

/// Checks the host, launches the SNP platform of `igvm` and runs it.
pub fn boot(
    igvm: &[u8],
    options: &SnpOptions,
    console: &mut dyn Write,
) -> Result<Ending, SnpError> {
    let started = Instant::now();
    let prepared = prepare(igvm, options)?;
    let report = preflight::run_on_host(prepared.vmsa_features, options.planes);
    for warning in report.warnings() {
        log::warn!("{warning}");
    }
    if !report.ready() {
        return Err(SnpError::Preflight(report));
    }
    // Guest memory is declared before the VM so that it outlives the slots.
    let mut memory = GuestMemory::new(&prepared.layout).map_err(SnpError::Memory)?;
    let mut vm = kvm::KvmSnp::create()?;
    // The plane count is a property of the VM type, so ask the SNP VM too.
    let vm_planes = planes::supports_vmpl2(vm.control().check_extension(planes::KVM_CAP_PLANES));
    let planes = match (report.planes_available() || vm_planes, options.planes) {
        (true, PlanesMode::Auto | PlanesMode::Require) => Some(planes::Planes::new()),
        (false, PlanesMode::Require) => return Err(SnpError::Preflight(report)),
        _ => None,
    };
    launch(&mut vm, &prepared, &mut memory, &options.host_data)?;
    log::info!(
        "SNP launch finished: {} imports, {}, in {:.1} ms",
        prepared.plan.imports.len(),
        prepared.layout,
        started.elapsed().as_secs_f64() * 1e3
    );
    run_launched(&mut vm, &memory, planes, console, options.timeout)
}

#[cfg(test)]
mod tests;
