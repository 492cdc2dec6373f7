//! Multi-VMPL through the KVM "planes" uAPI, kept in this one module because
//! it is not upstream: it follows "[PATCH 00/60] KVM Planes + SEV-SNP
//! Support" v1 (Jörg Rödel, posted 2026-06-08), whose numbers changed
//! between revisions and may change again.
//!
//! In that series a plane is a privilege level (a VMPL on SNP). The SVSM at
//! VMPL0 creates a VMSA for another VMPL with the AP-creation NAE; when KVM
//! has no vCPU for that plane and APIC ID it exits to userspace with
//! `KVM_EXIT_PLANE_EVENT` (cause `KVM_PLANE_EVENT_CREATE_VCPU`, the plane in
//! `plane`, the APIC ID in `extra[0]`). Userspace creates the plane
//! (`KVM_CREATE_PLANE` on the VM fd, argument the plane id, returns a plane
//! fd) and the vCPU (`KVM_CREATE_VCPU` on the plane fd, argument the APIC
//! ID), then re-enters KVM_RUN on the plane-0 vCPU; KVM completes the
//! AP creation and switches planes itself.
//!
//! Limits of the series (from its cover letter): split irqchip required for
//! interrupts, no IRQFD, memory attributes not per plane. The launcher has
//! no interrupt controller, so this path serves the SVSM and guests that do
//! not depend on device interrupts.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::mem::{offset_of, size_of};
use std::os::fd::OwnedFd;

use zerocopy::{FromBytes, Immutable, KnownLayout};

use super::VmControl;

/// `KVM_CAP_PLANES` in the v1 series (249; the 2025 RFC used 239).
pub const KVM_CAP_PLANES: u32 = 249;
/// `KVM_EXIT_PLANE_EVENT` in the v1 series.
pub const KVM_EXIT_PLANE_EVENT: u32 = 44;
/// `KVM_PLANE_EVENT_CREATE_VCPU`.
pub const KVM_PLANE_EVENT_CREATE_VCPU: u32 = 1;
/// `KVM_CREATE_PLANE` = `_IO(KVMIO, 0xe4)` in the v1 series.
pub const KVM_CREATE_PLANE_NR: u8 = 0xe4;
/// Planes a guest at VMPL2 needs (VMPL0, 1 and 2).
pub const PLANES_FOR_VMPL2: i32 = 3;
/// Highest plane id accepted from KVM (SNP has four VMPLs).
const MAX_PLANE: u32 = 3;

/// `struct kvm_plane_event_exit` (v1 series), in kvm_run's exit union.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, Immutable, KnownLayout)]
pub struct PlaneEventExit {
    /// `KVM_PLANE_EVENT_*`.
    pub cause: u32,
    /// The plane the event concerns.
    pub plane: u32,
    /// Cause-specific data; for CREATE_VCPU, `extra[0]` is the APIC ID.
    pub extra: [u64; 8],
}

const _: () = {
    assert!(size_of::<PlaneEventExit>() == 72);
    assert!(offset_of!(PlaneEventExit, plane) == 4);
    assert!(offset_of!(PlaneEventExit, extra) == 8);
};

/// Whether the host's KVM can run a guest at VMPL2 (from KVM_CAP_PLANES).
pub fn supports_vmpl2(cap_planes: i32) -> bool {
    cap_planes >= PLANES_FOR_VMPL2
}

/// The planes and plane vCPUs created for the guest.
#[derive(Default)]
pub struct Planes {
    planes: BTreeMap<u32, OwnedFd>,
    vcpus: BTreeMap<(u32, u64), OwnedFd>,
}

impl Planes {
    /// No planes yet (plane 0 is the VM itself).
    pub fn new() -> Self {
        Planes::default()
    }

    /// Handles a `KVM_EXIT_PLANE_EVENT` whose exit union is `union`.
    pub fn handle_event(&mut self, vm: &dyn VmControl, union: &[u8; 256]) -> Result<(), String> {
        let (event, _) =
            PlaneEventExit::read_from_prefix(union).map_err(|_| "short plane event".to_string())?;
        if event.cause != KVM_PLANE_EVENT_CREATE_VCPU {
            return Err(format!(
                "unknown plane event cause {} for plane {}",
                event.cause, event.plane
            ));
        }
        let (plane, apic_id) = (event.plane, event.extra[0]);
        if plane == 0 || plane > MAX_PLANE {
            return Err(format!("KVM asked for a vCPU on plane {plane}, which is not VMPL1-3"));
        }
        if self.vcpus.contains_key(&(plane, apic_id)) {
            return Err(format!(
                "KVM asked again for the vCPU with APIC ID {apic_id} on plane {plane}"
            ));
        }
        let plane_fd = match self.planes.entry(plane) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(vm.create_plane(plane).map_err(|e| e.to_string())?),
        };
        let vcpu = vm.create_plane_vcpu(plane_fd, apic_id).map_err(|e| e.to_string())?;
        log::info!("created the vCPU with APIC ID {apic_id} on plane {plane} (VMPL{plane})");
        self.vcpus.insert((plane, apic_id), vcpu);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snp::SnpVm;
    use crate::snp::fake::{Call, FakeSnp};

    fn event(cause: u32, plane: u32, apic: u64) -> [u8; 256] {
        let mut u = [0u8; 256];
        u[0..4].copy_from_slice(&cause.to_le_bytes());
        u[4..8].copy_from_slice(&plane.to_le_bytes());
        u[8..16].copy_from_slice(&apic.to_le_bytes());
        u
    }

    #[test]
    fn create_vcpu_events_create_the_plane_once_and_one_vcpu_each() {
        let fake = FakeSnp::new();
        let mut planes = Planes::new();
        planes.handle_event(fake.control(), &event(1, 2, 0)).unwrap();
        planes.handle_event(fake.control(), &event(1, 2, 1)).unwrap();
        assert_eq!(
            fake.calls(),
            vec![
                Call::CreatePlane(2),
                Call::CreatePlaneVcpu { plane: 2, apic_id: 0 },
                Call::CreatePlaneVcpu { plane: 2, apic_id: 1 },
            ]
        );
        assert!(
            planes.handle_event(fake.control(), &event(1, 2, 1)).unwrap_err().contains("again")
        );
    }

    #[test]
    fn bad_events_are_errors() {
        let fake = FakeSnp::new();
        let mut planes = Planes::new();
        assert!(
            planes.handle_event(fake.control(), &event(7, 1, 0)).unwrap_err().contains("cause 7")
        );
        assert!(planes.handle_event(fake.control(), &event(1, 0, 0)).is_err());
        assert!(planes.handle_event(fake.control(), &event(1, 9, 0)).is_err());
        assert!(fake.calls().is_empty());
    }

    #[test]
    fn vmpl2_needs_three_planes() {
        assert!(!supports_vmpl2(0));
        assert!(!supports_vmpl2(1));
        assert!(supports_vmpl2(4));
    }
}
