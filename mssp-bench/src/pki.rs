//! The lab PKI: throwaway certificate authorities for the push tests and benchmarks, the way an ISP would set them
//! up: one CA for the edges' server certificates, one for the controllers' client
//! certificates (and a stranger CA nobody trusts).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA that can issue certificates.
pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).expect("CA cert");
        Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A leaf certificate and its key (PEM), for a server (`names` are its SANs) or a client.
    pub fn issue(&self, cn: &str, names: &[&str], server: bool) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = p.signed_by(&key, &self.issuer).expect("leaf cert");
        (cert.pem(), key.serialize_pem())
    }
}

/// Certificate and key files on disk.
#[derive(Clone, Debug)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn write_identity(dir: &Path, name: &str, (cert, key): (String, String)) -> Identity {
    let id = Identity {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&id.cert, cert).expect("write cert");
    std::fs::write(&id.key, key).expect("write key");
    id
}

/// The whole PKI of a test: edge CA + edge certificate (for 127.0.0.1), controller CA +
/// a controller certificate, and a stranger's CA with a client certificate of its own.
pub struct Pki {
    pub dir: PathBuf,
    pub edge_ca: PathBuf,
    pub edge: Identity,
    pub controller_ca: PathBuf,
    pub controller: Identity,
    pub stranger: Identity,
    /// The CA that signed `stranger`.
    pub stranger_ca: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let edges = Ca::new("mssp test edges CA");
        let controllers = Ca::new("mssp test controllers CA");
        let strangers = Ca::new("someone else's CA");
        let edge_ca = dir.join("edges-ca.crt");
        let controller_ca = dir.join("controllers-ca.crt");
        let stranger_ca = dir.join("strangers-ca.crt");
        std::fs::write(&stranger_ca, &strangers.cert_pem).unwrap();
        std::fs::write(&edge_ca, &edges.cert_pem).unwrap();
        std::fs::write(&controller_ca, &controllers.cert_pem).unwrap();
        Pki {
            dir: dir.to_path_buf(),
            edge: write_identity(
                dir,
                "edge",
                edges.issue("edge", &["127.0.0.1", "localhost"], true),
            ),
            controller: write_identity(
                dir,
                "controller",
                controllers.issue("controller-1", &[], false),
            ),
            stranger: write_identity(dir, "stranger", strangers.issue("controller-1", &[], false)),
            edge_ca,
            controller_ca,
            stranger_ca,
        }
    }

    /// The agent config lines for a push endpoint on `port`.
    pub fn agent_config(&self, port: u16, extra: &str) -> String {
        format!(
            "push_listen = \"127.0.0.1:{port}\"\ntls_cert = {:?}\ntls_key = {:?}\nclient_ca = {:?}\n{extra}",
            self.edge.cert.display().to_string(),
            self.edge.key.display().to_string(),
            self.controller_ca.display().to_string(),
        )
    }
}
