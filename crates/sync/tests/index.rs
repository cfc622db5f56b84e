//! Synchronous tests of the index: apply, then assert the table.

use serde_json::{Value, json};
use sync::{ObjectKey, ObjectKind, Outcome, ResourceVersion, RouteIndex};
use testkit::fixtures::{Hso, Ir};

fn httpso(name: &str, host: &str, rv: &str, service: &str) -> Value {
    Hso::new("ns", name)
        .host(host)
        .resource_version(rv)
        .service(service, 8080)
        .json()
}

/// Applies the HTTPScaledObject `ns/name` at `rv`.
fn apply(index: &mut RouteIndex, name: &str, host: &str, rv: &str, service: &str) -> Outcome {
    let object = httpso(name, host, rv, service);
    index.apply(ObjectKind::HttpScaledObject, object)
}

/// Reconciles the HTTPScaledObjects with a list of `items` at `rv`.
fn reconcile(index: &mut RouteIndex, items: Vec<Value>, rv: &str) -> sync::Reconciled {
    index.reconcile(
        ObjectKind::HttpScaledObject,
        items,
        Some(ResourceVersion::new(rv)),
    )
}

fn target_of(index: &RouteIndex, host: &str) -> Option<String> {
    let headers: &[(&str, &str)] = &[];
    index
        .table()
        .lookup(host, "/", &headers)
        .map(|m| m.route.target.service.to_string())
}

/// Asserts where each `(host, service)` routes now.
fn assert_routes(index: &RouteIndex, want: &[(&str, Option<&str>)]) {
    for (host, service) in want {
        assert_eq!(target_of(index, host).as_deref(), *service, "{host}");
    }
}

fn key(name: &str) -> ObjectKey {
    ObjectKey {
        kind: ObjectKind::HttpScaledObject,
        namespace: "ns".into(),
        name: name.into(),
    }
}

#[test]
fn apply_update_delete() {
    let mut index = RouteIndex::new();
    assert_eq!(
        apply(&mut index, "a", "a.com", "10", "svc-a"),
        Outcome::Changed
    );
    assert_routes(&index, &[("a.com", Some("svc-a"))]);
    // Same version again: nothing to do.
    assert_eq!(
        apply(&mut index, "a", "a.com", "10", "svc-a"),
        Outcome::Unchanged
    );
    apply(&mut index, "a", "a.com", "11", "svc-b");
    assert_routes(&index, &[("a.com", Some("svc-b"))]);
    assert_eq!(
        index.delete(&key("a"), Some(ResourceVersion::new("12"))),
        Outcome::Changed
    );
    assert_routes(&index, &[("a.com", None)]);
}

#[test]
fn stale_watch_event_does_not_roll_back() {
    let mut index = RouteIndex::new();
    apply(&mut index, "a", "a.com", "20", "new");
    assert_eq!(
        apply(&mut index, "a", "a.com", "15", "old"),
        Outcome::Unchanged
    );
    assert_routes(&index, &[("a.com", Some("new"))]);
    // A late delete of an older version does not remove a newer object.
    index.delete(&key("a"), Some(ResourceVersion::new("18")));
    assert_routes(&index, &[("a.com", Some("new"))]);
}

#[test]
fn reconcile_repairs_missed_changes() {
    let mut index = RouteIndex::new();
    apply(&mut index, "a", "a.com", "10", "svc-a");
    apply(&mut index, "gone", "gone.com", "11", "svc-g");
    // The list (at rv 30) has a changed `a`, a new `b`, and lacks `gone`.
    let list = || {
        vec![
            httpso("a", "a.com", "25", "svc-a2"),
            httpso("b", "b.com", "26", "svc-b"),
        ]
    };
    let r = reconcile(&mut index, list(), "30");
    assert_eq!(r.changes, 3);
    assert_routes(
        &index,
        &[
            ("a.com", Some("svc-a2")),
            ("b.com", Some("svc-b")),
            ("gone.com", None),
        ],
    );
    // The same list again changes nothing.
    let r = reconcile(&mut index, list(), "30");
    assert_eq!(r.changes, 0);
}

