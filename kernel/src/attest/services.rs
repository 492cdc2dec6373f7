//! The services the SVSM offers and what each contributes to attestation:
//! its GUID and its manifest data (the vTPM: the EK public area as a
//! marshalled TPMT_PUBLIC). The attestation protocol builds the services
//! manifest from this registry at each call, so the manifest always
//! reflects what is running: a service registers either fixed data or a
//! function that yields its current data (the vTPM's EK disappears when the
//! vTPM enters failure mode).

use alloc::vec::Vec;

use abi::attestation::{Guid, manifest_len, write_manifest};

/// Where a service's manifest data comes from.
#[derive(Clone, Debug)]
enum Data {
    /// Fixed bytes.
    Fixed(Vec<u8>),
    /// Asked for at each attestation (no data: an empty entry).
    Current(fn() -> Option<Vec<u8>>),
}

/// A service and its manifest data.
#[derive(Clone, Debug)]
struct Service {
    guid: Guid,
    data: Data,
}

impl Service {
    fn data(&self) -> Vec<u8> {
        match &self.data {
            Data::Fixed(bytes) => bytes.clone(),
            Data::Current(current) => current().unwrap_or_default(),
        }
    }
}

/// The registry. A service without manifest data still appears (empty
/// data), as the SVSM specification requires.
#[derive(Clone, Debug, Default)]
pub struct ServiceRegistry {
    services: Vec<Service>,
}

impl ServiceRegistry {
    /// An empty registry.
    pub const fn new() -> ServiceRegistry {
        ServiceRegistry { services: Vec::new() }
    }

    /// Registers `guid` with fixed `data`, replacing an earlier
    /// registration.
    pub fn register(&mut self, guid: Guid, data: Vec<u8>) {
        self.set(guid, Data::Fixed(data));
    }

    /// Registers `guid` with a function that yields its data at each
    /// attestation (`None`: the service lists no data right now).
    pub fn register_current(&mut self, guid: Guid, current: fn() -> Option<Vec<u8>>) {
        self.set(guid, Data::Current(current));
    }

    fn set(&mut self, guid: Guid, data: Data) {
        match self.services.iter_mut().find(|service| service.guid == guid) {
            Some(service) => service.data = data,
            None => self.services.push(Service { guid, data }),
        }
    }

    /// The manifest data of `guid`, if the service is registered.
    pub fn data(&self, guid: Guid) -> Option<Vec<u8>> {
        self.services.iter().find(|service| service.guid == guid).map(Service::data)
    }

    /// The services manifest (SVSM spec Table 12) over every registered
    /// service, in registration order.
    pub fn manifest(&self) -> Vec<u8> {
        let data: Vec<(Guid, Vec<u8>)> = self.services.iter().map(|s| (s.guid, s.data())).collect();
        let entries: Vec<(Guid, &[u8])> =
            data.iter().map(|(guid, bytes)| (*guid, bytes.as_slice())).collect();
        let mut manifest = alloc::vec![0u8; manifest_len(&entries)];
        write_manifest(&entries, &mut manifest).expect("the buffer has the manifest's length");
        manifest
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::{AtomicBool, Ordering};

    use abi::attestation::{CERT_GUID_CRL, VTPM_SERVICE_GUID, manifest_entries};

    use super::*;

    #[test]
    fn manifest_lists_every_service_and_follows_updates() {
        let mut registry = ServiceRegistry::new();
        assert_eq!(registry.manifest().len(), 24, "an empty manifest is its header");
        registry.register(VTPM_SERVICE_GUID, Vec::new());
        registry.register(CERT_GUID_CRL, b"other".to_vec());
        registry.register(VTPM_SERVICE_GUID, b"ek-public".to_vec());
        let manifest = registry.manifest();
        let entries: Vec<_> = manifest_entries(&manifest).unwrap().collect();
        assert_eq!(
            entries,
            [(VTPM_SERVICE_GUID, &b"ek-public"[..]), (CERT_GUID_CRL, &b"other"[..])]
        );
        assert_eq!(registry.data(VTPM_SERVICE_GUID), Some(b"ek-public".to_vec()));
        assert_eq!(registry.data(Guid::NIL), None);
    }

    static ALIVE: AtomicBool = AtomicBool::new(true);

    fn current_ek() -> Option<Vec<u8>> {
        ALIVE.load(Ordering::SeqCst).then(|| b"ek".to_vec())
    }

    #[test]
    fn current_data_is_asked_for_at_each_manifest() {
        let mut registry = ServiceRegistry::new();
        registry.register_current(VTPM_SERVICE_GUID, current_ek);
        let with: Vec<_> =
            manifest_entries(&registry.manifest()).unwrap().map(|(_, d)| d.to_vec()).collect();
        assert_eq!(with, [b"ek".to_vec()]);
        ALIVE.store(false, Ordering::SeqCst);
        let manifest = registry.manifest();
        let without: Vec<_> = manifest_entries(&manifest).unwrap().collect();
        assert_eq!(without, [(VTPM_SERVICE_GUID, &b""[..])], "listed, without data");
    }
}
