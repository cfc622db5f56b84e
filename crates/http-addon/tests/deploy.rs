//! The install surface (`deploy/`): both overlays render with the real
//! `kubectl kustomize`, every rendered object is a well-formed object of its
//! Kubernetes type, the CRDs are exactly `http-addon crds`, the manifests
//! create on testkit through `kubectl apply`, the objects refer to each other
//! correctly, and every variable and flag they pass is one the program takes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::serde::Serialize;
use k8s_openapi::serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use common::BIN;

const OVERLAYS: [&str; 2] = ["default", "with-cache"];
const NAMESPACE: &str = "keda";
const IMAGE: &str = "ghcr.io/example/http-addon";

/// The programs whose flags and variables are checked against their
/// `--help`, by the container's first argument (the subcommand).
/// `scaler` joins the table once it is a subcommand of the binary (until
/// then the scaler Deployment's names are checked by hand against its branch).
const PROGRAMS: &[&str] = &["interceptor", "cache", "operator", "scaler"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `kubectl kustomize deploy/overlays/<overlay>`: the text.
fn render_text(overlay: &str) -> String {
    let dir = repo().join("deploy/overlays").join(overlay);
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("kubectl must be installed (it is part of the test environment)");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The rendered objects of an overlay.
fn render(overlay: &str) -> Vec<Value> {
    api::yaml::documents(&render_text(overlay)).unwrap()
}

/// An object's `kind/name`.
fn id(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj["kind"].as_str().unwrap_or("?"),
        obj["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// The rendered objects of one kind, by name.
fn by_kind<T: DeserializeOwned>(objs: &[Value], kind: &str) -> BTreeMap<String, T> {
    objs.iter()
        .filter(|o| o["kind"] == kind)
        .map(|o| {
            let name = o["metadata"]["name"].as_str().unwrap().to_owned();
            (name, serde_json::from_value(o.clone()).unwrap())
        })
        .collect()
}

/// `obj` as a `T`, serialized back: equal to `obj`, so no field was misspelt,
/// misplaced or of the wrong type (serde would drop or reject it).
fn round_trip<T: DeserializeOwned + Serialize>(obj: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    match diff(obj, &back, "") {
        d if d.is_empty() => Ok(()),
        d => Err(format!("fields lost or changed by the typed form:\n{d}")),
    }
}

/// The paths where `a` and `b` differ, one per line; numbers are compared
/// by value (a schema's `maximum: 65535.0` is kustomize's `65535`).
fn diff(a: &Value, b: &Value, at: &str) -> String {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter()
                .map(|k| {
                    let null = Value::Null;
                    diff(
                        x.get(k).unwrap_or(&null),
                        y.get(k).unwrap_or(&null),
                        &format!("{at}.{k}"),
                    )
                })
                .collect()
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .map(|(i, (p, q))| diff(p, q, &format!("{at}[{i}]")))
            .collect(),
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => String::new(),
        _ if a == b => String::new(),
        _ => format!("  {at}: {a} -> {b}\n"),
    }
}

/// Parses `obj` into the Kubernetes type its apiVersion and kind name.
fn parse_typed(obj: &Value) -> Result<(), String> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    match (api_version, kind) {
        ("apps/v1", "Deployment") => round_trip::<Deployment>(obj),
        ("v1", "Service") => round_trip::<Service>(obj),
        ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(obj),
        ("v1", "Namespace") => round_trip::<Namespace>(obj),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<ClusterRole>(obj),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip::<ClusterRoleBinding>(obj)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>(obj),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<RoleBinding>(obj),
        ("policy/v1", "PodDisruptionBudget") => round_trip::<PodDisruptionBudget>(obj),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            round_trip::<CustomResourceDefinition>(obj)
        }
        ("keda.sh/v1alpha1", "ScaledObject") => round_trip::<api::ScaledObject>(obj),
        _ => Err(format!("no type known for {api_version} {kind}")),
    }
}

#[test]
fn overlays_render_and_every_object_parses_into_its_type() {
    let common = [
        "CustomResourceDefinition/httpscaledobjects.http.keda.sh",
        "CustomResourceDefinition/interceptorroutes.http.keda.sh",
        "ServiceAccount/keda-add-ons-http-interceptor",
        "ServiceAccount/keda-add-ons-http-external-scaler",
        "ServiceAccount/keda-add-ons-http-operator",
        "ClusterRole/keda-add-ons-http-operator",
        "ClusterRoleBinding/keda-add-ons-http-operator",
        "Role/keda-add-ons-http-operator-leader-election",
        "RoleBinding/keda-add-ons-http-operator-leader-election",
        "Deployment/keda-add-ons-http-interceptor",
        "Deployment/keda-add-ons-http-external-scaler",
        "Deployment/keda-add-ons-http-operator",
        "Service/keda-add-ons-http-interceptor-proxy",
        "Service/keda-add-ons-http-interceptor-admin",
        "Service/keda-add-ons-http-interceptor-metrics",
        "Service/keda-add-ons-http-external-scaler",
        "Service/keda-add-ons-http-operator-metrics",
        "PodDisruptionBudget/keda-add-ons-http-interceptor",
        "ScaledObject/keda-add-ons-http-interceptor",
    ];
    let direct_reads = [
        "ClusterRole/keda-add-ons-http-interceptor",
        "ClusterRoleBinding/keda-add-ons-http-interceptor",
        "ClusterRole/keda-add-ons-http-external-scaler",
        "ClusterRoleBinding/keda-add-ons-http-external-scaler",
    ];
    let cache_tier = [
        "ServiceAccount/keda-add-ons-http-cache",
        "ClusterRole/keda-add-ons-http-cache",
        "ClusterRoleBinding/keda-add-ons-http-cache",
        "Deployment/keda-add-ons-http-cache",
        "Service/keda-add-ons-http-cache",
        "PodDisruptionBudget/keda-add-ons-http-cache",
    ];
    for overlay in OVERLAYS {
        let objs = render(overlay);
        let mut errors = Vec::new();
        for obj in &objs {
            if let Err(e) = parse_typed(obj) {
                errors.push(format!("{overlay}: {}: {e}", id(obj)));
            }
            let cluster_scoped = matches!(
                obj["kind"].as_str(),
                Some(
                    "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding" | "Namespace"
                )
            );
            let ns = obj["metadata"]["namespace"].as_str();
            if cluster_scoped != ns.is_none() || ns.is_some_and(|n| n != NAMESPACE) {
                errors.push(format!("{overlay}: {}: namespace {ns:?}", id(obj)));
            }
        }
        assert!(errors.is_empty(), "{}", errors.join("\n"));

        let got: BTreeSet<String> = objs.iter().map(id).collect();
        assert_eq!(got.len(), objs.len(), "{overlay}: an object appears twice");
        let mut want: BTreeSet<String> = common.iter().map(|s| s.to_string()).collect();
        let extra: &[&str] = if overlay == "with-cache" {
            &cache_tier
        } else {
            &direct_reads
        };
        want.extend(extra.iter().map(|s| s.to_string()));
        assert_eq!(got, want, "{overlay}: the rendered objects");
    }
}

/// `http-addon crds`, from the binary under test.
fn binary_crds() -> String {
    let out = std::process::Command::new(BIN)
        .arg("crds")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn crds_in_deploy_are_the_binary_output() {
    let file = repo().join("deploy/base/crds.yaml");
    let in_repo = std::fs::read_to_string(&file).unwrap();
    let printed = binary_crds();
    assert!(
        in_repo == printed,
        "{} differs from `http-addon crds`; regenerate it: cargo run -p http-addon -- crds > deploy/base/crds.yaml",
        file.display()
    );

    // And kustomize passes them through: only labels may be added.
    let want: Vec<Value> = api::yaml::documents(&printed).unwrap();
    assert_eq!(want.len(), 2);
    for overlay in OVERLAYS {
        let objs = render(overlay);
        let got: Vec<&Value> = objs
            .iter()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
            .collect();
        assert_eq!(got.len(), want.len(), "{overlay}");
        for w in &want {
            let g = got
                .iter()
                .find(|g| g["metadata"]["name"] == w["metadata"]["name"])
                .unwrap_or_else(|| panic!("{overlay}: {} missing", id(w)));
            let d = diff(&w["spec"], &g["spec"], ".spec");
            assert!(
                d.is_empty(),
                "{overlay}: {} changed by kustomize:\n{d}",
                id(w)
            );
        }
    }
}

/// Runs kubectl against `api` with `stdin` as its input.
async fn kubectl(api: &testkit::TestApi, args: &[&str], stdin: &str) -> String {
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(api.kubeconfig_path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl must be installed (it is part of the test environment)");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish in 60 s"))
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_manifests_create_on_testkit() {
    for overlay in OVERLAYS {
        let text = render_text(overlay);
        let objs = api::yaml::documents(&text).unwrap();
        let api = testkit::TestApi::start().await;

        // No OpenAPI on testkit: kubectl cannot validate client-side.
        let out = kubectl(&api, &["apply", "--validate=false", "-f", "-"], &text).await;
        let created = out.lines().filter(|l| l.ends_with(" created")).count();
        assert_eq!(created, objs.len(), "{overlay}: kubectl apply said:\n{out}");

        // Everything is there, as sent.
        let out = kubectl(&api, &["get", "-f", "-", "-o", "json"], &text).await;
        let list: Value = serde_json::from_str(&out).unwrap();
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), objs.len(), "{overlay}");
        for (sent, stored) in objs.iter().zip(items) {
            assert_eq!(id(sent), id(stored), "{overlay}");
            for field in ["spec", "rules", "roleRef", "subjects"] {
                let d = diff(&sent[field], &stored[field], field);
                assert!(
                    d.is_empty(),
                    "{overlay}: {} stored otherwise:\n{d}",
                    id(sent)
                );
            }
        }

        // Applying again (an upgrade with nothing changed) succeeds and
        // changes nothing. kubectl always re-sends a PodDisruptionBudget's
        // selector (its patch strategy is `replace`), so those say
        // "configured", on a real API server too.
        let out = kubectl(&api, &["apply", "--validate=false", "-f", "-"], &text).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines.len(),
            objs.len(),
            "{overlay}: kubectl apply said:\n{out}"
        );
        for line in lines {
            let pdb = line.starts_with("poddisruptionbudget.policy/");
            assert!(
                line.ends_with(" unchanged") || (pdb && line.ends_with(" configured")),
                "{overlay}: {line}"
            );
        }
        let out = kubectl(&api, &["get", "-f", "-", "-o", "json"], &text).await;
        let again: Value = serde_json::from_str(&out).unwrap();
        for (before, after) in items.iter().zip(again["items"].as_array().unwrap()) {
            let (b, a) = (&before["metadata"], &after["metadata"]);
            assert_eq!(
                b["generation"],
                a["generation"],
                "{overlay}: {}",
                id(before)
            );
        }
    }
}

