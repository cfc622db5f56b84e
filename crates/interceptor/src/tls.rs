//! TLS for the proxy: certificates chosen by SNI.
//!
//! The default pair (`KEDA_HTTP_PROXY_TLS_CERT_PATH` / `_KEY_PATH`) answers
//! any name nothing else claims; every pair found under
//! `KEDA_HTTP_PROXY_TLS_CERT_STORE_PATHS` is indexed by the DNS names of its
//! certificate's subjectAltName (exact names first, then `*.suffix`
//! wildcards, which match one label). ALPN offers `h2` and `http/1.1`.
//!
//! The handshake policy ([`TlsPolicy`]) takes upstream's variables and Go's
//! names: `KEDA_HTTP_PROXY_TLS_MIN_VERSION` / `_MAX_VERSION`
//! (`VersionTLS12`, `VersionTLS13`, `1.2`, `1.3`), `_CIPHER_SUITES` and
//! `_CURVE_PREFERENCES`, mapped onto what rustls (with *ring*) supports; a
//! value it cannot honour stops the start with an error naming the variable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::{
    self, SupportedCipherSuite, SupportedProtocolVersion,
    crypto::{CryptoProvider, SupportedKxGroup, ring},
    pki_types::{CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use crate::config::ProxyArgs;

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
    /// A TLS policy variable holds a value we cannot honour.
    #[error("{var}: {message}")]
    Setting {
        /// The environment variable.
        var: &'static str,
        /// What is wrong with its value.
        message: String,
    },
}

const MIN_VERSION_VAR: &str = "KEDA_HTTP_PROXY_TLS_MIN_VERSION";
const MAX_VERSION_VAR: &str = "KEDA_HTTP_PROXY_TLS_MAX_VERSION";
const CIPHER_SUITES_VAR: &str = "KEDA_HTTP_PROXY_TLS_CIPHER_SUITES";
const CURVES_VAR: &str = "KEDA_HTTP_PROXY_TLS_CURVE_PREFERENCES";

fn setting_err(var: &'static str, message: impl Into<String>) -> TlsError {
    TlsError::Setting {
        var,
        message: message.into(),
    }
}

/// The handshake policy of the TLS proxy: versions, cipher suites and
/// key-exchange groups, from upstream's variables.
#[derive(Debug, Clone)]
pub struct TlsPolicy {
    versions: Vec<&'static SupportedProtocolVersion>,
    cipher_suites: Vec<SupportedCipherSuite>,
    kx_groups: Vec<&'static dyn SupportedKxGroup>,
}

impl Default for TlsPolicy {
    fn default() -> Self {
        TlsPolicy {
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            cipher_suites: ring::DEFAULT_CIPHER_SUITES.to_vec(),
            kx_groups: ring::DEFAULT_KX_GROUPS.to_vec(),
        }
    }
}

impl TlsPolicy {
    /// The policy set by the proxy's flags (empty values keep the defaults).
    pub fn from_args(args: &ProxyArgs) -> Result<TlsPolicy, TlsError> {
        TlsPolicy::parse(
            &args.tls_min_version,
            &args.tls_max_version,
            &args.tls_cipher_suites,
            &args.tls_curve_preferences,
        )
    }

    /// The policy for these variable values (empty: default).
    pub fn parse(
        min_version: &str,
        max_version: &str,
        cipher_suites: &str,
        curves: &str,
    ) -> Result<TlsPolicy, TlsError> {
        let mut policy = TlsPolicy::default();
        let min = parse_version(MIN_VERSION_VAR, min_version)?.unwrap_or(TlsVersion::V12);
        let max = parse_version(MAX_VERSION_VAR, max_version)?.unwrap_or(TlsVersion::V13);
        if min > max {
            return Err(setting_err(
                MIN_VERSION_VAR,
                format!(
                    "{min_version:?} is above {MAX_VERSION_VAR} {max_version:?}; no TLS version is left"
                ),
            ));
        }
        policy.versions = [TlsVersion::V13, TlsVersion::V12]
            .into_iter()
            .filter(|v| (min..=max).contains(v))
            .map(TlsVersion::rustls)
            .collect();
        if let Some(suites) = parse_cipher_suites(cipher_suites)? {
            policy.cipher_suites = suites;
        }
        if let Some(groups) = parse_curves(curves)? {
            policy.kx_groups = groups;
        }
        Ok(policy)
    }

    /// The TLS versions allowed, newest first.
    pub fn versions(&self) -> &[&'static SupportedProtocolVersion] {
        &self.versions
    }

    /// The cipher suites offered.
    pub fn cipher_suites(&self) -> &[SupportedCipherSuite] {
        &self.cipher_suites
    }

    /// The key-exchange groups offered, in order of preference.
    pub fn kx_groups(&self) -> &[&'static dyn SupportedKxGroup] {
        &self.kx_groups
    }

