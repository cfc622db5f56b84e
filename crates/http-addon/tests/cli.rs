//! The `http-addon` binary, run as a user would.

use std::process::Command;

fn http_addon(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_http-addon"))
        .args(args)
        .output()
        .expect("the binary runs")
}

#[test]
fn crds_prints_both_definitions() {
    let out = http_addon(&["crds"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert_eq!(yaml, api::crds_yaml());
    let names: Vec<String> = api::yaml_documents(&yaml)
        .unwrap()
        .iter()
        .map(|doc| doc["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "httpscaledobjects.http.keda.sh",
            "interceptorroutes.http.keda.sh"
        ]
    );
}

#[test]
fn help_explains_the_program_and_its_subcommands() {
    let out = http_addon(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("KEDA HTTP Add-on"), "{help}");
    assert!(help.contains("crds"), "{help}");

    let out = http_addon(&["crds", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("kubectl apply -f -"), "{help}");
}

#[test]
fn no_subcommand_is_a_usage_error() {
    let out = http_addon(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("Usage:"), "{err}");
}
