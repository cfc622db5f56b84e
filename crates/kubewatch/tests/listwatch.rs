//! The client against testkit (a `listwatch` server) over real sockets.
//! Every wait is bounded, so a failing test fails instead of hanging.

use std::time::Duration;
use testkit::StartTestApi;

use kubewatch::{
    Collection, Error, IfNoneMatch, List, ListOutcome, ListParams, WatchFrame, WatchState,
    WatchStream,
};
use serde_json::Value;
use testkit::fixtures::Hso;
use testkit::{FailOn, TestApi};
use wire::EventType;

const PATH: &str = "/apis/http.keda.sh/v1alpha1/httpscaledobjects";
const WAIT: Duration = Duration::from_secs(15);

fn httpso(name: &str, team: &str) -> Value {
    Hso::new("apps", name)
        .label("team", team)
        .host(&format!("{name}.example.com"))
        .json()
}

/// A list from the server's cache, unconditional.
fn from_cache() -> ListParams {
    ListParams {
        from_cache: true,
        ..ListParams::default()
    }
}

/// Puts the HTTPScaledObjects `(name, team)` into `api`; a collection of
/// every HTTPScaledObject there.
fn holding(api: &TestApi, objects: &[(&str, &str)]) -> Collection {
    for (name, team) in objects {
        api.put_object(httpso(name, team)).unwrap();
    }
    Collection::new(api.client(), PATH)
}

async fn listed(c: &Collection, params: &ListParams) -> List {
    match c.list(params).await.expect("list") {
        ListOutcome::Listed(l) => l,
        ListOutcome::Unchanged => panic!("unexpected 304"),
    }
}

fn names(list: &List) -> Vec<String> {
    let mut v: Vec<String> = list
        .items
        .iter()
        .map(|i| {
            let o: Value = serde_json::from_slice(i).unwrap();
            o["metadata"]["name"].as_str().unwrap().to_string()
        })
        .collect();
    v.sort();
    v
}

fn digest_of(list: &List) -> u64 {
    let held: Vec<(String, String, String)> = list
        .items
        .iter()
        .map(|i| {
            let o: Value = serde_json::from_slice(i).unwrap();
            let s = |k: &str| o["metadata"][k].as_str().unwrap().to_string();
            (s("namespace"), s("name"), s("resourceVersion"))
        })
        .collect();
    wire::digest::content_digest(held.iter().map(|(a, b, c)| (&**a, &**b, &**c)))
}

/// The next frame that satisfies `want`, skipping others.
async fn next_matching(stream: &mut WatchStream, want: impl Fn(&WatchFrame) -> bool) -> WatchFrame {
    let mut frames = Vec::new();
    tokio::time::timeout(WAIT, async {
        loop {
            let state = stream.next_batch(&mut frames).await.expect("watch");
            if let Some(i) = frames.iter().position(&want) {
                return frames.swap_remove(i);
            }
            frames.clear();
            assert_eq!(state, WatchState::Open, "the watch ended first");
        }
    })
    .await
    .expect("the frame came")
}

#[tokio::test]
async fn paged_lists_collect_every_page_and_keep_items_raw() {
    let api = TestApi::start().await;
    for i in 0..5 {
        api.put_object(httpso(&format!("app{i}"), "shop")).unwrap();
    }
    let c = Collection::new(api.client(), PATH);
    let paged = listed(
        &c,
        &ListParams {
            page_size: Some(2),
            ..ListParams::default()
        },
    )
    .await;
    assert_eq!(names(&paged), ["app0", "app1", "app2", "app3", "app4"]);
    assert_eq!(
        paged.resource_version,
        Some(api.resource_version().to_string())
    );
    assert!(paged.etag.is_some());
    // Pages were requested: 5 objects at 2 a page.
    assert_eq!(api.stats().total_requests(testkit::Verb::List), 3);

    let cached = listed(&c, &from_cache()).await;
    assert_eq!(names(&cached), names(&paged));
}

#[tokio::test]
async fn conditional_lists_answer_unchanged_for_an_etag_or_a_digest() {
    let api = TestApi::start().await;
    let c = holding(&api, &[("a", "shop"), ("b", "shop")]);
    let first = listed(&c, &from_cache()).await;
    let digest = digest_of(&first);
    for condition in [
        IfNoneMatch::ETag(first.etag.clone().unwrap()),
        IfNoneMatch::Digest(digest),
    ] {
        let params = ListParams {
            from_cache: true,
            if_none_match: Some(condition.clone()),
            ..ListParams::default()
        };
        assert!(
            matches!(c.list(&params).await.unwrap(), ListOutcome::Unchanged),
            "{condition:?}"
        );
    }
    // A digest of something else is a full list.
    let stale = ListParams {
        from_cache: true,
        if_none_match: Some(IfNoneMatch::Digest(wire::digest::from_sum(digest + 1))),
        ..ListParams::default()
    };
    assert_eq!(names(&listed(&c, &stale).await), ["a", "b"]);
}

