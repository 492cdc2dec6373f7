//! Booting the IGVM file's native platform under plain KVM: ordinary memory
//! slots, every native page copied in, parameters filled, the
//! `X64NativeVpContext` applied to vCPU 0 (over KVM's reset state), then the
//! run loop with the serial console and the debug-exit port, under a
//! watchdog.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use igvm_defs::IgvmNativeVpContextX64;
use kvm_bindings::{
    KVM_MAX_CPUID_ENTRIES, kvm_regs, kvm_segment, kvm_sregs, kvm_userspace_memory_region,
};
use thiserror::Error;

use crate::guest_memory::{GuestMemory, OutOfRange};
use crate::host;
use crate::igvm_load::{IgvmImage, IgvmLoadError, LoadPlan, Platform, StartContext};
use crate::layout::{GuestLayout, LayoutError};
use crate::vcpu::{Ending, KvmError, KvmVcpu, NoHooks, PortBus, RunError, run_vcpu};
use crate::watchdog::Watchdog;

/// What a native boot needs besides the file.
#[derive(Clone, Debug)]
pub struct NativeOptions {
    /// Guest RAM in bytes.
    pub memory: u64,
    /// vCPU count (written to the VP-count parameter).
    pub cpus: u32,
    /// Watchdog timeout.
    pub timeout: Duration,
}

