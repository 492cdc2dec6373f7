//! Guest requests on SEV-SNP: the client's messages go to the real PSP
//! through the GHCB (NAE 0x8000_0011, extended 0x8000_0012), using the SNP
//! platform's shared pages (`platform::snp::guest_request`). This module
//! only translates the host's answers into the client's terms; the
//! sequence-number and key rules stay in [`super::client`].

use crate::sev::ghcb::GuestRequestError;

use super::client::TransportError;

/// The client's view of a GHCB guest-request failure.
pub fn transport_error(error: GuestRequestError, extended: bool) -> TransportError {
    match error {
        GuestRequestError::Busy => TransportError::Busy,
        // Only an extended request's length can be fixed by the SVSM (the
        // host names the certificate pages it needs in RBX).
        GuestRequestError::InvalidLength { pages } if extended && pages > 0 => {
            let needed = usize::try_from(pages)
                .ok()
                .and_then(|pages| pages.checked_mul(abi::layout::PAGE_SIZE as usize));
            needed.map_or(TransportError::Failed(u64::MAX), |needed| {
                TransportError::CertsTooSmall { needed }
            })
        }
        GuestRequestError::InvalidLength { .. } => TransportError::Failed(1 << 32),
        GuestRequestError::Failed(code) => TransportError::Failed(code),
        // The GHCB call itself failed: whether the PSP saw the message is
        // unknown, so the client must treat it as spent.
        GuestRequestError::Ghcb(_) => TransportError::Failed(u64::MAX),
    }
}

/// The SNP platform's guest-request path.
#[cfg(target_os = "none")]
pub struct SnpTransport;

#[cfg(target_os = "none")]
impl super::client::GuestRequestTransport for SnpTransport {
    fn request(
        &mut self,
        request: &super::guest_msg::MessagePage,
        response: &mut super::guest_msg::MessagePage,
        certs: Option<&mut [u8]>,
    ) -> Result<(), TransportError> {
        let extended = certs.is_some();
        crate::platform::snp::guest_request(request, response, certs)
            .map_err(|error| transport_error(error, extended))
    }
}

/// On SNP: takes VMPCK0 from the platform and installs the guest-request
/// client over the GHCB as the report source.
#[cfg(target_os = "none")]
pub fn install() -> bool {
    let Some(key) = crate::platform::snp::take_vmpck0() else { return false };
    let client =
        super::client::GuestRequestClient::new(SnpTransport, super::guest_msg::Vmpck::new(key, 0));
    super::install_report_source(alloc::boxed::Box::new(client));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sev::ghcb::GhcbError;

    #[test]
    fn host_answers_map_to_the_client_rules() {
        assert_eq!(transport_error(GuestRequestError::Busy, false), TransportError::Busy);
        assert_eq!(
            transport_error(GuestRequestError::InvalidLength { pages: 5 }, true),
            TransportError::CertsTooSmall { needed: 5 * 4096 }
        );
        // A plain request has no certificate buffer to grow: fatal.
        assert!(matches!(
            transport_error(GuestRequestError::InvalidLength { pages: 0 }, false),
            TransportError::Failed(_)
        ));
        assert!(matches!(
            transport_error(GuestRequestError::InvalidLength { pages: u64::MAX }, true),
            TransportError::Failed(_)
        ));
        assert_eq!(
            transport_error(GuestRequestError::Failed(0x16), true),
            TransportError::Failed(0x16)
        );
        assert!(matches!(
            transport_error(GuestRequestError::Ghcb(GhcbError::Unavailable), false),
            TransportError::Failed(_)
        ));
    }
}
