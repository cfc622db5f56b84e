//! The Kubernetes client for a chosen [`Source`]: the one place a program
//! turns its source flags into a `kube::Client`.

use std::path::PathBuf;

use crate::source::Source;

/// Settings that apply only to a [`Source::Url`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlOptions {
    /// A file holding the bearer token (re-read every minute).
    pub token_file: Option<PathBuf>,
    /// PEM CA certificates for an `https` URL; default: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Skip TLS verification (testing only).
    pub insecure: bool,
}

/// Why no client could be built for a source.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL does not parse.
    #[error("{url} is not a URL")]
    Url {
        /// The URL as given.
        url: String,
        /// The parse error.
        source: http::uri::InvalidUri,
    },
    /// The CA file cannot be read.
    #[error("CA file {}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// The HTTP/2 client for the URL cannot be built.
    #[error("client for {url}")]
    Http2 {
        /// The URL.
        url: String,
        /// What is wrong.
        source: kubewatch::client::ClientError,
    },
    /// A kubeconfig file cannot be read or used.
    #[error("kubeconfig {}", path.display())]
    Kubeconfig {
        /// The file (the first one, for a merged list).
        path: PathBuf,
        /// What is wrong.
        source: ::kube::config::KubeconfigError,
    },
    /// Nothing named a kubeconfig and this is not a pod.
    #[error(
        "no Kubernetes configuration: no --kubeconfig, $KUBECONFIG or ~/.kube/config, and not running in a cluster"
    )]
    InCluster(#[source] ::kube::config::InClusterError),
    /// The client cannot be built from the configuration.
    #[error("Kubernetes client")]
    Client(#[source] ::kube::Error),
    /// A directory is not a Kubernetes source.
    #[error("{} is a directory of manifests, not a Kubernetes API", .0.display())]
    NotKubernetes(PathBuf),
}

/// Builds the client for `source`: an HTTP/2 client for a URL (one
/// connection, h2c for `http://`, ALPN h2 for `https://`), else kube's
/// client for the kubeconfig files (merged as kubectl does) or for the
/// in-cluster service account.
pub async fn client(source: &Source, url: &UrlOptions) -> Result<::kube::Client, ClientError> {
    let config = match source {
        Source::Url(u) => return url_client(u, url),
        Source::Directory(d) => return Err(ClientError::NotKubernetes(d.clone())),
        Source::Kubeconfig(paths) => kubeconfig(paths).await?,
        Source::InCluster => ::kube::Config::incluster().map_err(ClientError::InCluster)?,
    };
    ::kube::Client::try_from(config).map_err(ClientError::Client)
}

fn url_client(u: &str, options: &UrlOptions) -> Result<::kube::Client, ClientError> {
    let uri: http::Uri = u.parse().map_err(|source| ClientError::Url {
        url: u.to_owned(),
        source,
    })?;
    let mut config = kubewatch::client::CacheClientConfig::new(uri);
    config.token_file = options.token_file.clone();
    config.accept_invalid_certs = options.insecure;
    if let Some(path) = &options.ca_file {
        config.root_certs_pem =
            Some(std::fs::read(path).map_err(|source| ClientError::CaFile {
                path: path.clone(),
                source,
            })?);
    }
    kubewatch::client::cache_client(config).map_err(|source| ClientError::Http2 {
        url: u.to_owned(),
        source,
    })
}

async fn kubeconfig(paths: &[PathBuf]) -> Result<::kube::Config, ClientError> {
    let first = paths.first().cloned().unwrap_or_default();
    let mut merged = ::kube::config::Kubeconfig::default();
    for path in paths {
        let err = |source| ClientError::Kubeconfig {
            path: path.clone(),
            source,
        };
        let kc = ::kube::config::Kubeconfig::read_from(path).map_err(err)?;
        merged = merged.merge(kc).map_err(err)?;
    }
    ::kube::Config::from_custom_kubeconfig(merged, &Default::default())
        .await
        .map_err(|source| ClientError::Kubeconfig {
            path: first,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn error(source: &Source, url: &UrlOptions) -> ClientError {
        match client(source, url).await {
            Ok(_) => panic!("{source}: a client"),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn errors_name_what_is_wrong_and_keep_their_cause() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = error(
            &Source::Kubeconfig(vec![missing.clone()]),
            &UrlOptions::default(),
        )
        .await;
        assert_eq!(err.to_string(), format!("kubeconfig {}", missing.display()));
        assert!(std::error::Error::source(&err).is_some());

        let err = error(&Source::Url("http://a b".into()), &UrlOptions::default()).await;
        assert!(matches!(err, ClientError::Url { .. }), "{err:?}");
        assert!(std::error::Error::source(&err).is_some());

        let options = UrlOptions {
            ca_file: Some(missing.clone()),
            ..UrlOptions::default()
        };
        let err = error(&Source::Url("https://cache:9443".into()), &options).await;
        assert!(matches!(err, ClientError::CaFile { .. }), "{err:?}");

        let err = error(
            &Source::Directory(dir.path().into()),
            &UrlOptions::default(),
        )
        .await;
        assert!(matches!(err, ClientError::NotKubernetes(_)), "{err:?}");
    }

    #[tokio::test]
    async fn kubeconfig_lists_are_merged_first_file_first() {
        let dir = tempfile::tempdir().unwrap();
        let kc = |server: &str, context: Option<&str>| {
            let current = context
                .map(|c| format!("current-context: {c}\n"))
                .unwrap_or_default();
            format!(
                "apiVersion: v1\nkind: Config\n{current}clusters:\n- name: {server}\n  cluster:\n    server: http://{server}:1\ncontexts:\n- name: {server}\n  context:\n    cluster: {server}\n    user: u\nusers:\n- name: u\n  user: {{}}\n"
            )
        };
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, kc("first", None)).unwrap();
        std::fs::write(&b, kc("second", Some("second"))).unwrap();
        let config = kubeconfig(&[a, b]).await.unwrap();
        assert_eq!(config.cluster_url.host(), Some("second"));
    }
}
