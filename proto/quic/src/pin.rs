//! Trust on first use for the cluster CA, like SSH's `known_hosts`: the first connection to
//! an address pins the SHA-256 of the CA certificate the server presents; later connections
//! must present the same CA, and the server's certificate must chain to it. A changed CA is
//! refused with an error that says what changed and how to accept it deliberately.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// Why a pinned connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    /// The server's CA is not the one pinned for this address.
    #[error(
        "the cluster CA of {addr} has changed (pinned {pinned}, offered {offered}); if you \
         expect this, remove the line for {addr} from {file}"
    )]
    Changed {
        /// The address.
        addr: String,
        /// Fingerprint pinned earlier.
        pinned: String,
        /// Fingerprint offered now.
        offered: String,
        /// The pin file.
        file: String,
    },
    /// The server sent no CA certificate after its own.
    #[error("the server at {addr} sent no CA certificate to pin")]
    NoCa {
        /// The address.
        addr: String,
    },
}

/// The pin file: one `address sha256-hex` line per server.
#[derive(Debug, Clone)]
pub struct KnownCas {
    path: PathBuf,
    last_error: Arc<Mutex<Option<PinError>>>,
}

impl KnownCas {
    /// Pins stored in `path` (created on first pin).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            last_error: Arc::default(),
        }
    }

    /// The pin file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> BTreeMap<String, String> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (addr, fp) = line.trim().split_once(' ')?;
                Some((addr.to_owned(), fp.trim().to_owned()))
            })
            .collect()
    }

    /// The fingerprint pinned for `addr`.
    pub fn get(&self, addr: &str) -> Option<String> {
        self.read().remove(addr)
    }

    fn pin(&self, addr: &str, fingerprint: &str) -> std::io::Result<()> {
        let mut all = self.read();
        all.insert(addr.to_owned(), fingerprint.to_owned());
        let text: String = all.iter().map(|(a, f)| format!("{a} {f}\n")).collect();
        // Which servers a user talks to is nobody else's business: owner-only.
        crate::ca::write_file(&self.path, text.as_bytes(), true)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// Why the last handshake through this store was refused, if it was refused by a pin.
    pub fn take_error(&self) -> Option<PinError> {
        self.last_error.lock().ok()?.take()
    }

    fn refuse(&self, err: PinError) -> rustls::Error {
        let text = err.to_string();
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(err);
        }
        rustls::Error::General(text)
    }
}

/// SHA-256 of a certificate, lowercase hex.
pub(crate) fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

#[derive(Debug)]
pub(crate) struct PinningVerifier {
    known: KnownCas,
    addr: String,
    provider: Arc<CryptoProvider>,
}

impl PinningVerifier {
    pub(crate) fn new(known: KnownCas, addr: String, provider: Arc<CryptoProvider>) -> Self {
        Self {
            known,
            addr,
            provider,
        }
    }
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some((ca, rest)) = intermediates.split_last() else {
            return Err(self.known.refuse(PinError::NoCa {
                addr: self.addr.clone(),
            }));
        };
        let offered = fingerprint(ca);
        let pinned = self.known.get(&self.addr);
        if let Some(pinned) = &pinned
            && *pinned != offered
        {
            return Err(self.known.refuse(PinError::Changed {
                addr: self.addr.clone(),
                pinned: pinned.clone(),
                offered,
                file: self.known.path.display().to_string(),
            }));
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verified =
            verifier.verify_server_cert(end_entity, rest, server_name, ocsp_response, now)?;
        if pinned.is_none() {
            self.known
                .pin(&self.addr, &offered)
                .map_err(|e| rustls::Error::General(format!("cannot save pin: {e}")))?;
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered (QUIC requires it).
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
