//! A fake SNP KVM that records every call, so tests can check the launch
//! sequence (page types, order, addresses, VMSA last) without SNP hardware,
//! and can make the firmware reject the CPUID page once or fail a command.

use std::cell::RefCell;
use std::os::fd::OwnedFd;

use kvm_bindings::{kvm_cpuid_entry2, kvm_sev_init, kvm_sev_snp_launch_start, kvm_sregs};

use super::uapi::{self, IdMaterial};
use super::vmsa::VcpuState;
use super::{SevError, SnpVm, UpdateError, VmControl};
use crate::vcpu::scripted::{ScriptedVcpu, Step};
use crate::vcpu::{KvmError, Vcpu};

/// One recorded call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// KVM_SEV_INIT2.
    SevInit2 {
        /// vmsa_features.
        vmsa_features: u64,
        /// ghcb_version.
        ghcb_version: u16,
    },
    /// KVM_CAP_EXIT_HYPERCALL.
    EnableExitHypercall(u64),
    /// guest_memfd + memory slot.
    AddMemoryRegion {
        /// Slot.
        slot: u32,
        /// Address.
        gpa: u64,
        /// Size.
        size: u64,
    },
    /// SNP_LAUNCH_START.
    LaunchStart {
        /// Policy.
        policy: u64,
    },
    /// KVM_SET_MEMORY_ATTRIBUTES.
    SetMemoryAttributes {
        /// Address.
        gpa: u64,
        /// Size.
        size: u64,
        /// Private or shared.
        private: bool,
    },
    /// SNP_LAUNCH_UPDATE.
    LaunchUpdate {
        /// Address.
        gpa: u64,
        /// Length.
        len: u64,
        /// Page type.
        page_type: u8,
        /// The first 16 bytes of the source.
        head: Vec<u8>,
    },
    /// vCPU 0 created (with CPUID).
    CreateVcpu,
    /// vCPU 0's state set (a summary; [`FakeSnp::vcpu_state`] keeps all
    /// of it).
    SetVcpuState {
        /// RIP.
        rip: u64,
        /// RSP.
        rsp: u64,
        /// CR0.
        cr0: u64,
        /// EFER.
        efer: u64,
        /// CS selector.
        cs: u16,
        /// XCR0.
        xcr0: u64,
        /// PAT.
        pat: u64,
    },
    /// SNP_LAUNCH_FINISH.
    LaunchFinish {
        /// ID block present.
        id_block: bool,
        /// The ID block's launch digest (first 4 bytes).
        ld_head: Vec<u8>,
        /// Host data.
        host_data: [u8; 32],
    },
    /// KVM_CREATE_PLANE.
    CreatePlane(u32),
    /// KVM_CREATE_VCPU on a plane.
    CreatePlaneVcpu {
        /// Plane.
        plane: u32,
        /// APIC ID.
        apic_id: u64,
    },
}

/// The VM-level half of the fake (shared with the run loop).
pub struct FakeControl {
    calls: RefCell<Vec<Call>>,
    /// The value KVM_CHECK_EXTENSION returns for every capability.
    pub extension_value: i32,
}

impl FakeControl {
    fn record(&self, call: Call) {
        self.calls.borrow_mut().push(call);
    }
}

/// The recording fake.
pub struct FakeSnp {
    /// The VM-level calls.
    pub control: FakeControl,
    /// When set, the first CPUID LAUNCH_UPDATE fails with INVALID_PARAM and
    /// writes this corrected page back.
    pub cpuid_correction: Option<Vec<u8>>,
    /// When set, the CPUID page is rejected every time.
    pub cpuid_always_rejected: bool,
    /// When set, LAUNCH_FINISH fails with this firmware status.
    pub finish_fw_error: Option<u32>,
    /// Every accepted LAUNCH_UPDATE: GPA, page type, the whole source.
    pub updates: Vec<(u64, u8, Vec<u8>)>,
    /// The ID block and ID auth structure LAUNCH_FINISH got.
    pub finish_id: Option<IdMaterial>,
    /// The whole vCPU state the launcher set last.
    pub vcpu_state: Option<VcpuState>,
    vcpu: ScriptedVcpu,
}

impl Default for FakeSnp {
    fn default() -> Self {
        FakeSnp::new()
    }
}

impl FakeSnp {
    /// A fake whose commands all succeed.
    pub fn new() -> Self {
        FakeSnp {
            control: FakeControl { calls: RefCell::new(Vec::new()), extension_value: 0 },
            cpuid_correction: None,
            cpuid_always_rejected: false,
            finish_fw_error: None,
            updates: Vec::new(),
            finish_id: None,
            vcpu_state: None,
            vcpu: ScriptedVcpu::new(Vec::new()),
        }
    }

    /// Sets the exits the vCPU replays after launch.
    pub fn script(&mut self, steps: Vec<Step>) {
        self.vcpu = ScriptedVcpu::new(steps);
    }

    /// The values the run loop returned to the scripted vCPU.
    pub fn returned(&self) -> &[u64] {
        &self.vcpu.returned
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.control.calls.borrow().clone()
    }

