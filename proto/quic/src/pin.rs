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
    /// A line of the pin file is not `ADDRESS SHA256-HEX`.
    #[error(
        "{file} line {line}: {why}; each line must be `ADDRESS SHA256-HEX`: fix or delete that \
         line (a deleted pin is taken again from the server on the next connection)"
    )]
    Malformed {
        /// The pin file.
        file: String,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
    /// The pin file exists but cannot be read (or written).
    #[error("cannot use the CA pins in {file}: {why}")]
    Unusable {
        /// The pin file.
        file: String,
        /// The system's reason.
        why: String,
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

    fn read(&self) -> Result<BTreeMap<String, String>, PinError> {
        let file = || self.path.display().to_string();
        match std::fs::read(&self.path) {
            Ok(bytes) => parse(&bytes).map_err(|(line, why)| PinError::Malformed {
                file: file(),
                line,
                why,
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(err) => Err(PinError::Unusable {
                file: file(),
                why: err.to_string(),
            }),
        }
    }

    /// The fingerprint pinned for `addr`; an error if the pin file cannot be read or parsed.
    pub fn get(&self, addr: &str) -> Result<Option<String>, PinError> {
        Ok(self.read()?.remove(addr))
    }

    /// Adds a pin, keeping the others; the file is written whole, 0600.
    fn pin(&self, addr: &str, fingerprint: &str) -> Result<(), PinError> {
        let mut all = self.read()?;
        all.insert(addr.to_owned(), fingerprint.to_owned());
        let text: String = all.iter().map(|(a, f)| format!("{a} {f}\n")).collect();
        crate::ca::write_file(&self.path, text.as_bytes(), true).map_err(|e| PinError::Unusable {
            file: self.path.display().to_string(),
            why: e.to_string(),
        })
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

/// The pins in a pin file: one `ADDRESS SHA256-HEX` per line, blank lines ignored. A bad
/// line is `(its number from 1, what is wrong)`: never guessed around, since a skipped pin
/// would be taken again from whoever answers.
fn parse(bytes: &[u8]) -> Result<BTreeMap<String, String>, (usize, String)> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        (line, "not UTF-8 text".to_owned())
    })?;
    let mut pins = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let bad = |why: String| (index + 1, why);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (addr, fp) = match fields[..] {
            [] => continue,
            [addr, fp] => (addr, fp),
            _ => return Err(bad(format!("{} fields, not 2", fields.len()))),
        };
        if fp.len() != 64 || !fp.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad(
                "the fingerprint is not 64 lowercase hex digits (SHA-256)".to_owned(),
            ));
        }
        if pins.insert(addr.to_owned(), fp.to_owned()).is_some() {
            return Err(bad(format!("a second pin for {addr}")));
        }
    }
    Ok(pins)
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
        let pinned = self
            .known
            .get(&self.addr)
            .map_err(|e| self.known.refuse(e))?;
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
                .map_err(|e| self.known.refuse(e))?;
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

#[cfg(test)]
mod tests {
    //! Real QUIC handshakes (quinn, rustls) between a server presenting a chain and a client
    //! trusting on first use.

    use std::net::SocketAddr;

    use rustls::pki_types::PrivateKeyDer;

    use super::*;
    use crate::{ClusterCa, Limits, Trust, client_config, client_endpoint, server_endpoint};

    const ALPN: &[u8] = b"quip-pin-test/1";
    /// The key the pin is stored under, as `quip` uses the master's address.
    const ADDR: &str = "127.0.0.1:7000";
    const NAME: &str = "quip-node";

    /// A server presenting `chain` (leaf first) for `key`.
    fn server_config(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> quinn::ServerConfig {
        let mut tls = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
        quinn::ServerConfig::with_crypto(Arc::new(crypto))
    }

    /// One handshake of a client pinning in `known` with a server presenting `chain`. A
    /// refusal is the pin error if the pin refused, and the handshake error's text.
    async fn handshake(
        known: &KnownCas,
        chain: &[CertificateDer<'static>],
        key: PrivateKeyDer<'static>,
    ) -> Result<(), (Option<PinError>, String)> {
        let limits = Limits::client();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let server = server_endpoint(any, server_config(chain.to_vec(), key), &limits).unwrap();
        let at = server.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            if let Some(incoming) = server.accept().await {
                let _ = incoming.await;
            }
            std::future::pending::<()>().await;
        });
        let trust = Trust::Pinned {
            known: known.clone(),
            addr: ADDR.to_owned(),
        };
        let config = client_config(&trust, ALPN, None, &limits).unwrap();
        let client = client_endpoint(any, &limits).unwrap();
        let result = client.connect_with(config, at, NAME).unwrap().await;
        accept.abort();
        match result {
            Ok(conn) => {
                conn.close(0u32.into(), b"done");
                Ok(())
            }
            Err(err) => Err((known.take_error(), err.to_string())),
        }
    }

    /// A CA and a server certificate it issued.
    fn cluster() -> (ClusterCa, crate::Certified) {
        let ca = ClusterCa::generate().unwrap();
        let server = ca.issue(&[NAME]).unwrap();
        (ca, server)
    }

    async fn connect(known: &KnownCas, server: &crate::Certified) -> Result<(), PinError> {
        handshake(known, server.chain(), server.key())
            .await
            .map_err(|(pin, text)| pin.unwrap_or_else(|| panic!("refused, not by the pin: {text}")))
    }

    #[tokio::test]
    async fn first_use_pins_in_a_0600_file_and_the_same_ca_is_accepted_later() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownCas::new(dir.path().join("quip").join("known_cas"));
        let (ca, server) = cluster();
        assert_eq!(known.get(ADDR), Ok(None));

