//! The core protocol (protocol 0, version 1; SVSM specification §6): the
//! guest's pages (PVALIDATE, DEPOSIT_MEM, WITHDRAW_MEM), its vCPUs
//! (CREATE_VCPU, DELETE_VCPU), its calling area (REMAP_CA), and discovery
//! (QUERY_PROTOCOL, CONFIGURE_VTOM's query form).
//!
//! Every address comes from the guest and goes through the checked guest
//! memory first ([`GuestMemory::check`]): outside guest RAM, inside the
//! SVSM, or a page the SVSM holds is SVSM_ERR_INVALID_ADDRESS; misaligned
//! or with reserved bits set is SVSM_ERR_INVALID_PARAMETER; a PVALIDATE or
//! RMPADJUST the SVSM issues that fails is `0x8000_1000 + its code`.
//! Before the guest gets access to a page it validated, the page is zeroed.
//!
//! Deposited memory, what it is for today: DEPOSIT_MEM takes pages from
//! the guest (RMPADJUST removes every lower VMPL's access; a 2 MiB page is
//! validated again as 512 4 KiB pages so each can be withdrawn alone),
//! records them as SVSM-held (the checked guest memory then refuses them in
//! every later call: calling areas, lists, VMSAs, buffers) and keeps them in
//! the [`DepositPool`](super::DepositPool); WITHDRAW_MEM zeroes each page
//! before granting it back, and the startup vCPU's MEM_AVAILABLE byte says
//! whether any is left. Nothing in the SVSM allocates from the pool, because
//! nothing it keeps for the guest grows with the guest's demands: a vCPU is
//! the guest's own VMSA page (which CREATE_VCPU takes) plus a small record in
//! the SVSM's heap; the SVM state (VMCB, host save area, XSAVE area) is per
//! physical CPU, allocated at boot from the SVSM's region; the vTPM's state
//! has its own arena there. So the SVSM never asks for memory (it never
//! returns the spec's "more memory needed" codes 0x4000_0000-0x7FFF_FFFF),
//! and a guest that deposits pages only lends pages it cannot use until it
//! withdraws them. Not done: allocating from the pool, which would need a
//! mapping of each page in the SVSM's address space and bookkeeping so that
//! WITHDRAW_MEM hands back only pages not in use.

use abi::layout::PAGE_SIZE;
use abi::snp_instr::{
    PvalidateError, RmpAdjustAttributes, RmpAdjustError, RmpPageSize, VmplPermissions,
};
use abi::svsm::{
    CoreCall, DepositEntry, LIST_ENTRY_SIZE, LIST_HEADER_SIZE, ListHeader, MEM_AVAILABLE_OFFSET,
    PageSize, ProtocolVersions, PvalidateEntry, SVSM_SUCCESS, SvsmError, WithdrawListHeader,
    list_capacity, split_query_protocol_request, vtom,
};
use abi::vmsa::{EFER_SVME, Vmsa};

use super::{CallContext, VcpuState, protocol_versions};
#[cfg(doc)]
use crate::guest_mem::GuestMemory;
use crate::guest_mem::{PageOwner, read_obj, write_obj};

/// The core protocol versions served.
pub const VERSIONS: ProtocolVersions = ProtocolVersions { min: 1, max: 1 };

/// Bytes of pages one PVALIDATE call validates or rescinds before it
/// returns SVSM_ERR_INCOMPLETE, so one call cannot hold the SVSM for long
/// (zeroing is the cost). The guest repeats the call to go on.
pub const PVALIDATE_BUDGET: u64 = 16 << 20;

/// Highest VMPL.
const MAX_VMPL: u8 = abi::snp_instr::MAX_VMPL;

/// Handles call `call` of the core protocol.
pub fn handle(call: u32, context: &mut CallContext<'_>) -> u32 {
    let result = match CoreCall::from_u32(call) {
        Some(CoreCall::RemapCa) => remap_ca(context),
        Some(CoreCall::Pvalidate) => pvalidate(context),
        Some(CoreCall::CreateVcpu) => create_vcpu(context),
        Some(CoreCall::DeleteVcpu) => delete_vcpu(context),
        Some(CoreCall::DepositMem) => deposit_mem(context),
        Some(CoreCall::WithdrawMem) => withdraw_mem(context),
        Some(CoreCall::QueryProtocol) => query_protocol(context),
        Some(CoreCall::ConfigureVtom) => configure_vtom(context),
        None => Err(SvsmError::UnsupportedCall),
    };
    match result {
        Ok(()) => SVSM_SUCCESS,
        Err(error) => error.code(),
    }
}