#[test]
fn stale_list_does_not_undo_newer_watch_events() {
    let mut index = RouteIndex::new();
    // The watch delivered a create (rv 40) and a delete (rv 41) after the list's rv 35.
    apply(&mut index, "new", "new.com", "40", "svc-n");
    apply(&mut index, "old", "old.com", "20", "svc-o");
    index.delete(&key("old"), Some(ResourceVersion::new("41")));
    let r = reconcile(
        &mut index,
        vec![httpso("old", "old.com", "20", "svc-o")],
        "35",
    );
    assert_eq!(r.changes, 0, "{r:?}");
    assert_routes(&index, &[("new.com", Some("svc-n")), ("old.com", None)]);
}

#[test]
fn invalid_object_is_reported_and_keeps_last_good_route() {
    let mut index = RouteIndex::new();
    apply(&mut index, "a", "a.com", "10", "svc-a");
    let mut bad = httpso("a", "a.com", "11", "svc-bad");
    bad["spec"]["scaleTargetRef"]["port"] = json!(70000);
    match index.apply(ObjectKind::HttpScaledObject, bad) {
        Outcome::Invalid(errors) => {
            let text = errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            assert!(text.contains("ns/a"), "{text}");
            assert!(text.contains("spec.scaleTargetRef.port"), "{text}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_routes(&index, &[("a.com", Some("svc-a"))]);
    // A list with the invalid object and a valid one: the valid one routes.
    let mut bad2 = httpso("c", "c.com", "12", "svc-c");
    bad2["spec"]["hosts"] = json!(["a*b.com"]);
    let r = reconcile(
        &mut index,
        vec![httpso("b", "b.com", "13", "svc-b"), bad2],
        "14",
    );
    assert_eq!(r.invalid.len(), 1, "{r:?}");
    assert!(r.invalid[0].to_string().contains("ns/c"));
    assert_routes(&index, &[("b.com", Some("svc-b")), ("c.com", None)]);
}

#[test]
fn interceptor_route_wins_a_name_clash() {
    let mut index = RouteIndex::new();
    apply(&mut index, "a", "a.com", "10", "from-httpso");
    let ir = Ir::new("ns", "a")
        .host("a.com")
        .resource_version("11")
        .service("from-ir", 80)
        .json();
    index.apply(ObjectKind::InterceptorRoute, ir);
    assert_routes(&index, &[("a.com", Some("from-ir"))]);
    index.delete(
        &ObjectKey {
            kind: ObjectKind::InterceptorRoute,
            namespace: "ns".into(),
            name: "a".into(),
        },
        Some(ResourceVersion::new("12")),
    );
    assert_routes(&index, &[("a.com", Some("from-httpso"))]);
}

#[test]
fn the_running_digest_equals_a_full_recount() {
    let mut index = RouteIndex::new();
    let recount = |index: &RouteIndex| {
        wire::digest::content_digest(index.versions(ObjectKind::HttpScaledObject))
    };
    apply(&mut index, "a", "a.com", "10", "svc-a");
    apply(&mut index, "b", "b.com", "11", "svc-b");
    assert_eq!(index.digest(ObjectKind::HttpScaledObject), recount(&index));
    apply(&mut index, "a", "a.com", "12", "svc-a2");
    index.delete(&key("b"), Some(ResourceVersion::new("13")));
    assert_eq!(index.digest(ObjectKind::HttpScaledObject), recount(&index));
    reconcile(&mut index, vec![httpso("c", "c.com", "20", "svc-c")], "21");
    assert_eq!(index.digest(ObjectKind::HttpScaledObject), recount(&index));
    assert_ne!(index.digest(ObjectKind::HttpScaledObject), 0);
    assert_eq!(index.digest(ObjectKind::InterceptorRoute), 0);
}