    fn record(&self, call: Call) {
        self.control.record(call);
    }
}

fn fake_fd() -> Result<OwnedFd, KvmError> {
    std::fs::File::open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|source| KvmError { op: "fake fd", source })
}

impl VmControl for FakeControl {
    fn set_memory_attributes(&self, gpa: u64, size: u64, private: bool) -> Result<(), KvmError> {
        self.record(Call::SetMemoryAttributes { gpa, size, private });
        Ok(())
    }

    fn check_extension(&self, _cap: u32) -> i32 {
        self.extension_value
    }

    fn create_plane(&self, plane: u32) -> Result<OwnedFd, KvmError> {
        self.record(Call::CreatePlane(plane));
        fake_fd()
    }

    fn create_plane_vcpu(&self, _plane_fd: &OwnedFd, apic_id: u64) -> Result<OwnedFd, KvmError> {
        let plane = self
            .calls
            .borrow()
            .iter()
            .rev()
            .find_map(|c| match c {
                Call::CreatePlane(p) => Some(*p),
                _ => None,
            })
            .unwrap_or(0);
        self.record(Call::CreatePlaneVcpu { plane, apic_id });
        fake_fd()
    }
}

impl SnpVm for FakeSnp {
    fn control(&self) -> &dyn VmControl {
        &self.control
    }

    fn sev_init2(&mut self, init: &kvm_sev_init) -> Result<(), SevError> {
        self.record(Call::SevInit2 {
            vmsa_features: init.vmsa_features,
            ghcb_version: init.ghcb_version,
        });
        Ok(())
    }

    fn enable_exit_hypercall(&mut self, mask: u64) -> Result<(), KvmError> {
        self.record(Call::EnableExitHypercall(mask));
        Ok(())
    }

    fn add_memory_region(
        &mut self,
        slot: u32,
        gpa: u64,
        size: u64,
        _host_addr: u64,
    ) -> Result<(), KvmError> {
        self.record(Call::AddMemoryRegion { slot, gpa, size });
        Ok(())
    }

    fn launch_start(&mut self, start: &kvm_sev_snp_launch_start) -> Result<(), SevError> {
        self.record(Call::LaunchStart { policy: start.policy });
        Ok(())
    }

    fn launch_update(
        &mut self,
        gfn: u64,
        data: &mut [u8],
        page_type: u8,
    ) -> Result<(), UpdateError> {
        self.record(Call::LaunchUpdate {
            gpa: gfn * 4096,
            len: data.len() as u64,
            page_type,
            head: data[..16.min(data.len())].to_vec(),
        });
        let rejected = || SevError {
            op: "SNP_LAUNCH_UPDATE",
            errno: libc::EIO,
            fw_error: uapi::SEV_RET_INVALID_PARAM,
        };
        if page_type == uapi::PAGE_TYPE_CPUID {
            if self.cpuid_always_rejected {
                return Err(rejected().into());
            }
            if let Some(corrected) = self.cpuid_correction.take() {
                data.copy_from_slice(&corrected);
                return Err(rejected().into());
            }
        }
        self.updates.push((gfn * 4096, page_type, data.to_vec()));
        Ok(())
    }

    fn create_vcpu(&mut self) -> Result<(), KvmError> {
        self.record(Call::CreateVcpu);
        Ok(())
    }

    fn supported_cpuid(&self) -> Result<Vec<kvm_cpuid_entry2>, KvmError> {
        Ok(vec![kvm_cpuid_entry2 { function: 1, eax: 0x00a0_0f11, ..Default::default() }])
    }

    fn vcpu_sregs(&self) -> Result<kvm_sregs, KvmError> {
        Ok(kvm_sregs::default())
    }

    fn set_vcpu_state(&mut self, s: &VcpuState) -> Result<(), KvmError> {
        self.record(Call::SetVcpuState {
            rip: s.regs.rip,
            rsp: s.regs.rsp,
            cr0: s.sregs.cr0,
            efer: s.sregs.efer,
            cs: s.sregs.cs.selector,
            xcr0: s.xcr0,
            pat: s.pat,
        });
        self.vcpu_state = Some(s.clone());
        Ok(())
    }

    fn launch_finish(
        &mut self,
        id: Option<&IdMaterial>,
        host_data: &[u8; 32],
    ) -> Result<(), SevError> {
        self.record(Call::LaunchFinish {
            id_block: id.is_some(),
            ld_head: id.map(|i| i.block.ld[..4].to_vec()).unwrap_or_default(),
            host_data: *host_data,
        });
        self.finish_id = id.cloned();
        match self.finish_fw_error {
            Some(fw_error) => Err(SevError { op: "SNP_LAUNCH_FINISH", errno: libc::EIO, fw_error }),
            None => Ok(()),
        }
    }

    fn parts(&mut self) -> Result<(&mut dyn Vcpu, &dyn VmControl), KvmError> {
        Ok((&mut self.vcpu, &self.control))
    }
}