type CallResult = Result<(), SvsmError>;

fn rmp_size(size: PageSize) -> RmpPageSize {
    match size {
        PageSize::Size4K => RmpPageSize::Size4K,
        PageSize::Size2M => RmpPageSize::Size2M,
    }
}

fn pvalidate_failure(error: PvalidateError) -> SvsmError {
    SvsmError::core_instruction(error.code())
}

fn rmpadjust_failure(error: RmpAdjustError) -> SvsmError {
    SvsmError::core_instruction(error.code())
}

/// Gives VMPL1 up to the caller's VMPL full access to the page (VMPL0 has
/// it always), as the spec asks after a validation.
fn grant(context: &CallContext<'_>, gpa: u64, size: RmpPageSize) -> Result<(), RmpAdjustError> {
    for target_vmpl in 1..=context.caller.vmpl.min(MAX_VMPL) {
        let attributes =
            RmpAdjustAttributes { target_vmpl, permissions: VmplPermissions::ALL, vmsa: false };
        context.platform.rmpadjust(gpa, size, attributes)?;
    }
    Ok(())
}

/// Takes every permission of VMPL1-3 away.
fn revoke(context: &CallContext<'_>, gpa: u64, size: RmpPageSize) -> Result<(), RmpAdjustError> {
    for target_vmpl in 1..=MAX_VMPL {
        let attributes =
            RmpAdjustAttributes { target_vmpl, permissions: VmplPermissions::NONE, vmsa: false };
        context.platform.rmpadjust(gpa, size, attributes)?;
    }
    Ok(())
}

/// Marks a page whose lower-VMPL permissions were revoked a VMSA. (Every
/// RMPADJUST writes the VMSA bit, so this comes last.)
fn mark_vmsa(context: &CallContext<'_>, gpa: u64) -> Result<(), RmpAdjustError> {
    let attributes =
        RmpAdjustAttributes { target_vmpl: 1, permissions: VmplPermissions::NONE, vmsa: true };
    context.platform.rmpadjust(gpa, RmpPageSize::Size4K, attributes)
}

/// Reads a request-list header at `gpa` and checks it against the room the
/// page leaves; returns it.
fn read_list_header(context: &CallContext<'_>, gpa: u64) -> Result<ListHeader, SvsmError> {
    if !gpa.is_multiple_of(8) {
        return Err(SvsmError::InvalidParameter);
    }
    let header: ListHeader =
        read_obj(context.memory, gpa).map_err(|_| SvsmError::InvalidAddress)?;
    if header.entries == 0
        || u64::from(header.entries) > list_capacity(gpa)
        || header.next >= header.entries
    {
        return Err(SvsmError::InvalidParameter);
    }
    Ok(header)
}

fn entry_gpa(list: u64, index: u16) -> u64 {
    list + LIST_HEADER_SIZE + u64::from(index) * LIST_ENTRY_SIZE
}

/// Writes a list's `next` back.
fn write_next(context: &CallContext<'_>, list: u64, next: u16) -> CallResult {
    write_obj(context.memory, list + 2, &next).map_err(|_| SvsmError::InvalidAddress)
}

/// Tells the guest, in the startup vCPU's calling area, whether it could
/// withdraw memory.
fn update_mem_available(context: &CallContext<'_>) {
    if let Some(startup) = context.state.vcpus.startup() {
        let available = u8::from(!context.state.deposits.is_empty());
        // A calling area the guest broke just does not get the hint.
        let _ = context.memory.write(startup.ca_gpa + MEM_AVAILABLE_OFFSET as u64, &[available]);
    }
}

fn remap_ca(context: &mut CallContext<'_>) -> CallResult {
    let gpa = context.regs.rcx;
    if !gpa.is_multiple_of(PAGE_SIZE) {
        return Err(SvsmError::InvalidParameter);
    }
    context.memory.check(gpa, PAGE_SIZE).map_err(|_| SvsmError::InvalidAddress)?;
    let caller = context.caller.id;
    let current = context.state.vcpus.get(caller).map(|r| r.ca_gpa);
    if current != Some(gpa) && context.state.vcpus.uses_page(gpa) {
        return Err(SvsmError::InvalidAddress);
    }
    // A fresh calling area starts with no call pending.
    context.memory.write(gpa, &[0]).map_err(|_| SvsmError::InvalidAddress)?;
    if let Some(record) = context.state.vcpus.get_mut(caller) {
        record.ca_gpa = gpa;
    }
    update_mem_available(context);
    Ok(())
}

