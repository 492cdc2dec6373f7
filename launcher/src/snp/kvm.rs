//! The real [`SnpVm`]: kvm-ioctls calls with the kvm-bindings SNP structs,
//! SEV commands through `VmFd::encrypt_op_sev`, and the two ioctls
//! kvm-ioctls does not wrap (KVM_GET_DEVICE_ATTR on /dev/kvm, and the planes
//! series' KVM_CREATE_PLANE / KVM_CREATE_VCPU on a plane fd).
//!
//! None of this can run without an SNP host; the sequence it is driven by is
//! tested against [`super::fake::FakeSnp`], and the LAUNCH_UPDATE
//! partial-progress loop ([`drive_launch_update`]) against scripted answers.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use kvm_bindings::{
    KVM_MAX_CPUID_ENTRIES, Msrs, kvm_cpuid_entry2, kvm_create_guest_memfd, kvm_debugregs,
    kvm_device_attr, kvm_enable_cap, kvm_memory_attributes, kvm_msr_entry, kvm_sev_cmd,
    kvm_sev_init, kvm_sev_snp_launch_start, kvm_sev_snp_launch_update, kvm_sregs,
    kvm_userspace_memory_region2, kvm_xcr, kvm_xcrs,
};
use kvm_ioctls::{Kvm, VmFd};
use vmm_sys_util::ioctl::{ioctl_with_ref, ioctl_with_val};
use vmm_sys_util::{ioctl_io_nr, ioctl_iow_nr};

use super::uapi::{self, IdMaterial};
use super::vmsa::{MSR_IA32_PAT, VcpuState};
use super::{SevError, SnpError, SnpVm, UpdateError, VmControl, planes};
use crate::host;
use crate::vcpu::{KvmError, KvmVcpu, Vcpu};

const KVMIO: u32 = 0xAE;
ioctl_iow_nr!(KVM_GET_DEVICE_ATTR, KVMIO, 0xe2, kvm_device_attr);
ioctl_io_nr!(KVM_CREATE_PLANE, KVMIO, planes::KVM_CREATE_PLANE_NR as u32);
ioctl_io_nr!(KVM_CREATE_VCPU, KVMIO, 0x41);

/// Bounds the consecutive retries of a LAUNCH_UPDATE that KVM interrupts
/// (EAGAIN/EINTR) without progress.
pub const MAX_UPDATE_RETRIES: u32 = 1000;

