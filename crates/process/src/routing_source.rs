//! The routing-source flags of the programs that keep a routing table
//! (the interceptor and the scaler), defined once: `--routes-dir`,
//! `--source-url`, `--kubeconfig` and their variables, chosen in the order
//! of [`SOURCE_PRECEDENCE`] ([`crate::source::resolve`]), and the
//! [`sync::Source`] and [`sync::SyncConfig`] they describe.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::parse_duration as duration;
use crate::source::{Choice, Given, Source};

/// How a program picks its routing source (its long help shows it).
pub const SOURCE_PRECEDENCE: &str = "\
Source precedence (the first that names one wins):
  1. --routes-dir, --source-url or --kubeconfig on the command line (one of them)
  2. $KEDA_HTTP_ROUTES_DIR or $KEDA_HTTP_SOURCE_URL (one of them)
  3. $KUBECONFIG
  4. ~/.kube/config, if it exists
  5. the in-cluster service account
So an exported KUBECONFIG does not get in the way of --source-url, and a
flag overrides a deployment's variable.";

/// Where the routing table comes from, and how often it is resynced.
///
/// The three source flags take no clap `env`: their variables are read by
/// [`SourceArgs::choose`], below the command line (see [`SOURCE_PRECEDENCE`]).
#[derive(Args, Debug, Clone)]
pub struct SourceArgs {
    /// Read routes from this directory of manifests (HTTPScaledObjects,
    /// InterceptorRoutes, Services, EndpointSlices) instead of Kubernetes.
    /// Also $KEDA_HTTP_ROUTES_DIR, which the command line overrides.
    #[arg(long, value_name = "DIR")]
    pub routes_dir: Option<PathBuf>,

    /// Kubeconfig file to reach the API server (or a cache tier). Without
    /// it and without a routes directory or source URL: $KUBECONFIG,
    /// ~/.kube/config, then the in-cluster service account.
    #[arg(long, value_name = "FILE", conflicts_with = "routes_dir")]
    pub kubeconfig: Option<PathBuf>,

    /// URL of a Kubernetes-compatible list/watch server, e.g. a cache tier
    /// (`https://keda-http-cache:9443`). Also $KEDA_HTTP_SOURCE_URL, which
    /// the command line overrides.
    #[arg(long, value_name = "URL", conflicts_with_all = ["routes_dir", "kubeconfig"])]
    pub source_url: Option<String>,

    /// File holding the bearer token for the source URL.
    #[arg(long, env = "KEDA_HTTP_SOURCE_TOKEN_FILE", value_name = "FILE")]
    pub source_token_file: Option<PathBuf>,

    /// Skip TLS verification of the source URL (testing only).
    #[arg(long, env = "KEDA_HTTP_SOURCE_INSECURE")]
    pub source_insecure: bool,

    /// Only watch this namespace (empty: all namespaces).
    #[arg(
        long,
        env = "KEDA_HTTP_WATCH_NAMESPACE",
        value_name = "NAMESPACE",
        default_value = ""
    )]
    pub watch_namespace: String,

    /// How often the whole routing table is listed and compared with the
    /// in-memory copy, so a lost watch event is repaired within this bound.
    #[arg(long, env = "KEDA_HTTP_RESYNC_INTERVAL", value_parser = duration, default_value = "1s")]
    pub resync_interval: Duration,

    /// Server-side timeout of each watch request; a watch silent for this
    /// plus 5 s is treated as stalled and restarted.
    #[arg(long, env = "KEDA_HTTP_WATCH_TIMEOUT", value_parser = duration, default_value = "30s")]
    pub watch_timeout: Duration,
}

/// Why a program that keeps a routing table (interceptor, scaler) could not
/// start: its source, or one of its ports.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The routing source could not be set up.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A port could not be bound.
    #[error(transparent)]
    Bind(#[from] crate::http::BindError),
}

