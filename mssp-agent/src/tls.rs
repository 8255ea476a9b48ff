//! TLS for the push API, both ends (the agent's server and `mssp push`): rustls with the ring provider, PEM files, mutual
//! authentication. Every error names the setting and the file, since that is what an
//! operator fixes.

use std::{path::Path, sync::Arc};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};

/// A TLS file that cannot be used, with the setting that names it.
#[derive(Debug, thiserror::Error)]
#[error("{setting} {}: {message}", .path.display())]
pub struct TlsError {
    pub setting: &'static str,
    pub path: std::path::PathBuf,
    pub message: String,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn error(setting: &'static str, path: &Path, message: impl Into<String>) -> TlsError {
    TlsError {
        setting,
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Every certificate in a PEM file (a chain: leaf first), at least one.
pub fn certs(setting: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes =
        std::fs::read(path).map_err(|e| error(setting, path, format!("cannot read: {e}")))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| error(setting, path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(error(
            setting,
            path,
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn key(setting: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes =
        std::fs::read(path).map_err(|e| error(setting, path, format!("cannot read: {e}")))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        error(
            setting,
            path,
            format!("no usable private key ({e}); expected a PEM PRIVATE KEY block"),
        )
    })
}

fn roots(setting: &'static str, path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(setting, path)? {
        store
            .add(c)
            .map_err(|e| error(setting, path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(store))
}

/// The agent's side: its certificate and key, and every client must present a certificate
/// signed by `client_ca`.
pub fn server_config(
    cert: &Path,
    key_path: &Path,
    client_ca: &Path,
) -> Result<ServerConfig, TlsError> {
    let chain = certs("tls_cert", cert)?;
    let key = key("tls_key", key_path)?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots("client_ca", client_ca)?, provider())
            .build()
            .map_err(|e| {
                error(
                    "client_ca",
                    client_ca,
                    format!("cannot verify clients with it: {e}"),
                )
            })?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| error("tls_cert", cert, e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            error(
                "tls_key",
                key_path,
                format!("does not go with tls_cert: {e}"),
            )
        })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The controller's side (`mssp push`): its client certificate and key, and the CA that
/// signed the edges' certificates.
pub fn client_config(cert: &Path, key_path: &Path, ca: &Path) -> Result<ClientConfig, TlsError> {
    let chain = certs("--cert", cert)?;
    let key = key("--key", key_path)?;
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| error("--ca", ca, e.to_string()))?
        .with_root_certificates(roots("--ca", ca)?)
        .with_client_auth_cert(chain, key)
        .map_err(|e| error("--key", key_path, format!("does not go with --cert: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The subject of a peer's certificate, for the audit trail ("CN=controller-1, O=ISP").
pub fn subject(cert: &CertificateDer<'_>) -> String {
    match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, c)) => c.subject().to_string(),
        Err(_) => "(unparsable certificate)".into(),
    }
}