#[tokio::test]
async fn label_selectors_and_missing_resources() {
    let api = TestApi::start().await;
    let all = holding(&api, &[("a", "shop"), ("b", "blog")]).with_label_selector(Some(""));
    let shop = Collection::new(api.client(), PATH).with_label_selector(Some("team=shop"));
    assert_eq!(names(&listed(&shop, &ListParams::default()).await), ["a"]);
    assert_eq!(
        names(&listed(&all, &ListParams::default()).await),
        ["a", "b"]
    );

    let missing = Collection::new(api.client(), "/apis/example.com/v1/widgets");
    match missing.list(&ListParams::default()).await {
        Err(Error::NotFound { path }) => assert_eq!(path, "/apis/example.com/v1/widgets"),
        other => panic!("{other:?}"),
    }
    api.faults().fail_next(FailOn::List, 500, 1);
    match all.list(&ListParams::default()).await {
        Err(e @ Error::Status { status, .. }) => {
            assert_eq!(status, 500);
            assert!(e.to_string().contains("injected failure"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_watch_streams_events_and_bookmarks_with_digests() {
    let api = TestApi::builder()
        .bookmark_interval(Duration::from_millis(100))
        .started()
        .await;
    let c = holding(&api, &[("a", "shop")]);
    let list = listed(&c, &ListParams::default()).await;
    let from = list.resource_version.clone().unwrap();
    let mut stream = c.watch(&from, Duration::from_secs(30)).await.unwrap();

    api.put_object(httpso("b", "shop")).unwrap();
    let added = next_matching(&mut stream, |f| matches!(f, WatchFrame::Event { .. })).await;
    let WatchFrame::Event {
        event_type,
        object,
        digest,
    } = added
    else {
        unreachable!()
    };
    assert_eq!(event_type, EventType::Added);
    let o: Value = serde_json::from_slice(&object).unwrap();
    assert_eq!(o["metadata"]["name"], "b");
    let rv_b = o["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let both = listed(&c, &ListParams::default()).await;
    assert_eq!(
        digest,
        Some(digest_of(&both)),
        "the event carries the digest after it"
    );

    api.delete_object(&Hso::gvr(), "apps", "a").unwrap();
    let deleted = next_matching(&mut stream, |f| matches!(f, WatchFrame::Event { .. })).await;
    assert!(matches!(
        deleted,
        WatchFrame::Event {
            event_type: EventType::Deleted,
            ..
        }
    ));
    let only_b = wire::digest::content_digest([("apps", "b", rv_b.as_str())]);
    let bookmark = next_matching(
        &mut stream,
        |f| matches!(f, WatchFrame::Bookmark { digest: Some(d), .. } if *d == only_b),
    )
    .await;
    let WatchFrame::Bookmark {
        resource_version, ..
    } = bookmark
    else {
        unreachable!()
    };
    assert_eq!(resource_version, api.resource_version().to_string());
}

#[tokio::test]
async fn gone_arrives_as_a_frame_and_ends_the_stream() {
    let api = TestApi::start().await;
    let c = holding(&api, &[("a", "shop")]);
    // An ERROR line with a 410 Status (what kube-apiserver sends).
    api.faults().fail_next(FailOn::Watch, 410, 1);
    let mut stream = c.watch("1", Duration::from_secs(30)).await.unwrap();
    let mut frames = Vec::new();
    let state = tokio::time::timeout(WAIT, stream.next_batch(&mut frames))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (frames.as_slice(), state),
        (&[WatchFrame::Gone][..], WatchState::Ended)
    );
    frames.clear();
    assert_eq!(
        stream.next_batch(&mut frames).await.unwrap(),
        WatchState::Ended
    );
    assert!(frames.is_empty());

    // Other watch failures are errors.
    api.faults().fail_next(FailOn::Watch, 500, 1);
    match c.watch("1", Duration::from_secs(30)).await {
        Err(Error::Status { status, .. }) => assert_eq!(status, 500),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_silent_watch_is_reported_stalled_after_its_bound() {
    let api = TestApi::start().await;
    let c = holding(&api, &[("a", "shop")]);
    let timeout = Duration::from_secs(1);
    // A stalled watch stands for a black-holed connection: headers, then
    // nothing, not even its end at the timeout.
    api.faults().set_stall_watches(true);
    let started = tokio::time::Instant::now();
    let mut stream = c.watch("1", timeout).await.unwrap();
    let mut frames = Vec::new();
    let err = tokio::time::timeout(kubewatch::stall_bound(timeout) + WAIT, async {
        loop {
            match stream.next_batch(&mut frames).await {
                Ok(WatchState::Open) => frames.clear(),
                Ok(WatchState::Ended) => panic!("a stalled watch does not end"),
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("the stall was detected");
    assert!(matches!(err, Error::Stalled { .. }), "{err}");
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_metadata_list_holds_only_metadata_and_single_objects_are_fetched_by_name() {
    let api = TestApi::start().await;
    let c = holding(&api, &[("a", "x"), ("b", "y")]);
    let meta = listed(
        &c,
        &ListParams {
            metadata_only: true,
            ..from_cache()
        },
    )
    .await;
    assert!(meta.metadata_only);
    assert_eq!(names(&meta), ["a", "b"]);
    for item in &meta.items {
        let o: Value = serde_json::from_slice(item).unwrap();
        assert_eq!(o["kind"], "PartialObjectMetadata");
        assert_eq!(o["apiVersion"], "meta.k8s.io/v1");
        assert!(o.get("spec").is_none(), "{o}");
        assert!(o["metadata"]["resourceVersion"].is_string());
    }
    // The same digest as the full list: names and versions are all it needs.
    let full = listed(&c, &from_cache()).await;
    assert!(!full.metadata_only);
    assert_eq!(digest_of(&meta), digest_of(&full));

    let a = c.get_object("apps", "a").await.unwrap().expect("a exists");
    let a: Value = serde_json::from_slice(&a).unwrap();
    assert_eq!(a["spec"]["hosts"][0], "a.example.com");
    assert!(c.get_object("apps", "nope").await.unwrap().is_none());
    // From a namespaced collection too.
    let ns = Collection::new(
        api.client(),
        "/apis/http.keda.sh/v1alpha1/namespaces/apps/httpscaledobjects",
    );
    assert!(ns.get_object("ignored", "b").await.unwrap().is_some());
}
