//! TLS 1.3 configurations for quinn (rustls with the ring provider). Every path verifies the
//! peer: against the cluster CA, or against a CA pinned on first use. There is no
//! skip-verify anywhere.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;

use crate::pin::{KnownCas, PinningVerifier};
use crate::{Certified, Limits, TlsError};

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate in a PEM file.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let io = |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    rustls_pemfile::certs(&mut std::io::BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    Ok(Arc::new(roots))
}

/// How a client decides to trust a server.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The cluster CA, from a file the user passed (`--ca`) or the testnet wrote.
    Ca(CertificateDer<'static>),
    /// Trust on first use: the CA the server at `addr` presents is pinned in `known` the first
    /// time and required to be the same ever after (like SSH's `known_hosts`).
    Pinned {
        /// The pin store.
        known: KnownCas,
        /// The key the pin is stored under (the address the user connects to).
        addr: String,
    },
}

impl Trust {
    /// Trusts the CA certificate in a PEM file.
    pub fn from_ca_file(path: &Path) -> Result<Self, TlsError> {
        read_certs(path)?
            .into_iter()
            .next()
            .map(Self::Ca)
            .ok_or_else(|| TlsError::Pem {
                path: path.display().to_string(),
                what: "no CA certificate in the file",
            })
    }
}

/// A server configuration presenting `identity` for the given ALPNs. With `client_ca`, peers
/// that present a certificate must chain to it (nodes proving themselves to the master);
/// peers without one are allowed (clients), and the application decides per ALPN.
/// 0-RTT is off: replayable early data has no place in a login protocol.
pub fn server_config(
    identity: &Certified,
    alpns: &[&[u8]],
    client_ca: Option<&CertificateDer<'static>>,
    limits: &Limits,
) -> Result<quinn::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?,
        ),
        None => builder.with_no_client_auth(),
    };
    let mut tls = builder.with_single_cert(identity.chain().to_vec(), identity.key())?;
    tls.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(limits.transport());
    Ok(config)
}

/// A client configuration for one ALPN that verifies the server per `trust`, presenting
/// `identity` if given (a node connecting to the master).
pub fn client_config(
    trust: &Trust,
    alpn: &[u8],
    identity: Option<&Certified>,
    limits: &Limits,
) -> Result<quinn::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match trust {
        Trust::Ca(ca) => builder.with_root_certificates(roots(ca)?),
        Trust::Pinned { known, addr } => {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinningVerifier::new(
                    known.clone(),
                    addr.clone(),
                    provider(),
                )))
        }
    };
    let mut tls = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain().to_vec(), id.key())?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(limits.transport());
    Ok(config)
}
