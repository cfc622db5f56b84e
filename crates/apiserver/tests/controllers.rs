//! What a controller needs of the API server, over HTTP with kube's own
//! client: finalizers, garbage collection by owner references, and
//! server-side apply's field ownership.

use std::time::Duration;

use apiserver::ApiServer;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// Applies a JSON merge patch to the ConfigMap `name`, as `kubectl patch --type merge`.
async fn merge(cms: &Api<ConfigMap>, name: &str, patch: serde_json::Value) {
    cms.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"}})).unwrap()
}

#[tokio::test]
async fn a_finalizer_holds_a_deleted_object_until_it_is_removed() {
    let api = ApiServer::builder().start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "default");
    let mut held = cm("held");
    held.metadata.finalizers = Some(vec!["example.com/cleanup".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    cms.delete("held", &DeleteParams::default()).await.unwrap();
    let marked = cms.get("held").await.expect("still there while finalized");
    assert!(marked.metadata.deletion_timestamp.is_some());
    // A second delete changes nothing.
    cms.delete("held", &DeleteParams::default()).await.unwrap();
    merge(&cms, "held", json!({"metadata": {"finalizers": null}})).await;
    assert!(
        cms.get_opt("held").await.unwrap().is_none(),
        "gone once finalized"
    );
}

#[tokio::test]
async fn dependents_go_with_their_owner_unless_orphaned() {
    let api = ApiServer::builder().start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "default");
    let owner = cms
        .create(&PostParams::default(), &cm("owner"))
        .await
        .unwrap();
    let owner_ref = json!([{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
        "uid": owner.metadata.uid.clone().unwrap(), "controller": true
    }]);
    for name in ["dependent", "orphan"] {
        let mut d = cm(name);
        d.metadata.owner_references = Some(serde_json::from_value(owner_ref.clone()).unwrap());
        cms.create(&PostParams::default(), &d).await.unwrap();
    }
    // The orphan loses its owner reference before the owner goes.
    merge(
        &cms,
        "orphan",
        json!({"metadata": {"ownerReferences": null}}),
    )
    .await;
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    assert!(cms.get_opt("dependent").await.unwrap().is_none());
    assert!(cms.get_opt("orphan").await.unwrap().is_some());
}

#[tokio::test]
async fn server_side_apply_owns_what_it_applied_and_leaves_the_rest() {
    let api = ApiServer::builder().start().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "default");
    let apply = PatchParams::apply("our-operator").force();
    let first = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "default"},
        "data": {"ours": "1", "dropped-later": "x"}});
    cms.patch("cfg", &apply, &Patch::Apply(&first))
        .await
        .unwrap();
    // Someone else adds a field and edits one of ours.
    merge(
        &cms,
        "cfg",
        json!({"data": {"theirs": "t", "ours": "hand-edited"}}),
    )
    .await;
    let second = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "default"},
        "data": {"ours": "1"}});
    let got = cms
        .patch("cfg", &apply, &Patch::Apply(&second))
        .await
        .unwrap();
    let data = got.data.unwrap();
    assert_eq!(
        data.get("ours").map(String::as_str),
        Some("1"),
        "our field put back"
    );
    assert_eq!(
        data.get("theirs").map(String::as_str),
        Some("t"),
        "theirs left alone"
    );
    assert!(
        !data.contains_key("dropped-later"),
        "a field we stopped applying is removed"
    );
    let managers: Vec<String> = got
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["our-operator"]);
    tokio::time::sleep(Duration::ZERO).await;
}
