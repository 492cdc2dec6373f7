//! Facts about the host's KVM that change what a boot can do: opening
//! /dev/kvm with a message that says how to fix a failure, and recognising
//! KVM-PVM, the software nested hypervisor of the project's development
//! machines, which emulates guest ring-0 code (~3000x slower) and lacks some
//! instructions (fwait, shlx, lock cmpxchg16b, int3).

use std::path::Path;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::Kvm;

/// Opens /dev/kvm, or explains why it cannot be opened and how to fix it.
pub fn open_kvm() -> Result<Kvm, String> {
    Kvm::new().map_err(|e| device_problem("/dev/kvm", e.errno()))
}

/// The message for a device that cannot be opened.
pub fn device_problem(path: &str, errno: i32) -> String {
    match errno {
        libc::ENOENT => format!(
            "{path} does not exist: load the KVM module (`modprobe kvm_amd` or `modprobe kvm_intel`) and enable virtualization in the firmware setup"
        ),
        libc::EACCES | libc::EPERM => {
            format!("{path}: permission denied: {}", permission_fix(path))
        }
        e => format!("{path} cannot be opened: {}", std::io::Error::from_raw_os_error(e)),
    }
}

/// How a user who may not open `path` read-write gets access.
///
/// /dev/kvm belongs to the `kvm` group on Fedora and Debian. /dev/sev does
/// not: the ccp driver registers it without a mode, so devtmpfs creates it
/// `crw------- root root` unless a udev rule changes that; so either root,
/// or a local udev rule.
pub fn permission_fix(path: &str) -> String {
    if path == "/dev/sev" {
        "/dev/sev is root-only unless a udev rule changes it (`ls -l /dev/sev`): run the launcher as root \
         (`sudo`), or give a group access with a udev rule, e.g. \
         `echo 'KERNEL==\"sev\", GROUP=\"kvm\", MODE=\"0660\"' | sudo tee /etc/udev/rules.d/65-sev.rules \
         && sudo udevadm control --reload && sudo udevadm trigger /dev/sev`, and be in that group \
         (`sudo usermod -aG kvm $USER`, then log in again); note that write access to /dev/sev \
         also allows SEV platform-management commands (the kernel gates those on write access)"
            .into()
    } else {
        format!(
            "add your user to the group that owns {path} (see `ls -l {path}`; usually kvm: \
             `sudo usermod -aG kvm $USER`, then log in again) or run as root"
        )
    }
}

/// Decides whether KVM is KVM-PVM from the evidence: the `kvm_pvm` module,
/// CPU flags without vmx/svm, and KVM's supported CPUID without SSE3.
/// Returns a description of what that means for boots, or None.
pub fn pvm_verdict(
    module_loaded: bool,
    cpuinfo: &str,
    supported_sse3: Option<bool>,
) -> Option<String> {
    let flags_line = cpuinfo.lines().find(|l| l.starts_with("flags"));
    let no_hw_virt = flags_line
        .is_some_and(|l| !l.split_whitespace().any(|flag| flag == "vmx" || flag == "svm"));
    let mut evidence = Vec::new();
    if module_loaded {
        evidence.push("the kvm_pvm module is loaded");
    }
    if no_hw_virt {
        evidence.push("the CPU flags have neither vmx nor svm");
    }
    if supported_sse3 == Some(false) {
        evidence.push("KVM's supported CPUID lacks SSE3");
    }
    if !module_loaded && !no_hw_virt {
        return None;
    }
    Some(format!(
        "/dev/kvm is KVM-PVM, software nested virtualization ({}): guest ring-0 code is emulated about 3000x slower than native, \
         and fwait, shlx, lock cmpxchg16b and int3 at CPL0 stop the guest with an emulation failure. Use QEMU TCG for full boots here.",
        evidence.join("; ")
    ))
}

/// Looks at this machine and returns [`pvm_verdict`] for it.
pub fn detect_pvm(kvm: Option<&Kvm>) -> Option<String> {
    let module = Path::new("/sys/module/kvm_pvm").exists();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let sse3 = kvm
        .and_then(|k| k.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).ok())
        .and_then(|c| c.as_slice().iter().find(|e| e.function == 1).map(|e| e.ecx & 1 != 0));
    pvm_verdict(module, &cpuinfo, sse3)
}

/// The explanation added to a KVM internal error.
pub fn internal_error_note(suberror: u32, pvm: Option<&str>) -> String {
    match (suberror, pvm) {
        (crate::vcpu::INTERNAL_ERROR_EMULATION, Some(_)) => {
            "instruction emulation failed: KVM-PVM's emulator does not implement the instruction at RIP \
             (code bytes below); this is a limit of this host's KVM, boot under QEMU TCG instead"
                .into()
        }
        (crate::vcpu::INTERNAL_ERROR_EMULATION, None) => {
            "instruction emulation failed (KVM could not emulate the instruction at RIP)".into()
        }
        (2, _) => "simultaneous exceptions (an exception while delivering another)".into(),
        (3, _) => "exit while delivering an event (e.g. a fault in the IDT or stack)".into(),
        (n, _) => format!("suberror {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvm_is_recognised_from_the_module_or_missing_virtualization_flags() {
        let pvm_flags = "processor\t: 0\nflags\t\t: fpu vme de pse hypervisor\n";
        let vmx_flags = "flags\t\t: fpu vmx sse3\n";
        let text = pvm_verdict(true, pvm_flags, Some(false)).unwrap();
        assert!(text.contains("kvm_pvm module"));
        assert!(text.contains("neither vmx nor svm"));
        assert!(text.contains("lacks SSE3"));
        assert!(text.contains("3000x"));
        assert!(pvm_verdict(false, pvm_flags, None).is_some());
        assert_eq!(pvm_verdict(false, vmx_flags, Some(true)), None);
    }

    #[test]
    fn device_problems_name_the_fix() {
        assert!(device_problem("/dev/kvm", libc::ENOENT).contains("modprobe"));
        assert!(device_problem("/dev/kvm", libc::EACCES).contains("usermod -aG kvm"));
        let sev = device_problem("/dev/sev", libc::EACCES);
        assert!(sev.contains("root-only"), "{sev}");
        assert!(sev.contains("run the launcher as root"), "{sev}");
        assert!(sev.contains("/etc/udev/rules.d/65-sev.rules"), "{sev}");
        assert!(device_problem("/dev/kvm", libc::EBUSY).contains("cannot be opened"));
    }

    #[test]
    fn emulation_failures_on_pvm_say_so() {
        assert!(internal_error_note(1, Some("pvm")).contains("KVM-PVM"));
        assert!(!internal_error_note(1, None).contains("PVM"));
        assert_eq!(internal_error_note(9, None), "suberror 9");
    }
}