    fn provider(&self) -> CryptoProvider {
        CryptoProvider {
            cipher_suites: self.cipher_suites.clone(),
            kx_groups: self.kx_groups.clone(),
            ..ring::default_provider()
        }
    }
}

/// The TLS versions rustls speaks, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TlsVersion {
    V12,
    V13,
}

impl TlsVersion {
    fn rustls(self) -> &'static SupportedProtocolVersion {
        match self {
            TlsVersion::V12 => &rustls::version::TLS12,
            TlsVersion::V13 => &rustls::version::TLS13,
        }
    }
}

/// A version as upstream takes it: Go's constant name or the number.
fn parse_version(var: &'static str, value: &str) -> Result<Option<TlsVersion>, TlsError> {
    match value.trim() {
        "" => Ok(None),
        "VersionTLS12" | "1.2" => Ok(Some(TlsVersion::V12)),
        "VersionTLS13" | "1.3" => Ok(Some(TlsVersion::V13)),
        v @ ("VersionTLS10" | "VersionTLS11" | "VersionSSL30" | "1.0" | "1.1") => Err(setting_err(
            var,
            format!("TLS version {v:?} is not supported (only VersionTLS12 and VersionTLS13)"),
        )),
        v => Err(setting_err(
            var,
            format!("unknown TLS version {v:?} (expected VersionTLS12, VersionTLS13, 1.2 or 1.3)"),
        )),
    }
}

/// Go's cipher suite names that rustls implements (Go's older constant
/// names for the ChaCha20 suites included).
static CIPHER_SUITES: &[(&str, SupportedCipherSuite)] = {
    use ring::cipher_suite::*;
    &[
        ("TLS_AES_128_GCM_SHA256", TLS13_AES_128_GCM_SHA256),
        ("TLS_AES_256_GCM_SHA384", TLS13_AES_256_GCM_SHA384),
        (
            "TLS_CHACHA20_POLY1305_SHA256",
            TLS13_CHACHA20_POLY1305_SHA256,
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
            TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ]
};

/// Go's other cipher suite names (CBC, RSA key exchange, 3DES, RC4): known,
/// but not implemented by rustls.
const GO_ONLY_CIPHER_SUITES: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// The named suites, in the given order; `None` for an empty list. Go
/// applies its cipher suite list to TLS 1.2 only, so a list naming no TLS
/// 1.3 suite keeps the default TLS 1.3 suites; one that names some
/// restricts TLS 1.3 to those.
fn parse_cipher_suites(list: &str) -> Result<Option<Vec<SupportedCipherSuite>>, TlsError> {
    let mut suites: Vec<SupportedCipherSuite> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some((_, suite)) = CIPHER_SUITES.iter().find(|(n, _)| *n == name) else {
            let why = if GO_ONLY_CIPHER_SUITES.contains(&name) {
                "is not supported by rustls"
            } else {
                "is unknown"
            };
            let supported: Vec<&str> = CIPHER_SUITES
                .iter()
                .map(|(n, _)| *n)
                .filter(|n| !n.ends_with("CHACHA20_POLY1305"))
                .collect();
            return Err(setting_err(
                CIPHER_SUITES_VAR,
                format!(
                    "cipher suite {name:?} {why}; supported: {}",
                    supported.join(", ")
                ),
            ));
        };
        if !suites.contains(suite) {
            suites.push(*suite);
        }
    }
    if suites.is_empty() {
        return Ok(None);
    }
    if !suites
        .iter()
        .any(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
    {
        suites.extend(
            ring::DEFAULT_CIPHER_SUITES
                .iter()
                .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_))),
        );
    }
    Ok(Some(suites))
}