/// Why a native boot could not run.
#[derive(Debug, Error)]
pub enum NativeError {
    /// The IGVM file is not loadable.
    #[error(transparent)]
    Load(#[from] IgvmLoadError),
    /// The memory size or firmware placement is not usable.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// More than one vCPU was asked for.
    #[error(
        "--cpus {0}: the launcher runs one vCPU (it has no interrupt controller to start application processors); use --cpus 1"
    )]
    Cpus(u32),
    /// /dev/kvm is unusable.
    #[error("{0}")]
    NoKvm(String),
    /// Host memory for the guest could not be mapped.
    #[error("mapping {size:#x} bytes of guest memory failed: {source}; lower --memory")]
    Memory {
        /// Bytes requested.
        size: u64,
        /// Why.
        source: io::Error,
    },
    /// A page did not fit guest memory (a bug: the plan checks this).
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
    /// A KVM call failed.
    #[error(transparent)]
    Kvm(#[from] KvmError),
    /// The watchdog could not start.
    #[error("starting the watchdog failed: {0}")]
    Watchdog(io::Error),
    /// The run loop failed.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Checks the options, parses the file and plans its native platform.
pub fn prepare(
    igvm: &[u8],
    options: &NativeOptions,
) -> Result<(GuestLayout, LoadPlan), NativeError> {
    if options.cpus != 1 {
        return Err(NativeError::Cpus(options.cpus));
    }
    let image = IgvmImage::parse(igvm, Platform::Native)?;
    let layout = GuestLayout::new(options.memory, image.firmware_range())?;
    let plan = image.plan(&layout, options.cpus)?;
    Ok((layout, plan))
}

/// Copies every import of `plan` into guest memory.
pub fn load_memory(plan: &LoadPlan, memory: &mut GuestMemory) -> Result<(), OutOfRange> {
    plan.imports.iter().try_for_each(|import| memory.write(import.gpa, &import.data))
}

/// A KVM segment from the descriptor-form attribute word of an IGVM native
/// context: bits 0-3 type, 4 S, 5-6 DPL, 7 P, 12 AVL, 13 L, 14 D/B, 15 G.
pub fn segment(selector: u16, base: u64, limit: u32, attributes: u16) -> kvm_segment {
    let bit = |n: u16| ((attributes >> n) & 1) as u8;
    kvm_segment {
        base,
        limit,
        selector,
        type_: (attributes & 0xf) as u8,
        present: bit(7),
        dpl: ((attributes >> 5) & 3) as u8,
        db: bit(14),
        s: bit(4),
        l: bit(13),
        g: bit(15),
        avl: bit(12),
        unusable: u8::from(bit(7) == 0),
        padding: 0,
    }
}

/// Applies an IGVM native start context over KVM's reset state: the code
/// segment, one data segment for DS/ES/FS/GS/SS, GDTR/IDTR, control
/// registers, EFER and every general register.
pub fn apply_native_context(
    c: &IgvmNativeVpContextX64,
    regs: &mut kvm_regs,
    sregs: &mut kvm_sregs,
) {
    sregs.cs = segment(c.code_selector, u64::from(c.code_base), c.code_limit, c.code_attributes);
    let data = segment(c.data_selector, u64::from(c.data_base), c.data_limit, c.data_attributes);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.ss = data;
    sregs.gs = data;
    if c.gs_base != 0 {
        sregs.gs.base = c.gs_base;
    }
    sregs.gdt.base = c.gdtr_base;
    sregs.gdt.limit = c.gdtr_limit;
    sregs.idt.base = c.idtr_base;
    sregs.idt.limit = c.idtr_limit;
    sregs.cr0 = c.cr0;
    sregs.cr3 = c.cr3;
    sregs.cr4 = c.cr4;
    sregs.efer = c.efer;
    *regs = kvm_regs {
        rax: c.rax,
        rbx: c.rbx,
        rcx: c.rcx,
        rdx: c.rdx,
        rsi: c.rsi,
        rdi: c.rdi,
        rsp: c.rsp,
        rbp: c.rbp,
        r8: c.r8,
        r9: c.r9,
        r10: c.r10,
        r11: c.r11,
        r12: c.r12,
        r13: c.r13,
        r14: c.r14,
        r15: c.r15,
        rip: c.rip,
        rflags: c.rflags | 2,
    };
}

/// Parses, loads and runs the native platform of `igvm`; serial output goes
/// to `console`.
pub fn boot(
    igvm: &[u8],
    options: &NativeOptions,
    console: &mut dyn Write,
) -> Result<Ending, NativeError> {
    let started = Instant::now();
    let (layout, plan) = prepare(igvm, options)?;
    let StartContext::Native(context) = &plan.start else {
        return Err(IgvmLoadError::BadVpContext(
            "the native platform has an SNP start context".into(),
        )
        .into());
    };
    let kvm = host::open_kvm().map_err(NativeError::NoKvm)?;
    let pvm = host::detect_pvm(Some(&kvm));
    if let Some(note) = &pvm {
        log::warn!("{note}");
    }
    // Guest memory is declared before the VM so that it outlives the slots.
    let mut memory = GuestMemory::new(&layout)
        .map_err(|source| NativeError::Memory { size: options.memory, source })?;
    load_memory(&plan, &mut memory)?;
    let vm = kvm.create_vm().map_err(|e| KvmError::new("KVM_CREATE_VM", e))?;
    for (slot, host) in memory.regions().iter().enumerate() {
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: host.region().gpa,
            memory_size: host.region().size,
            userspace_addr: host.host_addr(),
        };
        // SAFETY: the slot maps `memory`'s own anonymous mapping, which is
        // declared before `vm` and so outlives it.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| KvmError::new("KVM_SET_USER_MEMORY_REGION", e))?;
    }
    let vcpu = vm.create_vcpu(0).map_err(|e| KvmError::new("KVM_CREATE_VCPU", e))?;
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| KvmError::new("KVM_GET_SUPPORTED_CPUID", e))?;
    vcpu.set_cpuid2(&cpuid).map_err(|e| KvmError::new("KVM_SET_CPUID2", e))?;
    let mut sregs = vcpu.get_sregs().map_err(|e| KvmError::new("KVM_GET_SREGS", e))?;
    let mut regs = kvm_regs::default();
    apply_native_context(context, &mut regs, &mut sregs);
    vcpu.set_sregs(&sregs).map_err(|e| KvmError::new("KVM_SET_SREGS", e))?;
    vcpu.set_regs(&regs).map_err(|e| KvmError::new("KVM_SET_REGS", e))?;
    log::info!(
        "native platform loaded: {} imports, {layout}, in {:.1} ms",
        plan.imports.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    let watchdog = Watchdog::start(options.timeout).map_err(NativeError::Watchdog)?;
    let mut vcpu = KvmVcpu::new(vcpu);
    let note = |suberror| host::internal_error_note(suberror, pvm.as_deref());
    let ending = run_vcpu(
        &mut vcpu,
        &mut PortBus::new(console),
        &mut NoHooks,
        &watchdog,
        Some(&memory),
        &note,
    )?;
    log::info!("native boot ended after {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    Ok(ending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;

    #[test]
    fn the_project_start_context_becomes_flat_32_bit_protected_mode() {
        let igvm = sample::sample_file(&[0xF4]);
        let options = NativeOptions { memory: 64 << 20, cpus: 1, timeout: Duration::from_secs(1) };
        let (_, plan) = prepare(&igvm, &options).unwrap();
        let StartContext::Native(c) = &plan.start else { panic!("native plan") };
        let mut regs = kvm_regs::default();
        let mut sregs = kvm_sregs::default();
        apply_native_context(c, &mut regs, &mut sregs);
        let cs = sregs.cs;
        assert_eq!((cs.selector, cs.type_, cs.s, cs.present, cs.dpl), (8, 0xb, 1, 1, 0));
        assert_eq!((cs.db, cs.l, cs.g, cs.limit, cs.unusable), (1, 0, 1, 0xffff_ffff, 0));
        for data in [sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss] {
            assert_eq!((data.selector, data.type_, data.db, data.g), (0x10, 3, 1, 1));
        }
        assert_eq!((sregs.cr0, sregs.cr4, sregs.efer), (0x31, 0, 0));
        assert_eq!(
            (regs.rip, regs.rsp, regs.rflags),
            (sample::CODE_GPA, sample::STACK_GPA + 0x1000, 2)
        );
    }

    #[test]
    fn attribute_words_decode_as_descriptors() {
        let long = segment(8, 0, 0xffff_ffff, 0xa09b);
        assert_eq!((long.l, long.db, long.g), (1, 0, 1));
        let absent = segment(0, 0, 0, 0x0013);
        assert_eq!((absent.present, absent.unusable), (0, 1));
        let user = segment(0x2b, 0, 0xffff, 0x00f3);
        assert_eq!(user.dpl, 3);
    }

    #[test]
    fn more_than_one_vcpu_is_refused_with_the_reason() {
        let igvm = sample::sample_file(&[0xF4]);
        let options = NativeOptions { memory: 64 << 20, cpus: 2, timeout: Duration::from_secs(1) };
        let err = prepare(&igvm, &options).unwrap_err();
        assert!(err.to_string().contains("one vCPU"), "{err}");
    }

    #[test]
    fn load_memory_copies_every_import() {
        let igvm = sample::sample_file(&sample::smoke_guest());
        let options = NativeOptions { memory: 64 << 20, cpus: 1, timeout: Duration::from_secs(1) };
        let (layout, plan) = prepare(&igvm, &options).unwrap();
        let mut memory = GuestMemory::new(&layout).unwrap();
        load_memory(&plan, &mut memory).unwrap();
        let code = sample::smoke_guest();
        assert_eq!(memory.slice(sample::CODE_GPA, code.len() as u64).unwrap(), &code[..]);
        assert_eq!(memory.slice(sample::GENERAL_PARAMS_GPA, 4).unwrap(), &[1, 0, 0, 0]);
        assert_eq!(memory.slice(sample::UNMEASURED_GPA, 10).unwrap(), b"unmeasured");
    }
}
