//! The real [`SnpVm`]: kvm-ioctls calls with the kvm-bindings SNP structs,
//! SEV commands through `VmFd::encrypt_op_sev`, and the two ioctls
//! kvm-ioctls does not wrap (KVM_GET_DEVICE_ATTR on /dev/kvm, and the planes
//! series' KVM_CREATE_PLANE / KVM_CREATE_VCPU on a plane fd).
//!
//! None of this can run without an SNP host; the sequence it is driven by is
//! tested against [`super::fake::FakeSnp`].

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use kvm_bindings::{
    KVM_MAX_CPUID_ENTRIES, Msrs, kvm_cpuid_entry2, kvm_create_guest_memfd, kvm_debugregs,
    kvm_device_attr, kvm_enable_cap, kvm_memory_attributes, kvm_msr_entry, kvm_sev_cmd,
    kvm_sev_init, kvm_sev_snp_launch_start, kvm_sregs, kvm_userspace_memory_region2, kvm_xcr,
    kvm_xcrs,
};
use kvm_ioctls::{Kvm, VmFd};
use vmm_sys_util::ioctl::{ioctl_with_ref, ioctl_with_val};
use vmm_sys_util::{ioctl_io_nr, ioctl_iow_nr};

use super::uapi::{self, IdMaterial};
use super::vmsa::{MSR_IA32_PAT, VcpuState};
use super::{SevError, SnpError, SnpVm, VmControl, planes};
use crate::host;
use crate::vcpu::{KvmError, KvmVcpu, Vcpu};

const KVMIO: u32 = 0xAE;
ioctl_iow_nr!(KVM_GET_DEVICE_ATTR, KVMIO, 0xe2, kvm_device_attr);
ioctl_io_nr!(KVM_CREATE_PLANE, KVMIO, planes::KVM_CREATE_PLANE_NR as u32);
ioctl_io_nr!(KVM_CREATE_VCPU, KVMIO, 0x41);

/// Bounds the retries of a LAUNCH_UPDATE that KVM interrupts (EAGAIN/EINTR).
const MAX_UPDATE_RETRIES: u32 = 1000;

/// Reads KVM's supported VMSA features (KVM_X86_SEV_VMSA_FEATURES) from the
/// /dev/kvm fd; the error is the errno.
pub fn supported_vmsa_features(kvm: &Kvm) -> Result<u64, i32> {
    let mut features = 0u64;
    let attr = kvm_device_attr {
        flags: 0,
        group: uapi::KVM_X86_GRP_SEV,
        attr: uapi::KVM_X86_SEV_VMSA_FEATURES,
        addr: std::ptr::from_mut(&mut features) as u64,
    };
    // SAFETY: KVM_GET_DEVICE_ATTR reads `attr` and writes one u64 to
    // `attr.addr`, which points at `features`, live for the call.
    let rc = unsafe { ioctl_with_ref(kvm, KVM_GET_DEVICE_ATTR(), &attr) };
    if rc < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    } else {
        Ok(features)
    }
}

/// The VM-level half: the VM fd.
pub struct KvmControl {
    vm: VmFd,
}

impl VmControl for KvmControl {
    fn set_memory_attributes(&self, gpa: u64, size: u64, private: bool) -> Result<(), KvmError> {
        let attributes = if private { uapi::KVM_MEMORY_ATTRIBUTE_PRIVATE } else { 0 };
        self.vm
            .set_memory_attributes(kvm_memory_attributes {
                address: gpa,
                size,
                attributes,
                flags: 0,
            })
            .map_err(|e| KvmError::new("KVM_SET_MEMORY_ATTRIBUTES", e))
    }

    fn check_extension(&self, cap: u32) -> i32 {
        self.vm.check_extension_raw(u64::from(cap))
    }

    fn create_plane(&self, plane: u32) -> Result<OwnedFd, KvmError> {
        // SAFETY: KVM_CREATE_PLANE takes the plane id by value and returns a
        // new fd or -1; no memory is passed.
        let fd = unsafe { ioctl_with_val(&self.vm, KVM_CREATE_PLANE(), u64::from(plane)) };
        owned_fd(fd, "KVM_CREATE_PLANE")
    }

    fn create_plane_vcpu(&self, plane: &OwnedFd, apic_id: u64) -> Result<OwnedFd, KvmError> {
        // SAFETY: KVM_CREATE_VCPU takes the vCPU id by value and returns a
        // new fd or -1; `plane` is a live plane fd.
        let fd = unsafe { ioctl_with_val(plane, KVM_CREATE_VCPU(), apic_id) };
        owned_fd(fd, "KVM_CREATE_VCPU (plane)")
    }
}