fn pvalidate(context: &mut CallContext<'_>) -> CallResult {
    let list = context.regs.rcx;
    let header = read_list_header(context, list)?;
    let mut next = header.next;
    let mut done = 0u64;
    let mut result = Ok(());
    while next < header.entries {
        let entry: PvalidateEntry = match read_obj(context.memory, entry_gpa(list, next)) {
            Ok(entry) => entry,
            Err(_) => {
                result = Err(SvsmError::InvalidAddress);
                break;
            }
        };
        match pvalidate_entry(context, entry) {
            Ok(bytes) => done += bytes,
            Err(error) => {
                result = Err(error);
                break;
            }
        }
        next += 1;
        if done >= PVALIDATE_BUDGET && next < header.entries {
            result = Err(SvsmError::Incomplete);
            break;
        }
    }
    write_next(context, list, next)?;
    result
}

/// Validates or rescinds the page of one entry; returns its size.
fn pvalidate_entry(context: &CallContext<'_>, entry: PvalidateEntry) -> Result<u64, SvsmError> {
    let size = entry.page_size().ok_or(SvsmError::InvalidParameter)?;
    let gpa = entry.gpa();
    if entry.reserved_bits() != 0 || !gpa.is_multiple_of(size.bytes()) {
        return Err(SvsmError::InvalidParameter);
    }
    context.memory.check(gpa, size.bytes()).map_err(|_| SvsmError::InvalidAddress)?;
    let rmp = rmp_size(size);
    if entry.validate() {
        match context.platform.pvalidate(gpa, rmp, true) {
            Ok(()) => {
                // Zero before any lower VMPL may see it: the page may hold
                // what the host remapped from elsewhere.
                context.memory.zero(gpa, size.bytes()).map_err(|_| SvsmError::InvalidAddress)?;
            }
            Err(PvalidateError::Unchanged) if entry.ignore_cf() => {}
            Err(error) => return Err(pvalidate_failure(error)),
        }
        grant(context, gpa, rmp).map_err(rmpadjust_failure)?;
    } else {
        match revoke(context, gpa, rmp) {
            // Not validated: nothing to revoke; PVALIDATE reports it.
            Ok(()) | Err(RmpAdjustError::Input) => {}
            Err(error) => return Err(rmpadjust_failure(error)),
        }
        match context.platform.pvalidate(gpa, rmp, false) {
            Ok(()) => {}
            Err(PvalidateError::Unchanged) if entry.ignore_cf() => {}
            Err(error) => return Err(pvalidate_failure(error)),
        }
    }
    Ok(size.bytes())
}

fn create_vcpu(context: &mut CallContext<'_>) -> CallResult {
    let (vmsa_gpa, ca_gpa, apic_id) = (context.regs.rcx, context.regs.rdx, context.regs.r8 as u32);
    if !vmsa_gpa.is_multiple_of(PAGE_SIZE) || !ca_gpa.is_multiple_of(PAGE_SIZE) {
        return Err(SvsmError::InvalidParameter);
    }
    for gpa in [vmsa_gpa, ca_gpa] {
        context.memory.check(gpa, PAGE_SIZE).map_err(|_| SvsmError::InvalidAddress)?;
        if context.state.vcpus.uses_page(gpa) {
            return Err(SvsmError::InvalidAddress);
        }
    }
    if vmsa_gpa == ca_gpa {
        return Err(SvsmError::InvalidAddress);
    }
    if !context.state.vcpus.apic_ids.contains(&apic_id) {
        return Err(SvsmError::InvalidParameter);
    }
    // Take the page from the guest before looking at it, so it cannot
    // change what the checks see.
    match revoke(context, vmsa_gpa, RmpPageSize::Size4K) {
        Ok(()) => {}
        Err(RmpAdjustError::Input) => return Err(SvsmError::InvalidAddress),
        Err(error) => return Err(rmpadjust_failure(error)),
    }
    let checked = read_obj::<Vmsa>(context.memory, vmsa_gpa)
        .map_err(|_| SvsmError::InvalidAddress)
        .and_then(|vmsa| check_new_vmsa(context, &vmsa).map(|()| vmsa.vmpl));
    let vmpl = match checked {
        Ok(vmpl) => vmpl,
        Err(error) => {
            give_back(context, vmsa_gpa);
            return Err(error);
        }
    };
    context.owned.insert(vmsa_gpa, PageOwner::Vmsa);
    if let Err(error) = mark_vmsa(context, vmsa_gpa) {
        context.owned.remove(vmsa_gpa);
        give_back(context, vmsa_gpa);
        return Err(rmpadjust_failure(error));
    }
    context.state.vcpus.add(vmsa_gpa, ca_gpa, apic_id, vmpl, false);
    Ok(())
}