        connect(&known, &server).await.unwrap();
        let fp = fingerprint(ca.cert());
        assert_eq!(
            std::fs::read_to_string(known.path()).unwrap(),
            format!("{ADDR} {fp}\n")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(known.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "known_cas mode {mode:o}");
        }

        // The same CA, another server certificate (a node restarted, or another node).
        let other = ca.issue(&[NAME]).unwrap();
        connect(&known, &other).await.unwrap();
        connect(&known, &server).await.unwrap();
        assert_eq!(known.get(ADDR), Ok(Some(fp)));
    }

    #[tokio::test]
    async fn a_changed_ca_is_refused_saying_which_line_of_which_file_to_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_cas");
        let known = KnownCas::new(&path);
        // Another server's pin is kept whatever happens to this one.
        let elsewhere = format!("10.0.0.9:7000 {}\n", "ab".repeat(32));
        std::fs::write(&path, &elsewhere).unwrap();
        let (first_ca, first) = cluster();
        connect(&known, &first).await.unwrap();
        let pinned_text = std::fs::read_to_string(&path).unwrap();

        let (second_ca, second) = cluster();
        let err = connect(&known, &second).await.unwrap_err();
        assert_eq!(
            err,
            PinError::Changed {
                addr: ADDR.to_owned(),
                pinned: fingerprint(first_ca.cert()),
                offered: fingerprint(second_ca.cert()),
                file: path.display().to_string(),
            }
        );
        let message = err.to_string();
        assert!(
            message.contains(&format!(
                "remove the line for {ADDR} from {}",
                path.display()
            )),
            "{message}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), pinned_text);

        // Doing what it says accepts the new CA deliberately, and only for this address.
        std::fs::write(&path, &elsewhere).unwrap();
        connect(&known, &second).await.unwrap();
        assert_eq!(known.get(ADDR), Ok(Some(fingerprint(second_ca.cert()))));
        assert_eq!(known.get("10.0.0.9:7000"), Ok(Some("ab".repeat(32))));
        assert_eq!(
            connect(&known, &first)
                .await
                .map_err(|e| matches!(e, PinError::Changed { .. })),
            Err(true)
        );
    }

    #[tokio::test]
    async fn a_server_certificate_not_issued_by_the_offered_ca_is_refused_and_not_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownCas::new(dir.path().join("known_cas"));
        let (honest_ca, _) = cluster();
        let (_, forged) = cluster();
        // The forger's own certificate, presented with the honest CA after it.
        let chain = [forged.chain()[0].clone(), honest_ca.cert().clone()];
        let (pin, text) = handshake(&known, &chain, forged.key()).await.unwrap_err();
        assert_eq!(
            pin, None,
            "refused by the chain check, not by a pin: {text}"
        );
        assert!(!known.path().exists(), "nothing is pinned");

        // A server sending no CA certificate at all.
        let (_, server) = cluster();
        let alone = [server.chain()[0].clone()];
        let (pin, _) = handshake(&known, &alone, server.key()).await.unwrap_err();
        assert_eq!(
            pin,
            Some(PinError::NoCa {
                addr: ADDR.to_owned()
            })
        );
        assert!(!known.path().exists(), "nothing is pinned");
    }

    #[track_caller]
    fn check_malformed(text: &[u8], line: usize, why: &str) {
        match parse(text) {
            Err((at, reason)) => assert_eq!((at, reason.as_str()), (line, why), "{text:?}"),
            Ok(pins) => panic!("{text:?} parsed as {pins:?}"),
        }
    }

    #[test]
    fn each_malformed_line_is_named() {
        let fp = "0f".repeat(32);
        check_malformed(b"junk\n", 1, "1 fields, not 2");
        check_malformed(
            format!("a {fp}\nb {fp} extra\n").as_bytes(),
            2,
            "3 fields, not 2",
        );
        check_malformed(
            b"a 0123\n",
            1,
            "the fingerprint is not 64 lowercase hex digits (SHA-256)",
        );
        check_malformed(
            format!("a {}\n", fp.to_uppercase()).as_bytes(),
            1,
            "the fingerprint is not 64 lowercase hex digits (SHA-256)",
        );
        check_malformed(
            format!("a {fp}\n\na {fp}\n").as_bytes(),
            3,
            "a second pin for a",
        );
        let mut binary = format!("a {fp}\nb ").into_bytes();
        binary.extend_from_slice(b"\xff\n");
        check_malformed(&binary, 2, "not UTF-8 text");
        let pins = parse(format!("\n a  {fp} \n").as_bytes()).unwrap();
        assert_eq!(pins.get("a"), Some(&fp));
    }

    #[tokio::test]
    async fn a_malformed_or_unreadable_pin_file_is_a_clear_error_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_cas");
        let known = KnownCas::new(&path);
        let garbage = format!("{ADDR} {}\nnot a pin line\n", "ab".repeat(32));
        std::fs::write(&path, &garbage).unwrap();
        let (_, server) = cluster();
        let err = connect(&known, &server).await.unwrap_err();
        assert!(
            matches!(err, PinError::Malformed { line: 2, .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&format!("{} line 2", path.display())),
            "{message}"
        );
        assert!(message.contains("fix or delete that line"), "{message}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), garbage);

        // A pin file that cannot be read is not taken for an empty one.
        let unreadable = KnownCas::new(dir.path());
        let err = connect(&unreadable, &server).await.unwrap_err();
        assert!(matches!(err, PinError::Unusable { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
    }
}
