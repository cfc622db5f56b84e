//! Turns the source flags into a [`sync::Source`], choosing among them in
//! the order of [`SOURCE_PRECEDENCE`](crate::config::SOURCE_PRECEDENCE).

use std::ffi::OsString;
use std::path::PathBuf;

use process::source::{Choice, Given, Names, Source, SourceNames};

use crate::config::SourceArgs;

/// The interceptor's source flags and variables.
const SOURCES: SourceNames = SourceNames {
    dir: Some(Names {
        flag: "--routes-dir",
        env: "KEDA_HTTP_ROUTES_DIR",
    }),
    url: Names {
        flag: "--source-url",
        env: "KEDA_HTTP_SOURCE_URL",
    },
};

/// Why the routing source could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The flags and variables name no single source.
    #[error("routing source")]
    Choose(#[from] process::source::ResolveError),
    /// The routes directory does not exist.
    #[error("routes directory {0}: not a directory")]
    NoDir(PathBuf),
    /// The Kubernetes client could not be built.
    #[error("routing source (pass --routes-dir DIR to run without a cluster)")]
    Client(#[from] process::kube::ClientError),
}

impl SourceArgs {
    /// Chooses the source: the command line, then `KEDA_HTTP_ROUTES_DIR` /
    /// `KEDA_HTTP_SOURCE_URL`, then `KUBECONFIG`, `~/.kube/config`,
    /// in-cluster. `env` looks up variables
    /// ([`process::source::process_env`] for the real environment).
    pub fn choose(&self, env: impl Fn(&str) -> Option<OsString>) -> Result<Choice, SourceError> {
        let url_option = if self.source_token_file.is_some() {
            Some("--source-token-file")
        } else if self.source_insecure {
            Some("--source-insecure")
        } else {
            None
        };
        let given = Given {
            dir: self.routes_dir.clone(),
            url: self.source_url.clone(),
            kubeconfig: self.kubeconfig.clone(),
            url_option,
        };
        Ok(process::source::resolve(&SOURCES, given, env)?)
    }

    /// Builds the source these flags and the process environment describe.
    pub async fn build(&self) -> Result<sync::Source, SourceError> {
        let choice = self.choose(process::source::process_env)?;
        tracing::info!(source = %choice.source, from = %choice.origin, "routing source chosen");
        if let Source::Directory(dir) = choice.source {
            if !dir.is_dir() {
                return Err(SourceError::NoDir(dir));
            }
            return Ok(sync::Source::Directory(dir));
        }
        // A cache by URL gets one HTTP/2 connection, so an idle resync's
        // repeated headers cost a few bytes (HPACK) instead of hundreds.
        let options = process::kube::UrlOptions {
            token_file: self.source_token_file.clone(),
            ca_file: None,
            insecure: self.source_insecure,
        };
        let client = process::kube::client(&choice.source, &options).await?;
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use process::source::Origin;

    use super::*;

    use crate::config::test_cli::{Cli, try_parse as parse};

    /// The choice for `argv` in an environment of exactly `vars`.
    fn choose(argv: &[&str], vars: &[(&str, &str)]) -> Result<Choice, SourceError> {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        parse(argv)
            .unwrap()
            .source
            .choose(|k| map.get(k).map(OsString::from))
    }

    /// What a laptop or CI runner usually has, plus a deployment's variables.
    const CROWDED: &[(&str, &str)] = &[
        ("KUBECONFIG", "/env/kubeconfig"),
        ("KEDA_HTTP_SOURCE_URL", "http://env-cache:9443"),
    ];

    #[test]
    fn step_1_the_command_line_wins() {
        let c = choose(&["--source-url", "http://flag-cache:9443"], CROWDED).unwrap();
        assert_eq!(c.source, Source::Url("http://flag-cache:9443".into()));
        assert_eq!(c.origin, Origin::Flag("--source-url"));

        let c = choose(&["--routes-dir", "/flag/routes"], CROWDED).unwrap();
        assert_eq!(c.source, Source::Directory("/flag/routes".into()));
        assert_eq!(c.origin, Origin::Flag("--routes-dir"));

        let c = choose(&["--kubeconfig", "/flag/kubeconfig"], CROWDED).unwrap();
        assert_eq!(
            c.source,
            Source::Kubeconfig(vec!["/flag/kubeconfig".into()])
        );
        assert_eq!(c.origin, Origin::Flag("--kubeconfig"));
    }

    #[test]
    fn step_1_two_source_flags_are_a_usage_error() {
        for argv in [
            ["--source-url", "http://u", "--kubeconfig", "/k"],
            ["--routes-dir", "/d", "--kubeconfig", "/k"],
            ["--routes-dir", "/d", "--source-url", "http://u"],
        ] {
            let err = parse(&argv).expect_err("a usage error");
            assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        }
    }

    #[test]
    fn step_2_keda_variables_beat_kubeconfig() {
        let c = choose(&[], CROWDED).unwrap();
        assert_eq!(c.source, Source::Url("http://env-cache:9443".into()));
        assert_eq!(c.origin, Origin::Env("KEDA_HTTP_SOURCE_URL"));

        let vars = [
            ("KUBECONFIG", "/env/kubeconfig"),
            ("KEDA_HTTP_ROUTES_DIR", "/env/routes"),
        ];
        let c = choose(&[], &vars).unwrap();
        assert_eq!(c.source, Source::Directory("/env/routes".into()));

        let vars = [
            ("KEDA_HTTP_ROUTES_DIR", "/env/routes"),
            ("KEDA_HTTP_SOURCE_URL", "http://env-cache:9443"),
        ];
        let err = choose(&[], &vars).unwrap_err();
        assert!(
            matches!(
                err,
                SourceError::Choose(process::source::ResolveError::Conflict { .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn steps_3_to_5_kubeconfig_home_file_in_cluster() {
        let home = tempfile::tempdir().unwrap();
        let home_path = home.path().to_str().unwrap();
        let c = choose(
            &[],
            &[("KUBECONFIG", "/env/kubeconfig"), ("HOME", home_path)],
        )
        .unwrap();
        assert_eq!(c.origin, Origin::Env("KUBECONFIG"));

        let c = choose(&[], &[("HOME", home_path)]).unwrap();
        assert_eq!(c.source, Source::InCluster);

        std::fs::create_dir(home.path().join(".kube")).unwrap();
        std::fs::write(home.path().join(".kube").join("config"), "").unwrap();
        let c = choose(&[], &[("HOME", home_path)]).unwrap();
        assert_eq!(c.origin, Origin::DefaultKubeconfig);
    }

    #[test]
    fn a_token_file_needs_a_source_url_somewhere() {
        let err = choose(&["--source-token-file", "/t"], &[]).unwrap_err();
        assert_eq!(
            std::error::Error::source(&err).unwrap().to_string(),
            "--source-token-file needs --source-url (or $KEDA_HTTP_SOURCE_URL)"
        );
        let c = choose(&["--source-token-file", "/t"], CROWDED).unwrap();
        assert_eq!(c.origin, Origin::Env("KEDA_HTTP_SOURCE_URL"));
    }

    #[test]
    fn help_documents_the_precedence() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Source precedence"), "{help}");
        for name in ["KEDA_HTTP_ROUTES_DIR", "KEDA_HTTP_SOURCE_URL", "KUBECONFIG"] {
            assert!(help.contains(name), "{name} missing in\n{help}");
        }
    }
}