/// Issues SNP_LAUNCH_UPDATE through `command` until `update.len` is 0.
///
/// Per Documentation/virt/kvm/x86/amd-memory-encryption.rst (section
/// KVM_SEV_SNP_LAUNCH_UPDATE): success need not cover the whole range; KVM
/// then writes back `gfn_start`, `uaddr` and `len` describing what is left
/// (len shrinks by the bytes done, gfn_start advances by as many pages,
/// uaddr by as many bytes; it stays for ZERO pages and in-place
/// conversion), and the caller calls again. -EAGAIN (and -EINTR) ask for a
/// retry with the struct as it is: KVM copies it back only on success.
///
/// A success that does not advance, or writes back a remainder that does
/// not follow from whole pages done, is an error rather than a loop; so is
/// more than [`MAX_UPDATE_RETRIES`] interruptions in a row.
pub fn drive_launch_update(
    update: &mut kvm_sev_snp_launch_update,
    mut command: impl FnMut(&mut kvm_sev_snp_launch_update) -> Result<(), SevError>,
) -> Result<(), UpdateError> {
    let mut retries = 0;
    while update.len > 0 {
        let before = (update.gfn_start, update.uaddr, update.len);
        match command(update) {
            Ok(()) => {
                let after = (update.gfn_start, update.uaddr, update.len);
                if after == before {
                    return Err(UpdateError::NoProgress { gfn: before.0, left: before.2 });
                }
                if !is_page_progress(before, after) {
                    return Err(UpdateError::Inconsistent { before, after });
                }
                retries = 0;
            }
            Err(e) if e.errno == libc::EAGAIN || e.errno == libc::EINTR => {
                if retries == MAX_UPDATE_RETRIES {
                    return Err(UpdateError::Interrupted {
                        gfn: update.gfn_start,
                        left: update.len,
                        retries,
                        last: e,
                    });
                }
                retries += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Whether `after` (gfn_start, uaddr, len) follows from `before` by one or
/// more whole pages done.
fn is_page_progress(before: (u64, u64, u64), after: (u64, u64, u64)) -> bool {
    const PAGE: u64 = 4096;
    let Some(done) = before.2.checked_sub(after.2) else { return false };
    done > 0
        && done % PAGE == 0
        && before.0.checked_add(done / PAGE) == Some(after.0)
        && (after.1 == before.1 || before.1.checked_add(done) == Some(after.1))
}

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

    fn launch_update(
        &mut self,
        gfn: u64,
        data: &mut [u8],
        page_type: u8,
    ) -> Result<(), UpdateError> {
        // KVM reads (and for a rejected CPUID page writes back) `data` via
        // `uaddr`; `data` stays borrowed for the whole loop.
        let mut update =
            uapi::launch_update(gfn, data.as_mut_ptr() as u64, data.len() as u64, page_type);
        drive_launch_update(&mut update, |update| {
            self.sev_command("SNP_LAUNCH_UPDATE", uapi::KVM_SEV_SNP_LAUNCH_UPDATE, update)
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x7f00_0000_0000;

    fn sev_error(errno: i32) -> SevError {
        SevError { op: "SNP_LAUNCH_UPDATE", errno, fw_error: 0 }
    }

    /// A KVM that does at most `pages_per_call` pages per success, as
    /// amd-memory-encryption.rst allows, recording each call's struct.
    fn partial_kvm(
        pages_per_call: u64,
        seen: &mut Vec<(u64, u64, u64)>,
    ) -> impl FnMut(&mut kvm_sev_snp_launch_update) -> Result<(), SevError> + '_ {
        move |u| {
            seen.push((u.gfn_start, u.uaddr, u.len));
            let done = (u.len / 4096).min(pages_per_call);
            u.gfn_start += done;
            u.uaddr += done * 4096;
            u.len -= done * 4096;
            Ok(())
        }
    }

    #[test]
    fn a_whole_range_in_one_call_succeeds() {
        let mut update = uapi::launch_update(0x100, BASE, 0x3000, uapi::PAGE_TYPE_NORMAL);
        let mut seen = Vec::new();
        drive_launch_update(&mut update, partial_kvm(u64::MAX, &mut seen)).unwrap();
        assert_eq!(seen, [(0x100, BASE, 0x3000)]);
        assert_eq!((update.gfn_start, update.uaddr, update.len), (0x103, BASE + 0x3000, 0));
    }

    #[test]
    fn partial_progress_continues_from_the_written_back_remainder() {
        let mut update = uapi::launch_update(0x100, BASE, 0x5000, uapi::PAGE_TYPE_NORMAL);
        let mut seen = Vec::new();
        drive_launch_update(&mut update, partial_kvm(2, &mut seen)).unwrap();
        assert_eq!(
            seen,
            [(0x100, BASE, 0x5000), (0x102, BASE + 0x2000, 0x3000), (0x104, BASE + 0x4000, 0x1000)]
        );
        assert_eq!(update.len, 0);
    }

    #[test]
    fn a_remainder_with_uaddr_unchanged_is_progress_too() {
        // ZERO pages and in-place conversion leave uaddr as it was.
        let mut update = uapi::launch_update(0x10, 0, 0x2000, uapi::PAGE_TYPE_NORMAL);
        let mut calls = 0;
        drive_launch_update(&mut update, |u| {
            calls += 1;
            u.gfn_start += 1;
            u.len -= 0x1000;
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, 2);
    }

    #[test]
    fn eagain_and_eintr_are_retried_with_the_same_struct() {
        let mut update = uapi::launch_update(0x100, BASE, 0x2000, uapi::PAGE_TYPE_NORMAL);
        let mut answers =
            vec![Err(libc::EAGAIN), Err(libc::EINTR), Ok(1), Err(libc::EAGAIN), Ok(1)];
        answers.reverse();
        let mut seen = Vec::new();
        drive_launch_update(&mut update, |u| {
            seen.push((u.gfn_start, u.len));
            match answers.pop().expect("no call after the range is done") {
                Err(errno) => Err(sev_error(errno)),
                Ok(pages) => {
                    u.gfn_start += pages;
                    u.uaddr += pages * 4096;
                    u.len -= pages * 4096;
                    Ok(())
                }
            }
        })
        .unwrap();
        assert_eq!(
            seen,
            [(0x100, 0x2000), (0x100, 0x2000), (0x100, 0x2000), (0x101, 0x1000), (0x101, 0x1000)]
        );
    }

    #[test]
    fn retries_are_bounded_and_the_bound_restarts_after_progress() {
        // MAX_UPDATE_RETRIES interruptions, then success: fine.
        let mut update = uapi::launch_update(0x100, BASE, 0x1000, uapi::PAGE_TYPE_NORMAL);
        let mut calls = 0u32;
        drive_launch_update(&mut update, |u| {
            calls += 1;
            if calls <= MAX_UPDATE_RETRIES {
                return Err(sev_error(libc::EAGAIN));
            }
            u.gfn_start += 1;
            u.uaddr += 4096;
            u.len = 0;
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, MAX_UPDATE_RETRIES + 1);

        // One more, and the loop gives up with a clear error.
        let mut update = uapi::launch_update(0x100, BASE, 0x1000, uapi::PAGE_TYPE_NORMAL);
        let mut calls = 0u32;
        let err = drive_launch_update(&mut update, |_| {
            calls += 1;
            Err(sev_error(libc::EAGAIN))
        })
        .unwrap_err();
        assert_eq!(calls, MAX_UPDATE_RETRIES + 1);
        assert!(matches!(err, UpdateError::Interrupted { gfn: 0x100, left: 0x1000, .. }), "{err}");
        assert!(err.to_string().contains("interrupted 1000 times in a row"), "{err}");
    }

    #[test]
    fn success_without_progress_is_an_error_not_a_hang() {
        let mut update = uapi::launch_update(0x100, BASE, 0x2000, uapi::PAGE_TYPE_CPUID);
        let mut calls = 0;
        let err = drive_launch_update(&mut update, |_| {
            calls += 1;
            Ok(())
        })
        .unwrap_err();
        assert_eq!(calls, 1);
        assert_eq!(err, UpdateError::NoProgress { gfn: 0x100, left: 0x2000 });
        let text = err.to_string();
        assert!(text.contains("returned success without processing a page"), "{text}");
        assert!(text.contains("amd-memory-encryption.rst"), "{text}");
    }

    #[test]
    fn impossible_remainders_are_refused() {
        let cases: [fn(&mut kvm_sev_snp_launch_update); 4] = [
            |u| u.len += 0x1000, // grew
            |u| u.len -= 0x800,  // not a whole page
            |u| u.len -= 0x1000, // gfn did not move
            |u| {
                // uaddr moved by the wrong amount
                u.len -= 0x1000;
                u.gfn_start += 1;
                u.uaddr += 0x2000;
            },
        ];
        for (i, change) in cases.into_iter().enumerate() {
            let mut update = uapi::launch_update(0x100, BASE, 0x2000, uapi::PAGE_TYPE_NORMAL);
            let err = drive_launch_update(&mut update, |u| {
                change(u);
                Ok(())
            })
            .unwrap_err();
            assert!(matches!(err, UpdateError::Inconsistent { .. }), "case {i}: {err}");
            assert!(err.to_string().contains("impossible remainder"), "case {i}: {err}");
        }
    }

    #[test]
    fn other_failures_end_the_loop_with_the_firmware_status() {
        let mut update = uapi::launch_update(0x100, BASE, 0x1000, uapi::PAGE_TYPE_CPUID);
        let failure = SevError {
            op: "SNP_LAUNCH_UPDATE",
            errno: libc::EIO,
            fw_error: uapi::SEV_RET_INVALID_PARAM,
        };
        let err = drive_launch_update(&mut update, |_| Err(failure.clone())).unwrap_err();
        assert_eq!(err, UpdateError::Sev(failure));
    }
}
