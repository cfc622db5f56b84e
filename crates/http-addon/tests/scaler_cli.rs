//! `http-addon scaler` on the command line: its help explains every flag
//! and names upstream's variables; a missing required setting is named.

mod common;

use std::process::Command;

use common::BIN;

#[test]
fn help_names_every_flag_and_variable() {
    let out = Command::new(BIN)
        .args(["scaler", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for name in [
        "KEDA_HTTP_SCALER_PORT",
        "KEDA_HTTP_SCALER_TARGET_ADMIN_NAMESPACE",
        "KEDA_HTTP_SCALER_TARGET_ADMIN_SERVICE",
        "KEDA_HTTP_SCALER_TARGET_ADMIN_DEPLOYMENT",
        "KEDA_HTTP_SCALER_TARGET_ADMIN_PORT",
        "KEDA_HTTP_QUEUE_TICK_DURATION",
        "KEDA_HTTP_SCALER_STREAM_INTERVAL_MS",
        "KEDA_HTTP_SCALER_FETCH_TIMEOUT",
        "KEDA_HTTP_SCALER_KEEP_UNREACHABLE",
        "KEDA_HTTP_SCALER_COMPACT_QUEUE",
        "OTEL_PROM_EXPORTER_PORT",
        "KEDA_HTTP_ROUTES_DIR",
        "KEDA_HTTP_SOURCE_URL",
        "--routes-dir",
        "Source precedence",
        "[default: 8080]",
        "[default: 500ms]",
        "[default: 200]",
    ] {
        assert!(help.contains(name), "{name} missing in\n{help}");
    }
    // Every flag has a sentence of its own.
    let lines: Vec<&str> = help.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("--") {
            let next = lines.get(i + 1).map_or("", |l| l.trim());
            assert!(!next.is_empty(), "{} has no description", line.trim());
        }
    }
}

#[test]
fn a_missing_target_is_named() {
    let out = Command::new(BIN)
        .args(["scaler", "--routes-dir", "/nonexistent"])
        .env_remove("KEDA_HTTP_SCALER_TARGET_ADMIN_NAMESPACE")
        .env_remove("KEDA_HTTP_SCALER_TARGET_ADMIN_SERVICE")
        .env_remove("KEDA_HTTP_SCALER_TARGET_ADMIN_DEPLOYMENT")
        .env_remove("KEDA_HTTP_SCALER_TARGET_ADMIN_PORT")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--target-admin-namespace"), "{err}");
    assert!(err.contains("--target-admin-port"), "{err}");
}