fn owned_fd(fd: i32, op: &'static str) -> Result<OwnedFd, KvmError> {
    if fd < 0 {
        return Err(KvmError { op, source: std::io::Error::last_os_error() });
    }
    // SAFETY: the ioctl returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An SNP VM on this host's KVM.
pub struct KvmSnp {
    kvm: Kvm,
    sev: File,
    control: KvmControl,
    vcpu: Option<KvmVcpu>,
    guest_memfds: Vec<OwnedFd>,
}

impl KvmSnp {
    /// Opens /dev/kvm and /dev/sev and creates a KVM_X86_SNP_VM.
    pub fn create() -> Result<Self, SnpError> {
        let kvm = host::open_kvm().map_err(SnpError::Device)?;
        let sev = OpenOptions::new().read(true).write(true).open("/dev/sev").map_err(|e| {
            SnpError::Device(host::device_problem("/dev/sev", e.raw_os_error().unwrap_or(0)))
        })?;
        let vm = kvm
            .create_vm_with_type(uapi::KVM_X86_SNP_VM)
            .map_err(|e| KvmError::new("KVM_CREATE_VM (KVM_X86_SNP_VM)", e))?;
        Ok(KvmSnp { kvm, sev, control: KvmControl { vm }, vcpu: None, guest_memfds: Vec::new() })
    }

    fn sev_command<T>(&self, op: &'static str, id: u32, data: &mut T) -> Result<(), SevError> {
        let mut cmd = kvm_sev_cmd {
            id,
            data: std::ptr::from_mut(data) as u64,
            sev_fd: self.sev.as_raw_fd() as u32,
            ..Default::default()
        };
        self.control.vm.encrypt_op_sev(&mut cmd).map_err(|e| SevError {
            op,
            errno: e.errno(),
            fw_error: cmd.error,
        })
    }

    fn vcpu(&self) -> Result<&KvmVcpu, KvmError> {
        self.vcpu.as_ref().ok_or(KvmError {
            op: "vCPU access",
            source: std::io::Error::other("vCPU 0 has not been created"),
        })
    }
}

impl SnpVm for KvmSnp {
    fn control(&self) -> &dyn VmControl {
        &self.control
    }

    fn sev_init2(&mut self, init: &kvm_sev_init) -> Result<(), SevError> {
        let mut init = *init;
        self.sev_command("KVM_SEV_INIT2", uapi::KVM_SEV_INIT2, &mut init)
    }

    fn enable_exit_hypercall(&mut self, mask: u64) -> Result<(), KvmError> {
        let mut cap = kvm_enable_cap { cap: uapi::KVM_CAP_EXIT_HYPERCALL, ..Default::default() };
        cap.args[0] = mask;
        self.control
            .vm
            .enable_cap(&cap)
            .map_err(|e| KvmError::new("KVM_ENABLE_CAP(EXIT_HYPERCALL)", e))
    }

    fn add_memory_region(
        &mut self,
        slot: u32,
        gpa: u64,
        size: u64,
        host_addr: u64,
    ) -> Result<(), KvmError> {
        let fd = self
            .control
            .vm
            .create_guest_memfd(kvm_create_guest_memfd { size, flags: 0, reserved: [0; 6] })
            .map_err(|e| KvmError::new("KVM_CREATE_GUEST_MEMFD", e))?;
        // SAFETY: KVM_CREATE_GUEST_MEMFD returned a new fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let region = kvm_userspace_memory_region2 {
            slot,
            flags: uapi::KVM_MEM_GUEST_MEMFD,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host_addr,
            guest_memfd_offset: 0,
            guest_memfd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: `host_addr` is the guest memory mapping of this region,
        // which the caller keeps alive longer than this VM (it is declared
        // before the VM in `snp::boot`); the guest_memfd is kept in `self`.
        unsafe { self.control.vm.set_user_memory_region2(region) }
            .map_err(|e| KvmError::new("KVM_SET_USER_MEMORY_REGION2", e))?;
        self.guest_memfds.push(fd);
        Ok(())
    }

    fn launch_start(&mut self, start: &kvm_sev_snp_launch_start) -> Result<(), SevError> {
        let mut start = *start;
        self.sev_command("SNP_LAUNCH_START", uapi::KVM_SEV_SNP_LAUNCH_START, &mut start)
    }

    fn launch_update(&mut self, gfn: u64, data: &mut [u8], page_type: u8) -> Result<(), SevError> {
        // KVM reads (and for a rejected CPUID page writes back) `data` via
        // `uaddr`; `data` stays borrowed for the whole loop.
        let mut update =
            uapi::launch_update(gfn, data.as_mut_ptr() as u64, data.len() as u64, page_type);
        let mut retries = 0;
        while update.len > 0 {
            match self.sev_command(
                "SNP_LAUNCH_UPDATE",
                uapi::KVM_SEV_SNP_LAUNCH_UPDATE,
                &mut update,
            ) {
                Ok(()) => {}
                Err(e)
                    if (e.errno == libc::EAGAIN || e.errno == libc::EINTR)
                        && retries < MAX_UPDATE_RETRIES =>
                {
                    retries += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn create_vcpu(&mut self) -> Result<(), KvmError> {
        let fd = self.control.vm.create_vcpu(0).map_err(|e| KvmError::new("KVM_CREATE_VCPU", e))?;
        let cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| KvmError::new("KVM_GET_SUPPORTED_CPUID", e))?;
        fd.set_cpuid2(&cpuid).map_err(|e| KvmError::new("KVM_SET_CPUID2", e))?;
        self.vcpu = Some(KvmVcpu::new(fd));
        Ok(())
    }

    fn supported_cpuid(&self) -> Result<Vec<kvm_cpuid_entry2>, KvmError> {
        let cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| KvmError::new("KVM_GET_SUPPORTED_CPUID", e))?;
        Ok(cpuid.as_slice().to_vec())
    }

    fn vcpu_sregs(&self) -> Result<kvm_sregs, KvmError> {
        self.vcpu()?.fd().get_sregs().map_err(|e| KvmError::new("KVM_GET_SREGS", e))
    }

    fn set_vcpu_state(&mut self, s: &VcpuState) -> Result<(), KvmError> {
        let fd = self.vcpu()?.fd();
        fd.set_sregs(&s.sregs).map_err(|e| KvmError::new("KVM_SET_SREGS", e))?;
        fd.set_regs(&s.regs).map_err(|e| KvmError::new("KVM_SET_REGS", e))?;
        let mut fpu = fd.get_fpu().map_err(|e| KvmError::new("KVM_GET_FPU", e))?;
        fpu.fcw = s.fcw;
        fpu.mxcsr = s.mxcsr;
        fd.set_fpu(&fpu).map_err(|e| KvmError::new("KVM_SET_FPU", e))?;
        let mut xcrs = kvm_xcrs { nr_xcrs: 1, ..Default::default() };
        xcrs.xcrs[0] = kvm_xcr { xcr: 0, reserved: 0, value: s.xcr0 };
        fd.set_xcrs(&xcrs).map_err(|e| KvmError::new("KVM_SET_XCRS", e))?;
        let debug = kvm_debugregs { dr6: s.dr6, dr7: s.dr7, ..Default::default() };
        fd.set_debug_regs(&debug).map_err(|e| KvmError::new("KVM_SET_DEBUGREGS", e))?;
        let msrs = Msrs::from_entries(&[kvm_msr_entry {
            index: MSR_IA32_PAT,
            data: s.pat,
            ..Default::default()
        }])
        .map_err(|_| KvmError {
            op: "building the MSR list",
            source: std::io::Error::other("too many MSRs"),
        })?;
        let written = fd.set_msrs(&msrs).map_err(|e| KvmError::new("KVM_SET_MSRS", e))?;
        if written != 1 {
            return Err(KvmError {
                op: "KVM_SET_MSRS",
                source: std::io::Error::other("IA32_PAT was not accepted"),
            });
        }
        Ok(())
    }

    fn launch_finish(
        &mut self,
        id: Option<&IdMaterial>,
        host_data: &[u8; 32],
    ) -> Result<(), SevError> {
        // The ID block and auth structure stay borrowed (and so alive) for
        // the call; the struct holds their addresses.
        let mut finish = uapi::launch_finish(id, host_data);
        self.sev_command("SNP_LAUNCH_FINISH", uapi::KVM_SEV_SNP_LAUNCH_FINISH, &mut finish)
    }

    fn parts(&mut self) -> Result<(&mut dyn Vcpu, &dyn VmControl), KvmError> {
        let vcpu = self.vcpu.as_mut().ok_or(KvmError {
            op: "KVM_RUN",
            source: std::io::Error::other("vCPU 0 was never created"),
        })?;
        Ok((vcpu, &self.control))
    }
}