/// The containers of every Deployment, with the Deployment's name.
fn containers(objs: &[Value]) -> Vec<(String, Container)> {
    by_kind::<Deployment>(objs, "Deployment")
        .into_iter()
        .flat_map(|(name, d)| {
            let spec = d.spec.unwrap().template.spec.unwrap();
            spec.containers.into_iter().map(move |c| (name.clone(), c))
        })
        .collect()
}

/// The subcommand a container runs (its first argument).
fn subcommand(c: &Container) -> &str {
    c.args
        .as_ref()
        .and_then(|a| a.first())
        .map(String::as_str)
        .unwrap_or_else(|| panic!("container {} has no subcommand argument", c.name))
}

/// `http-addon <cmd> --help`, in an empty environment (clap prints a set
/// variable's value next to its name).
fn help(cmd: &str) -> String {
    let out = std::process::Command::new(BIN)
        .args([cmd, "--help"])
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "http-addon {cmd} --help: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whether `help` names the variable as a whole word: `[env: NAME=]` (a
/// clap `env`), `$NAME` (a source variable) or a line of an "Environment"
/// list; `NAME_X` or `XNAME` does not count.
fn documents_env(help: &str, name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    help.match_indices(name)
        .any(|(i, _)| !help[..i].ends_with(word) && !help[i + name.len()..].starts_with(word))
}

/// Whether `help` lists the flag as an option (`--flag <VALUE>` or `--flag` alone).
fn documents_flag(help: &str, flag: &str) -> bool {
    help.lines().any(|l| {
        let l = l.trim_start();
        let l = l.split_once(", ").map_or(l, |(_, long)| long);
        l == flag || l.starts_with(&format!("{flag} "))
    })
}

#[test]
fn every_variable_and_flag_the_manifests_pass_is_one_the_program_takes() {
    let mut checked = BTreeSet::new();
    let mut errors = Vec::new();
    for overlay in OVERLAYS {
        for (deployment, c) in containers(&render(overlay)) {
            let cmd = subcommand(&c);
            if !PROGRAMS.contains(&cmd) {
                continue;
            }
            let help = help(cmd);
            for var in c.env.iter().flatten() {
                checked.insert(format!("{cmd} ${}", var.name));
                if !documents_env(&help, &var.name) {
                    errors.push(format!(
                        "{overlay}: {deployment} sets {}, which `http-addon {cmd}` does not read",
                        var.name
                    ));
                }
            }
            for arg in c.args.iter().flatten().skip(1) {
                let flag = arg.split_once('=').map_or(arg.as_str(), |(f, _)| f);
                checked.insert(format!("{cmd} {flag}"));
                if !flag.starts_with("--") || !documents_flag(&help, flag) {
                    errors.push(format!(
                        "{overlay}: {deployment} passes {arg}, which `http-addon {cmd}` does not take"
                    ));
                }
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    // The check saw every program in the table, with what each is given.
    for cmd in PROGRAMS {
        assert!(
            checked.iter().any(|c| c.starts_with(&format!("{cmd} "))),
            "no Deployment runs `http-addon {cmd}`: {checked:?}"
        );
    }
    for must in [
        "interceptor $KEDA_HTTP_PROXY_PORT",
        "interceptor $KEDA_HTTP_ADMIN_PORT",
        "interceptor $KEDA_HTTP_SOURCE_URL",
        "interceptor $KEDA_HTTP_SOURCE_TOKEN_FILE",
        "cache $KEDA_HTTP_CACHE_TOKEN_REVIEW",
        "operator $KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE",
        "operator --leader-elect",
        "operator --health-probe-bind-address",
    ] {
        assert!(checked.contains(must), "{must} not checked: {checked:?}");
    }
    // A wrong name is caught (the check is not vacuous).
    let h = help("interceptor");
    assert!(!documents_env(&h, "KEDA_HTTP_PROXY_PORTS"));
    assert!(!documents_env(&h, "KEDA_HTTP_SOURCE"));
    assert!(!documents_env(&h, "HTTP_PROXY_PORT"));
    assert!(!documents_flag(&h, "--proxy"));
    assert!(documents_flag(&h, "--proxy-port"));
    assert!(documents_flag(&help("cache"), "--token-review"));
}

/// A container's variable, by name (literal values only).
fn env<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .and_then(|v| v.value.as_deref())
}

/// Seconds of a Go duration made of `<n>h`, `<n>m`, `<n>s` parts.
fn seconds(d: &str) -> u64 {
    let (mut total, mut n) = (0, String::new());
    for ch in d.chars() {
        if ch.is_ascii_digit() {
            n.push(ch);
            continue;
        }
        let unit = match ch {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => panic!("unsupported duration {d}"),
        };
        total += n.parse::<u64>().unwrap() * unit;
        n.clear();
    }
    assert!(n.is_empty(), "duration {d} has no unit");
    total
}

fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

/// The port a probe or Service names: a number, or a container port's name.
fn resolve_port(c: &Container, port: &IntOrString) -> Option<i32> {
    match port {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port),
    }
}

/// MiB in a memory quantity like `64Mi` or `1Gi`.
fn mebibytes(q: &str) -> u64 {
    if let Some(n) = q.strip_suffix("Mi") {
        n.parse().unwrap()
    } else if let Some(n) = q.strip_suffix("Gi") {
        n.parse::<u64>().unwrap() * 1024
    } else {
        panic!("write memory in Mi or Gi: {q}")
    }
}

#[test]
fn interceptor_deployment_is_sized_probed_and_drains() {
    for overlay in OVERLAYS {
        let objs = render(overlay);
        let deployments = by_kind::<Deployment>(&objs, "Deployment");
        let d = &deployments["keda-add-ons-http-interceptor"];
        assert_eq!(d.spec.as_ref().unwrap().replicas, Some(3));
        let pod = pod_spec(d);
        let c = &pod.containers[0];
        assert_eq!(subcommand(c), "interceptor");

        // Probes on the admin port, at upstream's paths.
        let admin: i32 = env(c, "KEDA_HTTP_ADMIN_PORT").unwrap().parse().unwrap();
        assert_eq!(admin, 9090);
        assert_eq!(env(c, "KEDA_HTTP_PROXY_PORT"), Some("8080"));
        for (probe, path) in [
            (&c.readiness_probe, "/readyz"),
            (&c.liveness_probe, "/livez"),
        ] {
            let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
            assert_eq!(get.path.as_deref(), Some(path));
            assert_eq!(resolve_port(c, &get.port), Some(admin), "{path}");
        }

        // The kubelet waits longer than the whole shutdown: delay, then drain.
        let shutdown = seconds(env(c, "KEDA_HTTP_SHUTDOWN_DELAY").unwrap())
            + seconds(env(c, "KEDA_HTTP_DRAIN_TIMEOUT").unwrap());
        let grace = pod.termination_grace_period_seconds.unwrap() as u64;
        assert!(grace > shutdown, "grace {grace}s <= shutdown {shutdown}s");

        // Sized from the measured RSS (BENCHMARKS.md, session 8: 48-49 MiB
        // under load, 10,000 routes): the request covers it, the limit
        // leaves headroom.
        let res = c.resources.as_ref().unwrap();
        let request = mebibytes(&res.requests.as_ref().unwrap()["memory"].0);
        let limit = mebibytes(&res.limits.as_ref().unwrap()["memory"].0);
        assert!(request >= 50, "memory request {request}Mi < measured RSS");
        assert!(
            limit >= 2 * request && limit <= 256,
            "memory limit {limit}Mi"
        );
    }
}

#[test]
fn every_pod_is_locked_down_and_runs_this_version() {
    let image = format!("{IMAGE}:{}", env!("CARGO_PKG_VERSION"));
    for overlay in OVERLAYS {
        for (name, d) in by_kind::<Deployment>(&render(overlay), "Deployment") {
            let pod = pod_spec(&d);
            let psc = pod.security_context.as_ref().unwrap();
            assert_eq!(psc.run_as_non_root, Some(true), "{name}");
            assert_eq!(psc.run_as_user, Some(65532), "{name}: the image's user");
            let seccomp = psc.seccomp_profile.as_ref().unwrap();
            assert_eq!(seccomp.type_, "RuntimeDefault", "{name}");
            assert!(
                pod.node_selector.as_ref().unwrap()["kubernetes.io/arch"] == "amd64",
                "{name}: the image is x86_64 only"
            );
            for c in &pod.containers {
                let sc = c.security_context.as_ref().unwrap();
                assert_eq!(sc.run_as_non_root, Some(true), "{name}");
                assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
                assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
                let drop = sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap();
                assert_eq!(drop, &["ALL"], "{name}");
                assert_eq!(c.image.as_deref(), Some(image.as_str()), "{name}");
                let res = c.resources.as_ref().unwrap();
                for key in ["cpu", "memory"] {
                    assert!(res.requests.as_ref().unwrap().contains_key(key), "{name}");
                    assert!(res.limits.as_ref().unwrap().contains_key(key), "{name}");
                }
                assert!(
                    c.readiness_probe.is_some() && c.liveness_probe.is_some(),
                    "{name}"
                );
            }
        }
    }
}

/// `verb resource.group` for every permission a rule grants.
fn grants(rules: &[PolicyRule]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in rules {
        assert!(r.non_resource_urls.is_none() && r.resource_names.is_none());
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    assert_ne!(v, "*", "no wildcard verbs");
                    assert_ne!(res, "*", "no wildcard resources");
                    let group = if g.is_empty() { "core" } else { g };
                    out.insert(format!("{v} {res}.{group}"));
                }
            }
        }
    }
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// What a service account may do, through every binding of the overlay.
fn permissions(objs: &[Value], sa: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let cluster_roles = by_kind::<ClusterRole>(objs, "ClusterRole")
        .into_iter()
        .map(|(name, r)| (name, r.rules.unwrap_or_default()))
        .collect();
    let roles = by_kind::<Role>(objs, "Role")
        .into_iter()
        .map(|(name, r)| (name, r.rules.unwrap_or_default()))
        .collect();
    let cluster_bindings = by_kind::<ClusterRoleBinding>(objs, "ClusterRoleBinding")
        .into_iter()
        .map(|(name, b)| (name, b.subjects, b.role_ref));
    let bindings = by_kind::<RoleBinding>(objs, "RoleBinding")
        .into_iter()
        .map(|(name, b)| (name, b.subjects, b.role_ref));
    (
        granted(sa, cluster_bindings, "ClusterRole", &cluster_roles),
        granted(sa, bindings, "Role", &roles),
    )
}