/// The spec's checks of a new VMSA.
fn check_new_vmsa(context: &CallContext<'_>, vmsa: &Vmsa) -> CallResult {
    let vmpl_ok = vmsa.vmpl != 0 && vmsa.vmpl >= context.caller.vmpl && vmsa.vmpl <= MAX_VMPL;
    if !vmpl_ok
        || vmsa.efer & EFER_SVME == 0
        || vmsa.sev_features != context.state.vcpus.startup_sev_features
    {
        return Err(SvsmError::InvalidParameter);
    }
    Ok(())
}

/// Returns a page the SVSM took (or was about to take) to the guest:
/// ordinary page (the grants clear the VMSA bit), full access for the
/// caller's VMPL and above.
fn give_back(context: &CallContext<'_>, gpa: u64) {
    if let Err(error) = grant(context, gpa, RmpPageSize::Size4K) {
        log::warn!("could not give page {gpa:#x} back to the guest: {error:?}");
    }
}

fn delete_vcpu(context: &mut CallContext<'_>) -> CallResult {
    let gpa = context.regs.rcx;
    let record = *context.state.vcpus.by_vmsa(gpa).ok_or(SvsmError::InvalidParameter)?;
    if record.startup || record.vmpl < context.caller.vmpl {
        return Err(SvsmError::InvalidParameter);
    }
    if record.state == VcpuState::Running && record.id != context.caller.id {
        return Err(SvsmError::core_instruction(3));
    }
    // Lock the VMSA (EFER.SVME clear) before it becomes a guest page again.
    let mut vmsa = read_vmsa(context, gpa)?;
    vmsa.efer &= !EFER_SVME;
    write_vmsa(context, gpa, &vmsa)?;
    context.state.vcpus.remove(record.id);
    context.owned.remove(gpa);
    give_back(context, gpa);
    Ok(())
}

/// Reads the VMSA the SVSM holds at `gpa`.
fn read_vmsa(context: &CallContext<'_>, gpa: u64) -> Result<Vmsa, SvsmError> {
    let mut vmsa: Vmsa = zerocopy::FromZeros::new_zeroed();
    context
        .svsm_pages
        .read(gpa, zerocopy::IntoBytes::as_mut_bytes(&mut vmsa))
        .map_err(|_| SvsmError::InvalidAddress)?;
    Ok(vmsa)
}

/// Writes the VMSA the SVSM holds at `gpa`.
fn write_vmsa(context: &CallContext<'_>, gpa: u64, vmsa: &Vmsa) -> CallResult {
    context
        .svsm_pages
        .write(gpa, zerocopy::IntoBytes::as_bytes(vmsa))
        .map_err(|_| SvsmError::InvalidAddress)
}

fn deposit_mem(context: &mut CallContext<'_>) -> CallResult {
    let list = context.regs.rcx;
    let header = read_list_header(context, list)?;
    let mut next = header.next;
    let mut result = Ok(());
    while next < header.entries {
        let outcome = read_obj::<DepositEntry>(context.memory, entry_gpa(list, next))
            .map_err(|_| SvsmError::InvalidAddress)
            .and_then(|entry| deposit_entry(context, entry));
        if let Err(error) = outcome {
            result = Err(error);
            break;
        }
        next += 1;
    }
    update_mem_available(context);
    write_next(context, list, next)?;
    result
}

