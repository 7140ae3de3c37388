//! The cluster CA: one self-signed root (ECDSA P-256, made with rcgen) that signs the
//! master's and every node's certificate. Whoever holds `ca.key` can admit nodes, so it is
//! written owner-readable only.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::TlsError;

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const CA_NAME: &str = "Quip cluster CA";
/// Lifetime of the CA.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Lifetime of a node or master certificate; re-issue before it ends.
const LEAF_LIFETIME: Duration = Duration::from_secs(2 * 365 * 86_400);

/// The cluster's certificate authority.
pub struct ClusterCa {
    params: CertificateParams,
    key: KeyPair,
    cert: CertificateDer<'static>,
    cert_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(86_400)).into();
    params.not_after = (now + lifetime).into();
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Writes `contents` to `path` atomically; `secret` files are made owner-only (0600), and a
/// missing directory is created owner-only (0700).
pub(crate) fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        // Directories created here (a node's data directory, a client's data root) are
        // owner-only whatever the umask.
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp).map_err(io)?;
    std::io::Write::write_all(&mut file, contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

impl ClusterCa {
    /// A fresh CA.
    pub fn generate() -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = ca_params()?;
        validity(&mut params, CA_LIFETIME);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert: cert.der().clone(),
            params,
            key,
        })
    }

    /// Loads `ca.pem` and `ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let cert_pem = read(&dir.join(CA_CERT))?;
        let key = KeyPair::from_pem(&read(&dir.join(CA_KEY))?)?;
        let cert = crate::tls::read_certs(&dir.join(CA_CERT))?
            .into_iter()
            .next()
            .ok_or_else(|| TlsError::Pem {
                path: dir.join(CA_CERT).display().to_string(),
                what: "no certificate",
            })?;
        // An issuer needs only the CA's name, key-id method and key usages, which are the
        // same for every Quip CA; the signature binds issued certificates to `key`.
        Ok(Self {
            params: ca_params()?,
            key,
            cert,
            cert_pem,
        })
    }

    /// Writes `ca.pem` (public) and `ca.key` (0600) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        write_file(&dir.join(CA_CERT), self.cert_pem.as_bytes(), false)?;
        write_file(&dir.join(CA_KEY), self.key.serialize_pem().as_bytes(), true)
    }

    /// Loads the CA in `dir`, creating and saving one if there is none.
    pub fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        if dir.join(CA_CERT).exists() {
            return Self::load(dir);
        }
        let ca = Self::generate()?;
        ca.save(dir)?;
        Ok(ca)
    }

    /// Path of the CA certificate inside a directory holding a CA.
    pub fn cert_path(dir: &Path) -> PathBuf {
        dir.join(CA_CERT)
    }

    /// The CA certificate (DER).
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate (PEM), what clients pass as `--ca`.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for `names` (DNS names; IP literals become IP SANs), usable as a
    /// TLS server *and* client certificate. The first name is the subject's common name.
    pub fn issue(&self, names: &[&str]) -> Result<Certified, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        for name in names {
            params.subject_alt_names.push(match name.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into()?),
            });
        }
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut params, LEAF_LIFETIME);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Certified {
            chain: vec![cert.der().clone(), self.cert.clone()],
            key_der: key.serialize_der(),
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A certificate chain (leaf, then CA) and its private key.
#[derive(Clone)]
pub struct Certified {
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
    chain_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for Certified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certified")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Certified {
    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The private key.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// Writes `<stem>.pem` (chain) and `<stem>.key` (0600) into `dir`.
    pub fn save(&self, dir: &Path, stem: &str) -> Result<(), TlsError> {
        write_file(
            &dir.join(format!("{stem}.pem")),
            self.chain_pem.as_bytes(),
            false,
        )?;
        write_file(
            &dir.join(format!("{stem}.key")),
            self.key_pem.as_bytes(),
            true,
        )
    }

    /// Loads a chain and key from PEM files.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = crate::tls::read_certs(cert)?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                path: cert.display().to_string(),
                what: "no certificate",
            });
        }
        let key_pem = read(key)?;
        let key_der = KeyPair::from_pem(&key_pem)?.serialize_der();
        Ok(Self {
            chain,
            key_der,
            chain_pem: read(cert)?,
            key_pem,
        })
    }

    /// Loads `<stem>.pem` and `<stem>.key` from `dir`.
    pub fn load_from(dir: &Path, stem: &str) -> Result<Self, TlsError> {
        Self::load(
            &dir.join(format!("{stem}.pem")),
            &dir.join(format!("{stem}.key")),
        )
    }
}
