//! TLS for the proxy: certificates chosen by SNI.
//!
//! The default pair (`KEDA_HTTP_PROXY_TLS_CERT_PATH` / `_KEY_PATH`) answers
//! any name nothing else claims; every pair found under
//! `KEDA_HTTP_PROXY_TLS_CERT_STORE_PATHS` is indexed by the DNS names of its
//! certificate's subjectAltName (exact names first, then `*.suffix`
//! wildcards, which match one label). ALPN offers `h2` and `http/1.1`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::{
    self,
    crypto::ring,
    pki_types::{CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// No certificate at all.
    #[error("TLS is enabled but no certificate was found (default pair or cert store)")]
    NoCertificate,
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn file_err(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Certificates by name.
#[derive(Debug, Default)]
pub struct CertStore {
    default: Option<Arc<CertifiedKey>>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl CertStore {
    /// Loads the default pair (when both files exist) and every pair under `store_paths`.
    pub fn load(cert: &Path, key: &Path, store_paths: &[PathBuf]) -> Result<CertStore, TlsError> {
        let mut store = CertStore::default();
        if cert.exists() && key.exists() {
            let ck = load_pair(cert, key)?;
            store.index(&ck);
            store.default = Some(ck);
        }
        for path in store_paths {
            for (cert, key) in find_pairs(path)? {
                let ck = load_pair(&cert, &key)?;
                store.index(&ck);
                if store.default.is_none() {
                    store.default = Some(ck);
                }
            }
        }
        if store.default.is_none() {
            return Err(TlsError::NoCertificate);
        }
        Ok(store)
    }

    fn index(&mut self, ck: &Arc<CertifiedKey>) {
        let Some(leaf) = ck.cert.first() else { return };
        let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
            return;
        };
        for name in cert.valid_dns_names() {
            let name = name.to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(suffix) => {
                    self.wildcard
                        .entry(suffix.to_string())
                        .or_insert(ck.clone());
                }
                None => {
                    self.exact.entry(name).or_insert(ck.clone());
                }
            }
        }
    }

    /// The certificate for `server_name` (SNI), else the default.
    pub fn pick(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = server_name {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(ck) = self.exact.get(&name) {
                return Some(ck.clone());
            }
            if let Some((_, suffix)) = name.split_once('.')
                && let Some(ck) = self.wildcard.get(suffix)
            {
                return Some(ck.clone());
            }
        }
        self.default.clone()
    }

    /// A server configuration using this store, with ALPN `h2`, `http/1.1`.
    pub fn server_config(self) -> Result<rustls::ServerConfig, TlsError> {
        let mut cfg =
            rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(self));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem = std::fs::read(cert).map_err(|e| file_err(cert, e))?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, e))?;
    if chain.is_empty() {
        return Err(file_err(cert, "no PEM certificate"));
    }
    let pem = std::fs::read(key).map_err(|e| file_err(key, e))?;
    let key_der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| file_err(key, e))?
        .ok_or_else(|| file_err(key, "no PEM private key"))?;
    let signing = ring::sign::any_supported_type(&key_der).map_err(|e| file_err(key, e))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// Certificate/key pairs at `path`: a file (its key beside it), or a
/// directory scanned one level deep. A certificate `X.crt` or `X.pem` pairs
/// with `X.key`, `X-key.pem` or `X.key.pem`; `tls.crt` with `tls.key`
/// (a mounted Kubernetes TLS Secret).
fn find_pairs(path: &Path) -> Result<Vec<(PathBuf, PathBuf)>, TlsError> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| file_err(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        v
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        return Err(file_err(path, "no such file or directory"));
    };
    let mut pairs = Vec::new();
    for f in files {
        let Some(name) = f.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let stem = if let Some(s) = name.strip_suffix(".crt") {
            s
        } else if let Some(s) = name.strip_suffix(".pem") {
            if s.ends_with("-key") || s.ends_with(".key") || s.ends_with("key") {
                continue;
            }
            s
        } else {
            continue;
        };
        let dir = f.parent().unwrap_or(Path::new("."));
        let key = [
            format!("{stem}.key"),
            format!("{stem}-key.pem"),
            format!("{stem}.key.pem"),
        ]
        .into_iter()
        .map(|k| dir.join(k))
        .find(|k| k.is_file());
        match key {
            Some(k) => pairs.push((f, k)),
            None => {
                tracing::warn!(cert = %f.display(), "certificate without a key beside it; skipped")
            }
        }
    }
    Ok(pairs)
}

/// Splits `KEDA_HTTP_PROXY_TLS_CERT_STORE_PATHS`.
pub fn store_paths(list: &str) -> Vec<PathBuf> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}
