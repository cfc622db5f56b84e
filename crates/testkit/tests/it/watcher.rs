//! kube-rs's `watcher` over testkit: list-then-watch and streaming lists.

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use testkit::StartTestApi;
use testkit::{FailOn, TestApi};

use crate::common::*;

fn configs() -> [(&'static str, watcher::Config); 2] {
    [
        ("list-watch", watcher::Config::default()),
        ("streaming", watcher::Config::default().streaming_lists()),
    ]
}

#[tokio::test]
async fn watcher_sees_httpscaledobject_lifecycle() {
    for (mode, config) in configs() {
        let api = TestApi::start().await;
        let hsos = hso_api(&api);
        hsos.create(&PostParams::default(), &hso("first", "a.example.com"))
            .await
            .unwrap();

        let mut w = Watch::new(hsos.clone(), config);
        assert_eq!(w.initial().await, ["first"], "{mode}");

        hsos.create(&PostParams::default(), &hso("second", "b.example.com"))
            .await
            .unwrap();
        match w.change().await {
            Event::Apply(o) => assert_eq!(o.name_any(), "second", "{mode}"),
            other => panic!("{mode}: {other:?}"),
        }

        let patch = json!({"spec": {"hosts": ["c.example.com"]}});
        hsos.patch("second", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        match w.change().await {
            Event::Apply(o) => {
                assert_eq!(o.data["spec"]["hosts"][0], "c.example.com", "{mode}");
                assert_eq!(o.metadata.generation, Some(2), "{mode}");
            }
            other => panic!("{mode}: {other:?}"),
        }

        hsos.delete("first", &DeleteParams::default())
            .await
            .unwrap();
        match w.change().await {
            Event::Delete(o) => assert_eq!(o.name_any(), "first", "{mode}"),
            other => panic!("{mode}: {other:?}"),
        }
        assert!(w.errors.is_empty(), "{mode}: {:?}", w.errors);
    }
}

fn slice(name: &str, ip: &str) -> EndpointSlice {
    EndpointSlice {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            labels: Some([("kubernetes.io/service-name".to_string(), "svc".to_string())].into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec![ip.into()],
            ..Default::default()
        }],
        ports: None,
    }
}

#[tokio::test]
async fn watcher_sees_endpointslice_lifecycle() {
    for (mode, config) in configs() {
        let api = TestApi::start().await;
        let slices: Api<EndpointSlice> = Api::namespaced(api.client(), "default");
        slices
            .create(&PostParams::default(), &slice("svc-a", "10.0.0.1"))
            .await
            .unwrap();

        let mut w = Watch::new(
            slices.clone(),
            config.labels("kubernetes.io/service-name=svc"),
        );
        assert_eq!(w.initial().await, ["svc-a"], "{mode}");

        slices
            .create(&PostParams::default(), &slice("svc-b", "10.0.0.2"))
            .await
            .unwrap();
        match w.change().await {
            Event::Apply(o) => assert_eq!(o.name_any(), "svc-b", "{mode}"),
            other => panic!("{mode}: {other:?}"),
        }

        let mut b = slices.get("svc-b").await.unwrap();
        b.endpoints[0].addresses = vec!["10.0.0.3".into()];
        slices
            .replace("svc-b", &PostParams::default(), &b)
            .await
            .unwrap();
        match w.change().await {
            Event::Apply(o) => assert_eq!(o.endpoints[0].addresses, ["10.0.0.3"], "{mode}"),
            other => panic!("{mode}: {other:?}"),
        }

        // A stale resourceVersion is a conflict.
        let err = slices
            .replace("svc-b", &PostParams::default(), &b)
            .await
            .unwrap_err();
        assert!(
            matches!(err, kube::Error::Api(ref s) if s.code == 409),
            "{err}"
        );

        slices
            .delete("svc-a", &DeleteParams::default())
            .await
            .unwrap();
        match w.change().await {
            Event::Delete(o) => assert_eq!(o.name_any(), "svc-a", "{mode}"),
            other => panic!("{mode}: {other:?}"),
        }
    }
}

/// After an injected 410 the watcher relists, and a delete it missed while
/// disconnected is reflected (the object is absent from the relist).
#[tokio::test]
async fn watcher_relists_after_injected_410() {
    for (mode, config) in configs() {
        let api = TestApi::start().await;
        let hsos = hso_api(&api);
        for n in ["keep", "gone"] {
            hsos.create(&PostParams::default(), &hso(n, &format!("{n}.example.com")))
                .await
                .unwrap();
        }
        let mut w = Watch::new(hsos.clone(), config);
        let mut names = w.initial().await;
        names.sort();
        assert_eq!(names, ["gone", "keep"], "{mode}");

        // Disconnected: the server goes away, the object is deleted meanwhile,
        // and the first watch after coming back gets 410.
        api.faults().go_down().await;
        let gvr = listwatch::Gvr::new("http.keda.sh", "v1alpha1", "httpscaledobjects");
        api.delete_object(&gvr, "default", "gone").unwrap();
        api.faults().fail_next(FailOn::Watch, 410, 1);
        api.faults().come_up().await.unwrap();

        // The 410 makes it start over: Init, InitApply(keep), InitDone.
        assert_eq!(w.initial().await, ["keep"], "{mode}");
        assert!(w.saw_code(410), "{mode}: {:?}", w.errors);

        // And it keeps watching.
        hsos.create(&PostParams::default(), &hso("later", "later.example.com"))
            .await
            .unwrap();
        w.applied("later", |_| true).await;
    }
}

/// A watch that resumes from a resourceVersion older than the kept history
/// gets a real (not injected) 410 and relists.
#[tokio::test]
async fn watcher_relists_when_history_is_compacted() {
    let api = TestApi::builder().history(2).started().await;
    let hsos = hso_api(&api);
    hsos.create(&PostParams::default(), &hso("gone", "g.example.com"))
        .await
        .unwrap();
    let mut w = Watch::new(hsos.clone(), watcher::Config::default());
    assert_eq!(w.initial().await, ["gone"]);

    api.faults().go_down().await;
    let gvr = listwatch::Gvr::new("http.keda.sh", "v1alpha1", "httpscaledobjects");
    api.delete_object(&gvr, "default", "gone").unwrap();
    for i in 0..5 {
        api.put_object(serde_json::to_value(hso(&format!("n{i}"), "n.example.com")).unwrap())
            .unwrap();
    }
    api.faults().come_up().await.unwrap();

    let mut names = w.initial().await;
    names.sort();
    assert_eq!(names, ["n0", "n1", "n2", "n3", "n4"]);
    assert!(w.saw_code(410), "{:?}", w.errors);
}

/// DynamicObject round trip of status: writes to the main resource ignore
/// `.status`; the status subresource changes only `.status`.
#[tokio::test]
async fn status_subresource() {
    let api = TestApi::start().await;
    let hsos = hso_api(&api);
    let mut o: DynamicObject = hso("s", "s.example.com");
    o.data["status"] = json!({"conditions": [{"type": "Ready"}]});
    let created = hsos.create(&PostParams::default(), &o).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status ignored on create"
    );
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());

    let st = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}, "spec": {"hosts": ["ignored"]}});
    let patched = hsos
        .patch_status("s", &PatchParams::default(), &Patch::Merge(&st))
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["conditions"][0]["status"], "True");
    assert_eq!(patched.data["spec"]["hosts"][0], "s.example.com");
    assert_eq!(patched.metadata.generation, Some(1));

    let main = json!({"status": null, "spec": {"hosts": ["t.example.com"]}});
    let patched = hsos
        .patch("s", &PatchParams::default(), &Patch::Merge(&main))
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["conditions"][0]["status"], "True");
    assert_eq!(patched.metadata.generation, Some(2));

    let err = hsos
        .create(&PostParams::default(), &hso("s", "s.example.com"))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"));
    let err = hsos.get("missing").await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 404 && s.reason == "NotFound"));
}