/// What the `bindings` (name, subjects, role) that bind `sa` grant, each to
/// one of `roles` (name to rules) of kind `role_kind`.
fn granted(
    sa: &str,
    bindings: impl IntoIterator<Item = (String, Option<Vec<Subject>>, RoleRef)>,
    role_kind: &str,
    roles: &BTreeMap<String, Vec<PolicyRule>>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (name, subjects, role_ref) in bindings {
        let binds_sa = subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount" && s.name == sa && s.namespace.as_deref() == Some(NAMESPACE)
        });
        if binds_sa {
            assert_eq!(role_ref.kind, role_kind, "{name}");
            let rules = roles
                .get(&role_ref.name)
                .unwrap_or_else(|| panic!("{name} binds a missing {role_kind}"));
            out.extend(grants(rules));
        }
    }
    out
}

#[test]
fn every_program_gets_exactly_the_access_it_needs() {
    let read = |resources: &[&str]| -> BTreeSet<String> {
        resources
            .iter()
            .flat_map(|r| ["get", "list", "watch"].map(|v| format!("{v} {r}")))
            .collect()
    };
    let watched = read(&[
        "httpscaledobjects.http.keda.sh",
        "interceptorroutes.http.keda.sh",
        "services.core",
        "endpointslices.discovery.k8s.io",
    ]);
    // The interceptor (and the cache it reads from) also reads the
    // response-body ConfigMaps; the scaler does not.
    let mut watched_with_bodies = watched.clone();
    watched_with_bodies.extend(read(&["configmaps.core"]));
    let none = BTreeSet::new();
    let operator_cluster: BTreeSet<String> = {
        let mut s = read(&[
            "httpscaledobjects.http.keda.sh",
            "interceptorroutes.http.keda.sh",
            "scaledobjects.keda.sh",
        ]);
        for v in ["update", "patch"] {
            s.insert(format!("{v} httpscaledobjects.http.keda.sh"));
            s.insert(format!("{v} interceptorroutes.http.keda.sh"));
            s.insert(format!("{v} httpscaledobjects/status.http.keda.sh"));
            s.insert(format!("{v} interceptorroutes/status.http.keda.sh"));
        }
        s.insert("get httpscaledobjects/status.http.keda.sh".into());
        s.insert("get interceptorroutes/status.http.keda.sh".into());
        s.insert("update httpscaledobjects/finalizers.http.keda.sh".into());
        for v in ["create", "update", "patch", "delete"] {
            s.insert(format!("{v} scaledobjects.keda.sh"));
        }
        s.extend(set(&[
            "create events.core",
            "patch events.core",
            "create events.events.k8s.io",
            "patch events.events.k8s.io",
        ]));
        s
    };
    let leases: BTreeSet<String> = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ]
    .iter()
    .map(|v| format!("{v} leases.coordination.k8s.io"))
    .collect();
    let mut cache = watched_with_bodies.clone();
    cache.insert("create tokenreviews.authentication.k8s.io".into());

    for overlay in OVERLAYS {
        let objs = render(overlay);
        // Behind the cache tier, interceptors and scalers read only the cache.
        let (interceptor, scaler) = if overlay == "with-cache" {
            (&none, &none)
        } else {
            (&watched_with_bodies, &watched)
        };
        for (sa, want_cluster, want_ns) in [
            ("keda-add-ons-http-interceptor", interceptor, &none),
            ("keda-add-ons-http-external-scaler", scaler, &none),
            ("keda-add-ons-http-operator", &operator_cluster, &leases),
        ] {
            let (cluster, ns) = permissions(&objs, sa);
            assert_eq!(&cluster, want_cluster, "{overlay}: {sa} cluster-wide");
            assert_eq!(&ns, want_ns, "{overlay}: {sa} in {NAMESPACE}");
        }
        if overlay == "with-cache" {
            let (cluster, ns) = permissions(&objs, "keda-add-ons-http-cache");
            assert_eq!(cluster, cache, "cache");
            assert_eq!(ns, none, "cache");
        }
    }
}