/// Why the routing source could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The flags and variables name no single source.
    #[error("routing source")]
    Choose(#[from] crate::source::ResolveError),
    /// The routes directory does not exist.
    #[error("routes directory {0}: not a directory")]
    NoDir(PathBuf),
    /// The Kubernetes client could not be built.
    #[error("routing source (pass --routes-dir DIR to run without a cluster)")]
    Client(#[from] crate::kube::ClientError),
}

impl SourceArgs {
    /// Chooses the source: the command line, then `KEDA_HTTP_ROUTES_DIR` /
    /// `KEDA_HTTP_SOURCE_URL`, then `KUBECONFIG`, `~/.kube/config`,
    /// in-cluster. `env` looks up variables
    /// ([`crate::source::process_env`] for the real environment).
    pub fn choose(&self, env: impl Fn(&str) -> Option<OsString>) -> Result<Choice, SourceError> {
        let url_option = [
            (self.source_token_file.is_some(), "--source-token-file"),
            (self.source_insecure, "--source-insecure"),
        ]
        .into_iter()
        .find_map(|(set, flag)| set.then_some(flag));
        let given = Given {
            dir: self.routes_dir.clone(),
            url: self.source_url.clone(),
            kubeconfig: self.kubeconfig.clone(),
            url_option,
        };
        Ok(crate::source::resolve(
            &crate::source::ROUTING_SOURCES,
            given,
            env,
        )?)
    }

    /// Builds the source these flags and the process environment describe.
    pub async fn build(&self) -> Result<sync::Source, SourceError> {
        let choice = self.choose(crate::source::process_env)?;
        tracing::info!(source = %choice.source, from = %choice.origin, "routing source chosen");
        if let Source::Directory(dir) = choice.source {
            if !dir.is_dir() {
                return Err(SourceError::NoDir(dir));
            }
            return Ok(sync::Source::Directory(dir));
        }
        // A cache by URL gets one HTTP/2 connection, so an idle resync's
        // repeated headers cost a few bytes (HPACK) instead of hundreds.
        let options = crate::kube::UrlOptions {
            token_file: self.source_token_file.clone(),
            ca_file: None,
            insecure: self.source_insecure,
        };
        let client = crate::kube::client(&choice.source, &options).await?;
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

    use crate::source::Origin;

    use super::*;

    /// A program with exactly these flags.
    #[derive(clap::Parser, Debug)]
    #[command(after_long_help = SOURCE_PRECEDENCE)]
    struct Cli {
        #[command(flatten)]
        source: SourceArgs,
    }

    fn parse(argv: &[&str]) -> Result<Cli, clap::Error> {
        <Cli as clap::Parser>::try_parse_from(
            std::iter::once("program").chain(argv.iter().copied()),
        )
    }

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
    fn every_flag_and_variable_reaches_the_resolver() {
        let url = |u: &str| Source::Url(u.into());
        let cases = [
            (
                &["--source-url", "http://flag:1"][..],
                CROWDED,
                url("http://flag:1"),
                Origin::Flag("--source-url"),
            ),
            (
                &["--routes-dir", "/d"],
                CROWDED,
                Source::Directory("/d".into()),
                Origin::Flag("--routes-dir"),
            ),
            (
                &["--kubeconfig", "/k"],
                CROWDED,
                Source::Kubeconfig(vec!["/k".into()]),
                Origin::Flag("--kubeconfig"),
            ),
            (
                &[],
                CROWDED,
                url("http://env-cache:9443"),
                Origin::Env("KEDA_HTTP_SOURCE_URL"),
            ),
            (
                &[],
                &[("KUBECONFIG", "/k"), ("KEDA_HTTP_ROUTES_DIR", "/d")],
                Source::Directory("/d".into()),
                Origin::Env("KEDA_HTTP_ROUTES_DIR"),
            ),
        ];
        for (argv, vars, source, origin) in cases {
            let c = choose(argv, vars).unwrap();
            assert_eq!((c.source, c.origin), (source, origin), "{argv:?} {vars:?}");
        }
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
    fn step_2_both_keda_variables_are_a_conflict() {
        let vars = [
            ("KEDA_HTTP_ROUTES_DIR", "/env/routes"),
            ("KEDA_HTTP_SOURCE_URL", "http://env-cache:9443"),
        ];
        let err = choose(&[], &vars).unwrap_err();
        assert!(
            matches!(
                err,
                SourceError::Choose(crate::source::ResolveError::Conflict { .. })
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
