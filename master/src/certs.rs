//! The cluster's certificates on the master's side: `init` makes the CA and the master's
//! certificate, `issue_node` admits a node, and [`node_name_matches`] checks that a node
//! registers under a name its certificate carries.

use std::path::{Path, PathBuf};

use quip_proto::ids::NodeName;
use quip_quic::{Certified, ClusterCa, names};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::MasterError;

/// File stem of the master's certificate and key inside the master directory.
pub const MASTER_STEM: &str = "master";

/// Names every node certificate carries, so they cannot be a node's own name: registering as
/// one of them would prove nothing about which node is speaking.
const RESERVED: [&str; 3] = [names::NODE, names::MASTER, "localhost"];

/// Creates the cluster CA (`ca.pem`, `ca.key`) and the master's certificate (`master.pem`,
/// `master.key`) in `dir`, for the names `quip-master`, `localhost`, `127.0.0.1` and `::1`.
/// Refuses to overwrite an existing CA. Returns the CA certificate's path (what clients pass
/// as `--ca`).
pub fn init(dir: &Path) -> Result<PathBuf, MasterError> {
    init_with_hosts(dir, &[])
}

/// Like [`init`], adding `hosts` (DNS names or IP addresses other machines use to reach the
/// master) to the master's certificate.
pub fn init_with_hosts(dir: &Path, hosts: &[&str]) -> Result<PathBuf, MasterError> {
    let ca_path = ClusterCa::cert_path(dir);
    if ca_path.exists() {
        return Err(MasterError::AlreadyInitialized {
            dir: dir.display().to_string(),
        });
    }
    let mut all = vec![names::MASTER, "localhost", "127.0.0.1", "::1"];
    for host in hosts {
        check_host(host)?;
        all.push(host);
    }
    dedup(&mut all);
    let ca = ClusterCa::generate()?;
    // Issue first, save after: a failure leaves no half-made directory behind.
    let master = ca.issue(&all)?;
    ca.save(dir)?;
    master.save(dir, MASTER_STEM)?;
    Ok(ca_path)
}

/// Issues a certificate for node `name` with the CA in `dir`: its names are `name`,
/// `quip-node`, each of `hosts` (the host clients use to reach it, IP or DNS) and `localhost`.
/// The certificate serves clients *and* proves the node to the master. Nothing is saved:
/// the caller decides where the key goes ([`Certified::save`]).
pub fn issue_node(dir: &Path, name: &NodeName, hosts: &[&str]) -> Result<Certified, MasterError> {
    if RESERVED.contains(&name.as_str()) {
        return Err(MasterError::InvalidName {
            what: "node name",
            value: name.to_string(),
            reason: format!("{name} is a name every cluster certificate may carry"),
        });
    }
    let ca = ClusterCa::load(dir).map_err(|err| MasterError::NotInitialized {
        dir: dir.display().to_string(),
        what: err.to_string(),
    })?;
    let mut all = vec![name.as_str(), names::NODE];
    for host in hosts {
        check_host(host)?;
        all.push(host);
    }
    all.push("localhost");
    dedup(&mut all);
    Ok(ca.issue(&all)?)
}

/// The master's own identity and the CA certificate nodes must chain to, from `dir`.
pub(crate) fn load_identity(
    dir: &Path,
) -> Result<(Certified, CertificateDer<'static>), MasterError> {
    let missing = |err: quip_quic::TlsError| MasterError::NotInitialized {
        dir: dir.display().to_string(),
        what: err.to_string(),
    };
    let identity = Certified::load_from(dir, MASTER_STEM).map_err(missing)?;
    let ca_path = ClusterCa::cert_path(dir);
    let ca =
        CertificateDer::from_pem_file(&ca_path).map_err(|err| MasterError::NotInitialized {
            dir: dir.display().to_string(),
            what: format!("{}: {err}", ca_path.display()),
        })?;
    Ok((identity, ca))
}

/// Whether `name` is a node name the leaf certificate `leaf` was issued for. rustls has
/// already checked that the certificate chains to the cluster CA; this binds the name.
pub(crate) fn node_name_matches(leaf: &CertificateDer<'_>, name: &NodeName) -> bool {
    if RESERVED.contains(&name.as_str()) {
        return false;
    }
    let Ok(server_name) = ServerName::try_from(name.as_str()) else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    // An all-digit name could parse as an IP address; node names are DNS-like labels only.
    matches!(server_name, ServerName::DnsName(_))
        && cert.verify_is_valid_for_subject_name(&server_name).is_ok()
}

/// Splits `HOST:PORT` (IPv6 as `[::1]:7001`) into host and port.
pub fn split_host_port(addr: &str) -> Result<(String, u16), MasterError> {
    let invalid = |reason: &str| MasterError::InvalidName {
        what: "address",
        value: addr.to_owned(),
        reason: reason.to_owned(),
    };
    if let Ok(sock) = addr.parse::<std::net::SocketAddr>() {
        return Ok((sock.ip().to_string(), sock.port()));
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| invalid("expected HOST:PORT"))?;
    let port = port
        .parse()
        .map_err(|_| invalid("the port is not a number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    check_host(host)?;
    Ok((host.to_owned(), port))
}

fn check_host(host: &str) -> Result<(), MasterError> {
    match ServerName::try_from(host) {
        Ok(_) => Ok(()),
        Err(err) => Err(MasterError::InvalidName {
            what: "host",
            value: host.to_owned(),
            reason: err.to_string(),
        }),
    }
}

fn dedup(names: &mut Vec<&str>) {
    let mut seen = std::collections::HashSet::new();
    names.retain(|name| seen.insert(name.to_ascii_lowercase()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeName {
        NodeName::new(name).unwrap()
    }

    #[test]
    fn init_refuses_to_overwrite_and_issue_binds_names() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init(dir.path()).unwrap();
        assert!(ca.exists());
        assert!(dir.path().join("master.pem").exists());
        assert!(matches!(
            init(dir.path()),
            Err(MasterError::AlreadyInitialized { .. })
        ));
        let cert = issue_node(dir.path(), &node("node-a"), &["10.0.0.5"]).unwrap();
        let leaf = &cert.chain()[0];
        assert!(node_name_matches(leaf, &node("node-a")));
        assert!(!node_name_matches(leaf, &node("node-b")));
        // Names every node carries prove nothing.
        assert!(!node_name_matches(leaf, &node("quip-node")));
        assert!(!node_name_matches(leaf, &node("localhost")));
        assert!(issue_node(dir.path(), &node("quip-master"), &[]).is_err());
    }

    #[test]
    fn issue_without_ca_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = issue_node(dir.path(), &node("node-a"), &[]).unwrap_err();
        assert!(err.to_string().contains("quip-master init"), "{err}");
    }

    #[test]
    fn host_port_parsing() {
        let check = |input: &str, expect: Option<(&str, u16)>| {
            let got = split_host_port(input).ok();
            let got = got.as_ref().map(|(h, p)| (h.as_str(), *p));
            assert_eq!(got, expect, "{input}");
        };
        check("127.0.0.1:7001", Some(("127.0.0.1", 7001)));
        check("[::1]:7002", Some(("::1", 7002)));
        check("chat.example.org:443", Some(("chat.example.org", 443)));
        check("chat.example.org", None);
        check("host:notaport", None);
        check("bad host:1", None);
    }
}