/// The Service `name` and the Deployment whose pods it selects, with the
/// container port each Service port reaches.
fn service_backends(objs: &[Value]) -> BTreeMap<String, (String, BTreeMap<i32, i32>)> {
    let deployments = by_kind::<Deployment>(objs, "Deployment");
    let mut out = BTreeMap::new();
    for (name, svc) in by_kind::<Service>(objs, "Service") {
        let spec = svc.spec.unwrap();
        let selector = spec.selector.unwrap();
        let selected: Vec<(&String, &Deployment)> = deployments
            .iter()
            .filter(|(_, d)| {
                let labels = d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap();
                let labels = labels.labels.as_ref().unwrap();
                selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect();
        assert_eq!(selected.len(), 1, "Service {name} selects {selected:?}");
        let (dname, d) = selected[0];
        let c = &pod_spec(d).containers[0];
        let mut ports = BTreeMap::new();
        for p in spec.ports.unwrap() {
            let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
            let to = resolve_port(c, &target).unwrap_or_else(|| {
                panic!("Service {name} port {}: no such container port", p.port)
            });
            ports.insert(p.port, to);
        }
        out.insert(name, (dname.clone(), ports));
    }
    out
}

#[test]
fn the_objects_refer_to_each_other_correctly() {
    for overlay in OVERLAYS {
        let objs = render(overlay);
        let services = service_backends(&objs);
        let deployments = by_kind::<Deployment>(&objs, "Deployment");
        let accounts = by_kind::<ServiceAccount>(&objs, "ServiceAccount");
        let container = |d: &str| pod_spec(&deployments[d]).containers[0].clone();
        // `<service>.<namespace>:<port>` reaches a pod of `deployment` on `container_port`.
        let reaches = |addr: &str, deployment: &str, container_port: i32| {
            let (host, port) = addr.rsplit_once(':').unwrap();
            let (svc, ns) = host.split_once('.').unwrap();
            assert_eq!(ns, NAMESPACE, "{overlay}: {addr}");
            let (selected, ports) = services
                .get(svc)
                .unwrap_or_else(|| panic!("{overlay}: {addr}: no Service {svc}"));
            assert_eq!(selected, deployment, "{overlay}: {addr}");
            let port: i32 = port.parse().unwrap();
            assert_eq!(ports.get(&port), Some(&container_port), "{overlay}: {addr}");
        };

        // Upstream's Services reach the programs upstream's names promise.
        let interceptor = container("keda-add-ons-http-interceptor");
        let proxy: i32 = env(&interceptor, "KEDA_HTTP_PROXY_PORT")
            .unwrap()
            .parse()
            .unwrap();
        let admin: i32 = env(&interceptor, "KEDA_HTTP_ADMIN_PORT")
            .unwrap()
            .parse()
            .unwrap();
        let int = "keda-add-ons-http-interceptor";
        reaches("keda-add-ons-http-interceptor-proxy.keda:8080", int, proxy);
        reaches("keda-add-ons-http-interceptor-admin.keda:9090", int, admin);
        reaches("keda-add-ons-http-interceptor-metrics.keda:2223", int, 2223);

        // The scaler listens where KEDA dials it and polls the admin Service.
        let scaler = container("keda-add-ons-http-external-scaler");
        let grpc: i32 = env(&scaler, "KEDA_HTTP_SCALER_PORT")
            .unwrap()
            .parse()
            .unwrap();
        let scaler_addr = "keda-add-ons-http-external-scaler.keda:9090";
        reaches(scaler_addr, "keda-add-ons-http-external-scaler", grpc);
        let target = format!(
            "{}.{}:{}",
            env(&scaler, "KEDA_HTTP_SCALER_TARGET_ADMIN_SERVICE").unwrap(),
            env(&scaler, "KEDA_HTTP_SCALER_TARGET_ADMIN_NAMESPACE").unwrap(),
            env(&scaler, "KEDA_HTTP_SCALER_TARGET_ADMIN_PORT").unwrap(),
        );
        reaches(&target, int, admin);
        assert_eq!(
            env(&scaler, "KEDA_HTTP_SCALER_TARGET_ADMIN_DEPLOYMENT"),
            Some(int)
        );
        for probe in [&scaler.readiness_probe, &scaler.liveness_probe] {
            assert_eq!(probe.as_ref().unwrap().grpc.as_ref().unwrap().port, grpc);
        }

        // The operator writes the scaler's address into every ScaledObject.
        let operator = container("keda-add-ons-http-operator");
        let written = format!(
            "{}.{}:{}",
            env(&operator, "KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE").unwrap(),
            env(&operator, "KEDA_HTTP_OPERATOR_NAMESPACE").unwrap(),
            env(&operator, "KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_PORT").unwrap(),
        );
        assert_eq!(written, scaler_addr, "{overlay}");
        let args = operator.args.as_ref().unwrap();
        assert!(args.iter().any(|a| a == "--leader-elect"), "{overlay}");
        assert!(args.iter().any(|a| a == "--metrics-bind-address=:8080"));
        assert!(
            args.iter()
                .any(|a| a == "--health-probe-bind-address=:8081")
        );
        reaches(
            "keda-add-ons-http-operator-metrics.keda:8080",
            "keda-add-ons-http-operator",
            8080,
        );

        // The fleet's own ScaledObject scales the interceptors through the scaler.
        let so = &by_kind::<api::ScaledObject>(&objs, "ScaledObject")[int];
        assert_eq!(so.spec.scale_target_ref.name, int);
        assert_eq!(so.spec.scale_target_ref.kind.as_deref(), Some("Deployment"));
        assert_eq!(so.spec.min_replica_count, Some(3));
        let [trigger] = so.spec.triggers.as_slice() else {
            panic!("one trigger")
        };
        assert_eq!(trigger.type_, "external");
        assert_eq!(trigger.metadata["scalerAddress"], scaler_addr);
        let per_replica: u32 = trigger.metadata["interceptorTargetPendingRequests"]
            .parse()
            .unwrap();
        assert_eq!(per_replica, 200);

        // Budgets select the pods they protect.
        for (name, pdb) in by_kind::<PodDisruptionBudget>(&objs, "PodDisruptionBudget") {
            let want = deployments[&name].spec.as_ref().unwrap().selector.clone();
            assert_eq!(pdb.spec.unwrap().selector, Some(want), "{overlay}: {name}");
        }

        // Every pod runs as a service account of the install.
        for (name, d) in &deployments {
            let sa = pod_spec(d).service_account_name.as_deref().unwrap();
            assert!(accounts.contains_key(sa), "{overlay}: {name} runs as {sa}");
        }

        // Behind the cache tier: interceptors and scalers read the cache
        // Service with a projected token of their own service account.
        if overlay == "with-cache" {
            let cache = container("keda-add-ons-http-cache");
            let cache_port: i32 = env(&cache, "KEDA_HTTP_CACHE_PORT")
                .unwrap()
                .parse()
                .unwrap();
            for name in [int, "keda-add-ons-http-external-scaler"] {
                let c = container(name);
                let url = env(&c, "KEDA_HTTP_SOURCE_URL").unwrap();
                let addr = url.strip_prefix("http://").unwrap();
                reaches(addr, "keda-add-ons-http-cache", cache_port);
                let token = Path::new(env(&c, "KEDA_HTTP_SOURCE_TOKEN_FILE").unwrap());
                let mount = c
                    .volume_mounts
                    .iter()
                    .flatten()
                    .find(|m| token.parent() == Some(Path::new(&m.mount_path)))
                    .unwrap_or_else(|| panic!("{name}: nothing mounted at {token:?}"));
                let volume = pod_spec(&deployments[name])
                    .volumes
                    .iter()
                    .flatten()
                    .find(|v| v.name == mount.name)
                    .unwrap();
                let sources = volume.projected.as_ref().unwrap().sources.as_ref().unwrap();
                let projected = sources[0].service_account_token.as_ref().unwrap();
                assert_eq!(
                    Path::new(&projected.path),
                    token.file_name().unwrap(),
                    "{name}"
                );
                // The cache's TokenReview asks for the API server's audience.
                assert_eq!(projected.audience, None, "{name}");
            }
            assert_eq!(env(&cache, "KEDA_HTTP_CACHE_TOKEN_REVIEW"), Some("true"));
            assert_eq!(
                deployments["keda-add-ons-http-cache"]
                    .spec
                    .as_ref()
                    .unwrap()
                    .replicas,
                Some(2)
            );
        } else {
            for (name, c) in containers(&objs) {
                assert_eq!(env(&c, "KEDA_HTTP_SOURCE_URL"), None, "{name}");
            }
        }
    }
}
