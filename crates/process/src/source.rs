//! Which source a program reads, chosen in one order for every program.
//!
//! A program reads Kubernetes-style objects from one source: a directory of
//! manifests (the interceptor's `--routes-dir`), a URL speaking the
//! list/watch protocol (`--source-url`, the cache's `--upstream-url`), or a
//! Kubernetes API server found through a kubeconfig or the in-cluster
//! service account. An explicit choice beats an ambient one, so [`resolve`]
//! takes the first step that names a source:
//!
//! 1. the command line: the directory, URL or `--kubeconfig` flag (two of
//!    them is an error);
//! 2. the program's `KEDA_HTTP_*` variables for the directory and the URL
//!    (both set is an error);
//! 3. `KUBECONFIG` (a list of files, merged as kubectl does);
//! 4. `~/.kube/config`, if it exists;
//! 5. the in-cluster service account.
//!
//! So `KUBECONFIG` exported in a shell does not stop `--source-url` from
//! working, and a deployment's `KEDA_HTTP_SOURCE_URL` can be overridden on
//! the command line. The source flags therefore take no clap `env`: clap
//! would apply its conflicts to environment values too. [`resolve`] reads
//! the environment through a function passed in, so tests pass a map.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

/// The variable naming kubeconfig files (`:`-separated on Unix).
pub const KUBECONFIG: &str = "KUBECONFIG";

/// The flag naming a kubeconfig file.
pub const KUBECONFIG_FLAG: &str = "--kubeconfig";

/// Where a program reads its objects from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A directory of manifests.
    Directory(PathBuf),
    /// A server speaking the Kubernetes list/watch protocol (a cache).
    Url(String),
    /// An API server described by these kubeconfig files (merged in order).
    Kubeconfig(Vec<PathBuf>),
    /// The API server of the cluster this process runs in.
    InCluster,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Directory(d) => write!(f, "directory {}", d.display()),
            Source::Url(u) => write!(f, "{u}"),
            Source::Kubeconfig(paths) => {
                f.write_str("kubeconfig ")?;
                for (i, p) in paths.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}", p.display())?;
                }
                Ok(())
            }
            Source::InCluster => f.write_str("in-cluster API server"),
        }
    }
}

/// Which precedence step chose a [`Source`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A flag given on the command line.
    Flag(&'static str),
    /// An environment variable (a `KEDA_HTTP_*` one, or `KUBECONFIG`).
    Env(&'static str),
    /// `~/.kube/config`.
    DefaultKubeconfig,
    /// Nothing else named a source.
    InCluster,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "{flag} on the command line"),
            Origin::Env(var) => write!(f, "${var}"),
            Origin::DefaultKubeconfig => f.write_str("~/.kube/config"),
            Origin::InCluster => f.write_str("no flag, variable or kubeconfig file"),
        }
    }
}

/// A chosen source, and the step that chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The source.
    pub source: Source,
    /// Why it was chosen.
    pub origin: Origin,
}

/// A flag and the variable that stands for it when the flag is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Names {
    /// The flag, e.g. `--source-url`.
    pub flag: &'static str,
    /// The variable, e.g. `KEDA_HTTP_SOURCE_URL`.
    pub env: &'static str,
}

/// A program's source flags and variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceNames {
    /// The directory source, if the program has one.
    pub dir: Option<Names>,
    /// The URL source.
    pub url: Names,
}

/// The source flags and variables of the programs that keep a routing
/// table (interceptor, scaler).
pub const ROUTING_SOURCES: SourceNames = SourceNames {
    dir: Some(Names {
        flag: "--routes-dir",
        env: "KEDA_HTTP_ROUTES_DIR",
    }),
    url: Names {
        flag: "--source-url",
        env: "KEDA_HTTP_SOURCE_URL",
    },
};

/// What the command line says (flag values only, never the environment),
/// plus whether an option that only applies to a URL source is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Given {
    /// The directory flag's value.
    pub dir: Option<PathBuf>,
    /// The URL flag's value.
    pub url: Option<String>,
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// The name of a set option that only applies to a URL source (e.g.
    /// `--source-token-file`, from its flag or its variable): an error
    /// when no URL is given at all, ignored when a URL is given but a
    /// higher step chose another source.
    pub url_option: Option<&'static str>,
}

