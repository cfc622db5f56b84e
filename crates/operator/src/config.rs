//! The operator's flags and environment, with upstream's names.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use process::source::{Choice, Given, Names, SourceNames};

/// How the operator finds its API server, for [`process::source::resolve`].
pub const API: SourceNames = SourceNames {
    dir: None,
    url: Names {
        flag: "--api-url",
        env: "KEDA_HTTP_OPERATOR_API_URL",
    },
};

const ENV_HELP: &str = "\
Environment (upstream's names):
  KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE  the scaler's Service (required)
  KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_PORT     its gRPC port (default 8091)
    (the deprecated KEDAHTTP_OPERATOR_EXTERNAL_SCALER_SERVICE / _PORT are read
    when the new names are unset, with a warning)
  KEDA_HTTP_OPERATOR_NAMESPACE                the namespace the scaler runs in
                                              (default: this pod's, else keda)
  KEDA_HTTP_OPERATOR_WATCH_NAMESPACE          only this namespace (default: all)
  KEDA_HTTP_OPERATOR_LEADER_ELECTION_LEASE_DURATION  (default 15s)
  KEDA_HTTP_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE  (default 10s)
  KEDA_HTTP_OPERATOR_LEADER_ELECTION_RETRY_PERIOD    (default 2s)

The ScaledObject of each HTTPScaledObject points KEDA at
<service>.<namespace>:<port>. API server precedence: --api-url or --kubeconfig,
then $KEDA_HTTP_OPERATOR_API_URL, $KUBECONFIG, ~/.kube/config, in-cluster.";

/// Flags of `http-addon operator`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_long_help = ENV_HELP)]
pub struct OperatorArgs {
    /// Address of /metrics (`:8080` binds every interface; `0` turns it off).
    #[arg(long, default_value = ":8080")]
    pub metrics_bind_address: BindAddress,

    /// Address of the /healthz and /readyz probes (`0` turns it off).
    #[arg(long, default_value = ":8081")]
    pub health_probe_bind_address: BindAddress,

    /// Elect a leader through the Lease `http-add-on.keda.sh`, so that of
    /// several replicas only one writes; the manifests turn it on.
    #[arg(long)]
    pub leader_elect: bool,

    /// Kubeconfig of the API server (see the precedence below).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// URL of the API server, without a kubeconfig (testing, or a proxy).
    #[arg(long, value_name = "URL")]
    pub api_url: Option<String>,

    /// Bearer token file for --api-url (re-read every minute).
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
}

/// A listen address in Go's form: `:8080`, `0.0.0.0:8080`, `[::]:8080`;
/// `0` or empty turns the server off (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindAddress(pub Option<SocketAddr>);

impl std::str::FromStr for BindAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        bind_address(s).map(BindAddress)
    }
}

fn bind_address(s: &str) -> Result<Option<SocketAddr>, String> {
    match s {
        "" | "0" => Ok(None),
        s if s.starts_with(':') => s[1..]
            .parse::<u16>()
            .map(|p| Some(SocketAddr::from(([0, 0, 0, 0], p))))
            .map_err(|e| format!("{s}: {e}")),
        s => s
            .parse()
            .map(Some)
            .map_err(|e| format!("{s}: {e} (want host:port or :port)")),
    }
}

/// What the operator reads from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `<service>.<namespace>:<port>` of the external scaler.
    pub scaler_address: String,
    /// The add-on's namespace (the scaler's, and the leader Lease's).
    pub namespace: String,
    /// Only this namespace, if set.
    pub watch_namespace: Option<String>,
    /// Leader election timing.
    pub lease: LeaseTiming,
    /// Deprecated names in use (a warning each).
    pub deprecated: Vec<String>,
}

/// Leader election timing (client-go's semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a lease is valid after its last renewal.
    pub duration: Duration,
    /// The leader gives up if it could not renew for this long.
    pub renew_deadline: Duration,
    /// How often candidates try, and the leader renews.
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Why the environment is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    /// The scaler's Service is not named.
    #[error(
        "KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE is not set: name the external scaler's Service (e.g. keda-add-ons-http-external-scaler)"
    )]
    NoScalerService,
    /// A variable does not parse.
    #[error("{name}={value:?}: {message}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        message: String,
    },
}

