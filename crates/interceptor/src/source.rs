//! Turns the source flags into a [`sync::Source`].

use std::path::PathBuf;

use crate::config::SourceArgs;

/// Why the routing source could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The kubeconfig could not be read.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// No configuration could be inferred.
    #[error(
        "no Kubernetes configuration found ({0}); pass --routes-dir DIR to run without a cluster"
    )]
    Infer(String),
    /// --source-url is not a URL.
    #[error("--source-url {url}: {message}")]
    Url {
        /// The flag's value.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The routes directory does not exist.
    #[error("--routes-dir {0}: not a directory")]
    NoDir(PathBuf),
    /// The client could not be built.
    #[error("kubernetes client: {0}")]
    Client(String),
}

impl SourceArgs {
    /// Builds the source these flags describe.
    pub async fn build(&self) -> Result<sync::Source, SourceError> {
        if let Some(dir) = &self.routes_dir {
            if !dir.is_dir() {
                return Err(SourceError::NoDir(dir.clone()));
            }
            return Ok(sync::Source::Directory(dir.clone()));
        }
        if let Some(url) = &self.source_url {
            // A cache by URL: one HTTP/2 connection, so an idle resync's
            // repeated headers cost a few bytes (HPACK) instead of hundreds.
            let uri: http::Uri =
                url.parse()
                    .map_err(|e: http::uri::InvalidUri| SourceError::Url {
                        url: url.clone(),
                        message: e.to_string(),
                    })?;
            let mut config = sync::client::CacheClientConfig::new(uri);
            config.token_file = self.source_token_file.clone();
            config.accept_invalid_certs = self.source_insecure;
            let client = sync::client::cache_client(config)
                .map_err(|e| SourceError::Client(e.to_string()))?;
            return Ok(sync::Source::Kubernetes(client));
        }
        let config = if let Some(path) = &self.kubeconfig {
            let kc =
                kube::config::Kubeconfig::read_from(path).map_err(|e| SourceError::Kubeconfig {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| SourceError::Kubeconfig {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?
        } else {
            kube::Config::infer()
                .await
                .map_err(|e| SourceError::Infer(e.to_string()))?
        };
        let client =
            kube::Client::try_from(config).map_err(|e| SourceError::Client(e.to_string()))?;
        Ok(sync::Source::Kubernetes(client))
    }

    /// The sync settings these flags describe.
    pub fn sync_config(&self) -> sync::SyncConfig {
        sync::SyncConfig {
            resync_interval: self.resync_interval,
            watch_timeout: self.watch_timeout,
            namespace: (!self.watch_namespace.is_empty()).then(|| self.watch_namespace.clone()),
            ..sync::SyncConfig::default()
        }
    }
}