/// Why no source could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Two sources on the same step.
    #[error("{first} and {second} name two sources; give one")]
    Conflict {
        /// The first (a flag, or `$VARIABLE`).
        first: String,
        /// The second.
        second: String,
    },
    /// A variable that is not UTF-8 where text is needed.
    #[error("${var} is not valid UTF-8")]
    NotUnicode {
        /// The variable.
        var: &'static str,
    },
    /// A URL option without any URL.
    #[error("{option} needs {} (or ${})", url.flag, url.env)]
    UrlOptionWithoutUrl {
        /// The option given.
        option: &'static str,
        /// The URL flag and variable.
        url: Names,
    },
}

/// The process environment, for [`resolve`].
pub fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// Chooses the source in the order of the [module docs](self): the command
/// line, the `KEDA_HTTP_*` variables, `KUBECONFIG`, `~/.kube/config`,
/// in-cluster. `env` looks up a variable ([`process_env`] in programs);
/// an empty variable counts as unset.
///
/// ```
/// use process::source::{resolve, Given, Names, Origin, Source, SourceNames};
/// let names = SourceNames {
///     dir: None,
///     url: Names { flag: "--source-url", env: "KEDA_HTTP_SOURCE_URL" },
/// };
/// let given = Given { url: Some("http://cache:9443".into()), ..Given::default() };
/// // KUBECONFIG is set, and the flag still wins.
/// let env = |k: &str| (k == "KUBECONFIG").then(|| "/home/me/.kube/config".into());
/// let choice = resolve(&names, given, env).unwrap();
/// assert_eq!(choice.source, Source::Url("http://cache:9443".into()));
/// assert_eq!(choice.origin, Origin::Flag("--source-url"));
/// ```
pub fn resolve(
    names: &SourceNames,
    given: Given,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Choice, ResolveError> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());

    // 1. The command line.
    let mut explicit = Vec::new();
    if let (Some(d), Some(n)) = (given.dir, names.dir) {
        explicit.push((Source::Directory(d), n.flag));
    }
    if let Some(u) = given.url.clone() {
        explicit.push((Source::Url(u), names.url.flag));
    }
    if let Some(k) = given.kubeconfig {
        explicit.push((Source::Kubeconfig(vec![k]), KUBECONFIG_FLAG));
    }
    if let [(_, first), (_, second), ..] = explicit.as_slice() {
        return Err(ResolveError::Conflict {
            first: first.to_string(),
            second: second.to_string(),
        });
    }

    // 2. The program's variables.
    let env_dir = names
        .dir
        .and_then(|n| var(n.env).map(|v| (Source::Directory(PathBuf::from(v)), n.env)));
    let env_url = match var(names.url.env) {
        Some(v) => {
            let url = v
                .into_string()
                .map_err(|_| ResolveError::NotUnicode { var: names.url.env })?;
            Some((Source::Url(url), names.url.env))
        }
        None => None,
    };
    if let Some(option) = given.url_option
        && given.url.is_none()
        && env_url.is_none()
    {
        return Err(ResolveError::UrlOptionWithoutUrl {
            option,
            url: names.url,
        });
    }
    if let Some((source, flag)) = explicit.pop() {
        return Ok(Choice {
            source,
            origin: Origin::Flag(flag),
        });
    }
    match (env_dir, env_url) {
        (Some((_, a)), Some((_, b))) => {
            return Err(ResolveError::Conflict {
                first: format!("${a}"),
                second: format!("${b}"),
            });
        }
        (Some((source, var)), None) | (None, Some((source, var))) => {
            return Ok(Choice {
                source,
                origin: Origin::Env(var),
            });
        }
        (None, None) => {}
    }

    // 3. KUBECONFIG.
    if let Some(list) = var(KUBECONFIG) {
        let paths: Vec<PathBuf> = std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !paths.is_empty() {
            return Ok(Choice {
                source: Source::Kubeconfig(paths),
                origin: Origin::Env(KUBECONFIG),
            });
        }
    }

    // 4. ~/.kube/config.
    if let Some(home) = var("HOME").or_else(|| var("USERPROFILE")) {
        let path = PathBuf::from(home).join(".kube").join("config");
        if path.is_file() {
            return Ok(Choice {
                source: Source::Kubeconfig(vec![path]),
                origin: Origin::DefaultKubeconfig,
            });
        }
    }

    // 5. In-cluster.
    Ok(Choice {
        source: Source::InCluster,
        origin: Origin::InCluster,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const NAMES: SourceNames = ROUTING_SOURCES;

    /// An environment of `vars`; HOME points at an empty directory unless set.
    fn env_of<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        move |k| map.get(k).map(OsString::from)
    }

    fn given(dir: Option<&str>, url: Option<&str>, kubeconfig: Option<&str>) -> Given {
        Given {
            dir: dir.map(PathBuf::from),
            url: url.map(String::from),
            kubeconfig: kubeconfig.map(PathBuf::from),
            url_option: None,
        }
    }

    fn choose(given: Given, vars: &[(&str, &str)]) -> Result<Choice, ResolveError> {
        resolve(&NAMES, given, env_of(vars))
    }

    #[test]
    fn step_1_a_flag_beats_every_variable() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".kube")).unwrap();
        std::fs::write(home.path().join(".kube/config"), "{}").unwrap();
        // Every later step would name a source too.
        let vars = [
            ("KEDA_HTTP_SOURCE_URL", "http://env-cache"),
            ("KUBECONFIG", "/env/kubeconfig"),
            ("HOME", home.path().to_str().unwrap()),
        ];

        let c = choose(given(None, Some("http://flag-cache"), None), &vars).unwrap();
        assert_eq!(c.source, Source::Url("http://flag-cache".into()));
        assert_eq!(c.origin, Origin::Flag("--source-url"));

        let c = choose(given(Some("/flag/routes"), None, None), &vars).unwrap();
        assert_eq!(c.source, Source::Directory("/flag/routes".into()));
        assert_eq!(c.origin, Origin::Flag("--routes-dir"));

        let c = choose(given(None, None, Some("/flag/kubeconfig")), &vars).unwrap();
        assert_eq!(
            c.source,
            Source::Kubeconfig(vec!["/flag/kubeconfig".into()])
        );
        assert_eq!(c.origin, Origin::Flag("--kubeconfig"));
    }

    #[test]
    fn step_1_two_flags_are_an_error() {
        for g in [
            given(Some("/d"), Some("http://u"), None),
            given(Some("/d"), None, Some("/k")),
            given(None, Some("http://u"), Some("/k")),
        ] {
            let err = choose(g.clone(), &[]).unwrap_err();
            assert!(
                matches!(err, ResolveError::Conflict { .. }),
                "{g:?}: {err:?}"
            );
        }
        let err = choose(given(None, Some("http://u"), Some("/k")), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--source-url and --kubeconfig name two sources; give one"
        );
    }

    #[test]
    fn step_2_keda_variables_beat_kubeconfig() {
        let cases = [
            (
                "KEDA_HTTP_SOURCE_URL",
                "http://env-cache",
                Source::Url("http://env-cache".into()),
            ),
            (
                "KEDA_HTTP_ROUTES_DIR",
                "/env/routes",
                Source::Directory("/env/routes".into()),
            ),
        ];
        for (var, value, source) in cases {
            let vars = [(var, value), ("KUBECONFIG", "/env/kubeconfig")];
            let c = choose(Given::default(), &vars).unwrap();
            assert_eq!((c.source, c.origin), (source, Origin::Env(var)));
        }

        // Both variables: as ambiguous as both flags.
        let vars = [
            ("KEDA_HTTP_ROUTES_DIR", "/env/routes"),
            ("KEDA_HTTP_SOURCE_URL", "http://env-cache"),
        ];
        let err = choose(Given::default(), &vars).unwrap_err();
        assert_eq!(
            err.to_string(),
            "$KEDA_HTTP_ROUTES_DIR and $KEDA_HTTP_SOURCE_URL name two sources; give one"
        );
        // ... unless a flag decides.
        let c = choose(given(None, None, Some("/k")), &vars).unwrap();
        assert_eq!(c.origin, Origin::Flag("--kubeconfig"));

        // An empty variable is unset.
        let vars = [("KEDA_HTTP_SOURCE_URL", ""), ("KUBECONFIG", "/k")];
        let c = choose(Given::default(), &vars).unwrap();
        assert_eq!(c.origin, Origin::Env("KUBECONFIG"));
    }

    #[test]
    fn step_2_a_program_without_a_directory_source_ignores_its_variable() {
        let names = SourceNames { dir: None, ..NAMES };
        let vars = [
            ("KEDA_HTTP_ROUTES_DIR", "/env/routes"),
            ("KUBECONFIG", "/k"),
        ];
        let c = resolve(&names, Given::default(), env_of(&vars)).unwrap();
        assert_eq!(c.origin, Origin::Env("KUBECONFIG"));
    }

    #[test]
    fn step_3_kubeconfig_beats_the_home_file() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".kube")).unwrap();
        std::fs::write(home.path().join(".kube/config"), "{}").unwrap();
        let list = std::env::join_paths(["/a/config", "", "/b/config"]).unwrap();
        let vars = [
            ("KUBECONFIG", list.to_str().unwrap()),
            ("HOME", home.path().to_str().unwrap()),
        ];
        let c = choose(Given::default(), &vars).unwrap();
        assert_eq!(
            c.source,
            Source::Kubeconfig(vec!["/a/config".into(), "/b/config".into()])
        );
        assert_eq!(c.origin, Origin::Env("KUBECONFIG"));
    }

    #[test]
    fn step_4_the_home_file_if_it_exists() {
        let home = tempfile::tempdir().unwrap();
        let vars = [("HOME", home.path().to_str().unwrap())];
        assert_eq!(
            choose(Given::default(), &vars).unwrap().source,
            Source::InCluster
        );
        std::fs::create_dir_all(home.path().join(".kube")).unwrap();
        std::fs::write(home.path().join(".kube/config"), "{}").unwrap();
        let c = choose(Given::default(), &vars).unwrap();
        assert_eq!(
            c.source,
            Source::Kubeconfig(vec![home.path().join(".kube").join("config")])
        );
        assert_eq!(c.origin, Origin::DefaultKubeconfig);
    }

    #[test]
    fn step_5_in_cluster_when_nothing_else() {
        let c = choose(Given::default(), &[]).unwrap();
        assert_eq!(c.source, Source::InCluster);
        assert_eq!(c.origin, Origin::InCluster);
    }

    #[test]
    fn url_options_need_a_url_somewhere() {
        let with_option = |g: Given| Given {
            url_option: Some("--source-token-file"),
            ..g
        };
        let err = choose(with_option(Given::default()), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--source-token-file needs --source-url (or $KEDA_HTTP_SOURCE_URL)"
        );
        assert!(choose(with_option(given(None, Some("http://u"), None)), &[]).is_ok());
        let vars = [("KEDA_HTTP_SOURCE_URL", "http://env-cache")];
        assert!(choose(with_option(Given::default()), &vars).is_ok());
        // A URL that lost to a flag: the option is ignored, not an error.
        let c = choose(with_option(given(Some("/d"), None, None)), &vars).unwrap();
        assert_eq!(c.source, Source::Directory("/d".into()));
    }

    #[test]
    fn display() {
        let c = choose(given(None, Some("http://u"), None), &[]).unwrap();
        assert_eq!(
            format!("{} ({})", c.source, c.origin),
            "http://u (--source-url on the command line)"
        );
        assert_eq!(Origin::Env("KUBECONFIG").to_string(), "$KUBECONFIG");
        assert_eq!(
            Source::Kubeconfig(vec!["/a".into(), "/b".into()]).to_string(),
            "kubeconfig /a,/b"
        );
    }
}
