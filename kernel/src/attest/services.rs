//! The services the SVSM offers and what each contributes to attestation:
//! its GUID and its manifest data (the vTPM: the EK public area as a
//! marshalled TPMT_PUBLIC). The attestation protocol builds the services
//! manifest from this registry, so a service registers once it knows its
//! data, and the manifest always reflects what is running.

use alloc::vec::Vec;

use abi::attestation::{Guid, manifest_len, write_manifest};

/// A service and its manifest data.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Service {
    guid: Guid,
    data: Vec<u8>,
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

    /// Registers `guid` with `data`, replacing what it registered before.
    pub fn register(&mut self, guid: Guid, data: Vec<u8>) {
        match self.services.iter_mut().find(|service| service.guid == guid) {
            Some(service) => service.data = data,
            None => self.services.push(Service { guid, data }),
        }
    }

    /// The manifest data of `guid`, if the service is registered.
    pub fn data(&self, guid: Guid) -> Option<&[u8]> {
        self.services.iter().find(|service| service.guid == guid).map(|s| s.data.as_slice())
    }

    /// The services manifest (SVSM spec Table 12) over every registered
    /// service, in registration order.
    pub fn manifest(&self) -> Vec<u8> {
        let entries: Vec<(Guid, &[u8])> =
            self.services.iter().map(|s| (s.guid, s.data.as_slice())).collect();
        let mut manifest = alloc::vec![0u8; manifest_len(&entries)];
        write_manifest(&entries, &mut manifest).expect("the buffer has the manifest's length");
        manifest
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(registry.data(VTPM_SERVICE_GUID), Some(&b"ek-public"[..]));
        assert_eq!(registry.data(Guid::NIL), None);
    }
}