/// Takes the page(s) of one deposit entry from the guest. A 2 MiB page is
/// rescinded and validated again as 512 4 KiB pages, so that each can be
/// withdrawn alone.
fn deposit_entry(context: &mut CallContext<'_>, entry: DepositEntry) -> CallResult {
    let size = entry.page_size().ok_or(SvsmError::InvalidParameter)?;
    let gpa = entry.gpa();
    if entry.reserved_bits() != 0 || !gpa.is_multiple_of(size.bytes()) {
        return Err(SvsmError::InvalidParameter);
    }
    context.memory.check(gpa, size.bytes()).map_err(|_| SvsmError::InvalidAddress)?;
    if context.state.vcpus.has_ca_in(gpa, gpa + size.bytes()) {
        return Err(SvsmError::InvalidAddress);
    }
    let rmp = rmp_size(size);
    match revoke(context, gpa, rmp) {
        Ok(()) => {}
        Err(RmpAdjustError::Input) => return Err(SvsmError::InvalidAddress),
        Err(error) => return Err(rmpadjust_failure(error)),
    }
    if size == PageSize::Size2M {
        context.platform.pvalidate(gpa, rmp, false).map_err(pvalidate_failure)?;
    }
    for page in (gpa..gpa + size.bytes()).step_by(PAGE_SIZE as usize) {
        if size == PageSize::Size2M {
            context
                .platform
                .pvalidate(page, RmpPageSize::Size4K, true)
                .map_err(pvalidate_failure)?;
        }
        context.owned.insert(page, PageOwner::Deposited);
        context.state.deposits.push(page);
    }
    Ok(())
}

fn withdraw_mem(context: &mut CallContext<'_>) -> CallResult {
    let list = context.regs.rcx;
    if !list.is_multiple_of(8) {
        return Err(SvsmError::InvalidParameter);
    }
    let capacity = list_capacity(list);
    if capacity == 0 {
        return Err(SvsmError::InvalidParameter);
    }
    let count = (context.state.deposits.len() as u64).min(capacity);
    // The whole list must be writable before a page leaves the pool, or
    // a page could be returned without the guest learning which.
    let list_len = LIST_HEADER_SIZE + count * LIST_ENTRY_SIZE;
    context.memory.check(list, list_len).map_err(|_| SvsmError::InvalidAddress)?;
    let mut written = 0u16;
    while u64::from(written) < count {
        let Some(page) = context.state.deposits.pop() else { break };
        context.owned.remove(page);
        let returned = context
            .memory
            .zero(page, PAGE_SIZE)
            .map_err(|_| SvsmError::InvalidAddress)
            .and_then(|()| grant(context, page, RmpPageSize::Size4K).map_err(rmpadjust_failure))
            .and_then(|()| {
                write_obj(context.memory, entry_gpa(list, written), &page)
                    .map_err(|_| SvsmError::InvalidAddress)
            });
        if let Err(error) = returned {
            context.owned.insert(page, PageOwner::Deposited);
            context.state.deposits.push(page);
            write_withdraw_count(context, list, written)?;
            update_mem_available(context);
            return Err(error);
        }
        written += 1;
    }
    write_withdraw_count(context, list, written)?;
    update_mem_available(context);
    Ok(())
}

fn write_withdraw_count(context: &CallContext<'_>, list: u64, count: u16) -> CallResult {
    let header = WithdrawListHeader { count, reserved: [0; 6] };
    write_obj(context.memory, list, &header).map_err(|_| SvsmError::InvalidAddress)
}

fn query_protocol(context: &mut CallContext<'_>) -> CallResult {
    let (protocol, version) = split_query_protocol_request(context.regs.rcx);
    context.regs.rcx = protocol_versions(protocol)
        .filter(|versions| versions.contains(version))
        .map_or(0, ProtocolVersions::encode);
    Ok(())
}

fn configure_vtom(context: &mut CallContext<'_>) -> CallResult {
    let rcx = context.regs.rcx;
    if rcx & vtom::QUERY != 0 {
        if rcx & vtom::QUERY_RESERVED_MASK != 0 {
            return Err(SvsmError::InvalidParameter);
        }
        // vTOM cannot be reconfigured by this SVSM.
        context.regs.rcx = 0;
        return Ok(());
    }
    if rcx & vtom::CONFIGURE_RESERVED_MASK != 0 {
        return Err(SvsmError::InvalidParameter);
    }
    Err(SvsmError::InvalidRequest)
}

#[cfg(test)]
mod tests;