impl Settings {
    /// Reads the settings through `env` (tests pass a map).
    pub fn from_env(env: impl Fn(&str) -> Option<OsString>) -> Result<Settings, SettingsError> {
        let var = |name: &str| {
            env(name)
                .map(|v| v.to_string_lossy().trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut deprecated = Vec::new();
        let mut pick = |new: &'static str, old: &'static str| match var(new) {
            Some(v) => Some(v),
            None => var(old).inspect(|_| deprecated.push(format!("{old} (use {new})"))),
        };
        let service = pick(
            "KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE",
            "KEDAHTTP_OPERATOR_EXTERNAL_SCALER_SERVICE",
        )
        .ok_or(SettingsError::NoScalerService)?;
        let port = match pick(
            "KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_PORT",
            "KEDAHTTP_OPERATOR_EXTERNAL_SCALER_PORT",
        ) {
            None => 8091,
            Some(p) => p.parse::<u16>().map_err(|e| SettingsError::Invalid {
                name: "KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_PORT",
                value: p.clone(),
                message: e.to_string(),
            })?,
        };
        let namespace = var("KEDA_HTTP_OPERATOR_NAMESPACE")
            .or_else(pod_namespace)
            .unwrap_or_else(|| "keda".to_string());
        let duration = |name: &'static str, default: Duration| match var(name) {
            None => Ok(default),
            Some(v) => process::parse_duration(&v).map_err(|e| SettingsError::Invalid {
                name,
                value: v.clone(),
                message: e.to_string(),
            }),
        };
        let d = LeaseTiming::default();
        let lease = LeaseTiming {
            duration: duration(
                "KEDA_HTTP_OPERATOR_LEADER_ELECTION_LEASE_DURATION",
                d.duration,
            )?,
            renew_deadline: duration(
                "KEDA_HTTP_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE",
                d.renew_deadline,
            )?,
            retry_period: duration(
                "KEDA_HTTP_OPERATOR_LEADER_ELECTION_RETRY_PERIOD",
                d.retry_period,
            )?,
        };
        if lease.renew_deadline >= lease.duration || lease.retry_period >= lease.renew_deadline {
            return Err(SettingsError::Invalid {
                name: "KEDA_HTTP_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE",
                value: format!("{:?}", lease.renew_deadline),
                message: format!(
                    "need retry period ({:?}) < renew deadline < lease duration ({:?})",
                    lease.retry_period, lease.duration
                ),
            });
        }
        Ok(Settings {
            scaler_address: format!("{service}.{namespace}:{port}"),
            namespace,
            watch_namespace: var("KEDA_HTTP_OPERATOR_WATCH_NAMESPACE"),
            lease,
            deprecated,
        })
    }
}

/// The namespace of this pod, from its service account.
fn pod_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

impl OperatorArgs {
    /// Chooses the API server ([`process::source::resolve`]).
    pub fn api_source(
        &self,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Choice, process::source::ResolveError> {
        let given = Given {
            dir: None,
            url: self.api_url.clone(),
            kubeconfig: self.kubeconfig.clone(),
            url_option: self.api_token_file.as_ref().map(|_| "--api-token-file"),
        };
        process::source::resolve(&API, given, env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.into())
    }

    #[test]
    fn the_scaler_address_and_defaults() {
        let s = Settings::from_env(env(&[
            ("KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE", "scaler"),
            ("KEDA_HTTP_OPERATOR_NAMESPACE", "keda"),
        ]))
        .unwrap();
        assert_eq!(s.scaler_address, "scaler.keda:8091");
        assert_eq!(s.lease, LeaseTiming::default());
        assert!(s.deprecated.is_empty());
        assert_eq!(
            Settings::from_env(env(&[])),
            Err(SettingsError::NoScalerService)
        );
    }

    #[test]
    fn deprecated_names_only_when_the_new_ones_are_unset() {
        let s = Settings::from_env(env(&[
            ("KEDAHTTP_OPERATOR_EXTERNAL_SCALER_SERVICE", "old"),
            ("KEDAHTTP_OPERATOR_EXTERNAL_SCALER_PORT", "9090"),
            ("KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_PORT", "9091"),
            ("KEDA_HTTP_OPERATOR_NAMESPACE", "ns"),
        ]))
        .unwrap();
        assert_eq!(s.scaler_address, "old.ns:9091");
        assert_eq!(
            s.deprecated,
            [
                "KEDAHTTP_OPERATOR_EXTERNAL_SCALER_SERVICE (use KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE)"
            ]
        );
    }

    #[test]
    fn lease_timing_is_go_durations_and_consistent() {
        let s = Settings::from_env(env(&[
            ("KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE", "s"),
            ("KEDA_HTTP_OPERATOR_LEADER_ELECTION_LEASE_DURATION", "1m30s"),
        ]))
        .unwrap();
        assert_eq!(s.lease.duration, Duration::from_secs(90));
        let err = Settings::from_env(env(&[
            ("KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE", "s"),
            ("KEDA_HTTP_OPERATOR_LEADER_ELECTION_LEASE_DURATION", "5s"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("renew deadline"), "{err}");
        assert!(
            Settings::from_env(env(&[
                ("KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE", "s"),
                ("KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_PORT", "x"),
            ]))
            .is_err()
        );
    }

    #[test]
    fn bind_addresses_in_go_form() {
        assert_eq!(
            bind_address(":8080").unwrap(),
            Some(SocketAddr::from(([0, 0, 0, 0], 8080)))
        );
        assert_eq!(bind_address("0").unwrap(), None);
        assert_eq!(
            bind_address("127.0.0.1:9").unwrap(),
            Some(SocketAddr::from(([127, 0, 0, 1], 9)))
        );
        assert!(bind_address("nope").is_err());
    }
}