/// The named key-exchange groups (Go's `CurveID` names), in order of
/// preference; `None` for an empty list.
fn parse_curves(list: &str) -> Result<Option<Vec<&'static dyn SupportedKxGroup>>, TlsError> {
    let mut groups: Vec<&'static dyn SupportedKxGroup> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let group = match name {
            "X25519" => ring::kx_group::X25519,
            "CurveP256" => ring::kx_group::SECP256R1,
            "CurveP384" => ring::kx_group::SECP384R1,
            "CurveP521" | "X25519MLKEM768" => {
                return Err(setting_err(
                    CURVES_VAR,
                    format!(
                        "curve {name:?} is not supported by rustls; supported: X25519, CurveP256, CurveP384"
                    ),
                ));
            }
            _ => {
                return Err(setting_err(
                    CURVES_VAR,
                    format!("curve {name:?} is unknown; supported: X25519, CurveP256, CurveP384"),
                ));
            }
        };
        if !groups.iter().any(|g| g.name() == group.name()) {
            groups.push(group);
        }
    }
    Ok((!groups.is_empty()).then_some(groups))
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

    /// A server configuration using this store under `policy`, with ALPN
    /// `h2`, `http/1.1`.
    pub fn server_config(self, policy: &TlsPolicy) -> Result<rustls::ServerConfig, TlsError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(policy.provider()))
            .with_protocol_versions(&policy.versions)?
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CipherSuite;

    fn suites(p: &TlsPolicy) -> Vec<CipherSuite> {
        p.cipher_suites().iter().map(|s| s.suite()).collect()
    }

    fn err(min: &str, max: &str, suites: &str, curves: &str) -> String {
        TlsPolicy::parse(min, max, suites, curves)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn versions_take_go_names_and_numbers() {
        let p = TlsPolicy::parse("", "", "", "").unwrap();
        assert_eq!(p.versions().len(), 2);
        for (min, max, want) in [
            ("VersionTLS13", "", vec![&rustls::version::TLS13]),
            ("1.3", "", vec![&rustls::version::TLS13]),
            ("", "VersionTLS12", vec![&rustls::version::TLS12]),
            (
                "1.2",
                "1.3",
                vec![&rustls::version::TLS13, &rustls::version::TLS12],
            ),
        ] {
            let p = TlsPolicy::parse(min, max, "", "").unwrap();
            let got: Vec<_> = p.versions().iter().map(|v| v.version).collect();
            let want: Vec<_> = want.iter().map(|v| v.version).collect();
            assert_eq!(got, want, "{min:?} {max:?}");
        }
    }

    #[test]
    fn unsupported_versions_are_refused_naming_the_variable() {
        let e = err("VersionTLS11", "", "", "");
        assert!(e.starts_with("KEDA_HTTP_PROXY_TLS_MIN_VERSION:"), "{e}");
        assert!(e.contains("\"VersionTLS11\" is not supported"), "{e}");
        let e = err("", "TLS1.3", "", "");
        assert!(e.starts_with("KEDA_HTTP_PROXY_TLS_MAX_VERSION:"), "{e}");
        assert!(e.contains("unknown TLS version \"TLS1.3\""), "{e}");
        let e = err("1.3", "1.2", "", "");
        assert!(e.starts_with("KEDA_HTTP_PROXY_TLS_MIN_VERSION:"), "{e}");
        assert!(e.contains("KEDA_HTTP_PROXY_TLS_MAX_VERSION"), "{e}");
    }

    #[test]
    fn cipher_suites_map_go_names_and_keep_tls13_defaults_like_go() {
        // TLS 1.2 names only: TLS 1.3 keeps its default suites.
        let p = TlsPolicy::parse(
            "",
            "",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
            "",
        )
        .unwrap();
        assert_eq!(
            suites(&p),
            [
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                CipherSuite::TLS13_AES_256_GCM_SHA384,
                CipherSuite::TLS13_AES_128_GCM_SHA256,
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            ]
        );
        // A TLS 1.3 name restricts TLS 1.3 too.
        let p = TlsPolicy::parse(
            "",
            "",
            "TLS_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "",
        )
        .unwrap();
        assert_eq!(
            suites(&p),
            [
                CipherSuite::TLS13_AES_128_GCM_SHA256,
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            ]
        );
        assert_eq!(
            TlsPolicy::parse("", "", "", "")
                .unwrap()
                .cipher_suites()
                .len(),
            ring::DEFAULT_CIPHER_SUITES.len()
        );
    }

    #[test]
    fn unknown_or_unsupported_cipher_suites_are_refused_by_name() {
        let e = err(
            "",
            "",
            "TLS_AES_128_GCM_SHA256,TLS_RSA_WITH_AES_128_CBC_SHA",
            "",
        );
        assert!(e.starts_with("KEDA_HTTP_PROXY_TLS_CIPHER_SUITES:"), "{e}");
        assert!(
            e.contains("\"TLS_RSA_WITH_AES_128_CBC_SHA\" is not supported by rustls"),
            "{e}"
        );
        let e = err("", "", "TLS_MADE_UP", "");
        assert!(e.contains("\"TLS_MADE_UP\" is unknown"), "{e}");
    }

    #[test]
    fn curves_map_go_names_in_order() {
        let p = TlsPolicy::parse("", "", "", "CurveP384, X25519,CurveP256").unwrap();
        let names: Vec<_> = p.kx_groups().iter().map(|g| g.name()).collect();
        assert_eq!(
            names,
            [
                rustls::NamedGroup::secp384r1,
                rustls::NamedGroup::X25519,
                rustls::NamedGroup::secp256r1,
            ]
        );
        let e = err("", "", "", "X25519,CurveP521");
        assert!(
            e.starts_with("KEDA_HTTP_PROXY_TLS_CURVE_PREFERENCES:"),
            "{e}"
        );
        assert!(
            e.contains("\"CurveP521\" is not supported by rustls"),
            "{e}"
        );
        let e = err("", "", "", "P-256");
        assert!(e.contains("\"P-256\" is unknown"), "{e}");
    }
}
