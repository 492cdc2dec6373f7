//! The platform and the boot hand-over.

use abi::boot::{MemoryRange, PlatformType};
use kernel::cpu::registers::{EFER_SVME, MSR_EFER, rdmsr};
use kernel::platform::{self, PlatformKind, dev};
use kernel::{boot, check, check_eq, kernel_test};

kernel_test! {
    fn platform_matches_the_cpu() {
        let kind = platform::current().map(|p| p.kind());
        let expected = match PlatformType::from_u32(boot::info().platform) {
            Some(PlatformType::Snp) => PlatformKind::Snp,
            _ if platform::cpu_has_svm_with_npt() && dev::state().is_some() => PlatformKind::Dev,
            _ => PlatformKind::Native,
        };
        check_eq!(kind, Some(expected));
    }
}

kernel_test! {
    fn dev_platform_has_svm_enabled() {
        let Some(dev) = dev::state() else {
            // On the native platform SVM stays off; SNP requires EFER.SVME
            // set in every VMSA, so nothing can be said there.
            if platform::current().map(|p| p.kind()) == Some(PlatformKind::Native) {
                // SAFETY: EFER exists; reading it has no side effects.
                check!(unsafe { rdmsr(MSR_EFER) } & EFER_SVME == 0);
            }
            return Ok(());
        };
        // SAFETY: EFER and VM_HSAVE_PA exist when SVM does.
        let (efer, hsave) = unsafe { (rdmsr(MSR_EFER), rdmsr(dev::MSR_VM_HSAVE_PA)) };
        check!(efer & EFER_SVME != 0, "EFER.SVME off on the dev platform");
        check_eq!(Some(hsave), dev.host_save_area());
        check!(dev.capabilities.asids >= 2, "{:?}", dev.capabilities);
    }
}

kernel_test! {
    fn platform_cpuid_reports_long_mode() {
        let platform = platform::current();
        check!(platform.is_some());
        let leaf = platform.map(|p| p.cpuid(0x8000_0001, 0)).unwrap_or([0; 4]);
        check!(leaf[3] & (1 << 29) != 0, "CPUID says no long mode: {leaf:x?}");
    }
}

kernel_test! {
    fn boot_info_is_consistent() {
        let info = boot::info();
        check!(info.cpu_count >= 1);
        check!(info.memory_ranges().iter().any(|ram| ram.contains_range(&info.kernel_region)));
        check!(info.kernel_region.contains_range(&info.kernel_image));
        let free = MemoryRange { base: info.free_base, size: 0 };
        check!(free.base >= info.kernel_image.end().unwrap_or(u64::MAX));
    }
}

kernel_test! {
    fn boot_parameters_are_measured_copy() {
        let params = boot::boot_params(boot::info());
        check_eq!(params.validate().map(|p| p as u32), Ok(boot::info().platform));
        check_eq!(params.kernel_region, boot::info().kernel_region);
    }
}
