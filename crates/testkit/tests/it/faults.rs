//! Every fault, observed through a kube-rs client.

use std::time::{Duration, Instant};
use testkit::StartTestApi;

use futures::{StreamExt, TryStreamExt};
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use testkit::{FailOn, TestApi, Verb};

use crate::common::*;

#[tokio::test]
async fn delayed_list_delays_init_done() {
    let api = TestApi::start().await;
    let delay = Duration::from_millis(700);
    api.faults().set_list_delay(delay);
    let started = Instant::now();
    let mut w = Watch::new(hso_api(&api), watcher::Config::default());
    w.initial().await;
    assert!(
        started.elapsed() >= delay,
        "InitDone after {:?}",
        started.elapsed()
    );

    api.faults().clear();
    let started = Instant::now();
    hso_api(&api).list(&ListParams::default()).await.unwrap();
    assert!(started.elapsed() < delay);
}

/// Reads raw watch events until a BOOKMARK at or past `rv`, returning the
/// names of the objects in ADDED/MODIFIED/DELETED events before it.
async fn names_until_bookmark(
    stream: &mut (
             impl futures::Stream<Item = kube::Result<WatchEvent<kube::api::DynamicObject>>> + Unpin
         ),
    rv: u64,
) -> Vec<String> {
    let mut names = Vec::new();
    within("a bookmark", async {
        loop {
            match stream.try_next().await.unwrap().expect("stream open") {
                WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
                    names.push(o.metadata.name.unwrap_or_default())
                }
                WatchEvent::Bookmark(b) => {
                    if b.metadata.resource_version.parse::<u64>().unwrap() >= rv {
                        return;
                    }
                }
                WatchEvent::Error(e) => panic!("{e:?}"),
            }
        }
    })
    .await;
    names
}

fn rv_of(o: &kube::api::DynamicObject) -> u64 {
    o.metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

/// A server with bookmarks every 50 ms, and its HTTPScaledObjects.
async fn bookmarking_api() -> (TestApi, kube::Api<kube::api::DynamicObject>) {
    let api = TestApi::builder()
        .bookmark_interval(Duration::from_millis(50))
        .started()
        .await;
    let hsos = hso_api(&api);
    (api, hsos)
}

/// Creates the HTTPScaledObject `name`; returns its resourceVersion.
async fn create(hsos: &kube::Api<kube::api::DynamicObject>, name: &str) -> u64 {
    let host = format!("{name}.example.com");
    let o = hsos
        .create(&PostParams::default(), &hso(name, &host))
        .await
        .unwrap();
    rv_of(&o)
}

#[tokio::test]
async fn dropped_events_are_not_seen() {
    let (api, hsos) = bookmarking_api().await;
    let list = hsos.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut stream = hsos
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();

    api.faults().set_drop_watch_events(1.0);
    let dropped = create(&hsos, "dropped").await;
    // A bookmark past the write proves the watcher handled (and dropped) it.
    let seen = names_until_bookmark(&mut stream, dropped).await;
    assert!(seen.is_empty(), "saw {seen:?}");

    api.faults().set_drop_watch_events(0.0);
    let kept = create(&hsos, "kept").await;
    let seen = names_until_bookmark(&mut stream, kept).await;
    assert_eq!(seen, ["kept"]);

    // A fraction drops some and keeps some (per watcher, per event).
    api.faults().set_drop_watch_events(0.5);
    let mut last = 0;
    for i in 0..200 {
        last = create(&hsos, &format!("f{i}")).await;
    }
    let seen = names_until_bookmark(&mut stream, last).await.len();
    assert!(seen > 20 && seen < 180, "kept {seen} of 200");
}

#[tokio::test]
async fn stalled_watch_sends_nothing() {
    let (api, hsos) = bookmarking_api().await;
    let mut stream = hsos
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    // Alive: bookmarks arrive every 50 ms.
    within("a bookmark", stream.next()).await.unwrap().unwrap();

    api.faults().set_stall_watches(true);
    // Let the watcher finish anything it was sending before the stall.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), stream.next()).await {}
    create(&hsos, "x").await;
    // Twenty bookmark intervals without a byte, and the connection stays open.
    let got = tokio::time::timeout(Duration::from_secs(1), stream.next()).await;
    assert!(got.is_err(), "a stalled watch sent {got:?}");
    assert_eq!(api.stats().open_watches, 1);

    api.faults().set_stall_watches(false);
    create(&hsos, "y").await;
    loop {
        match within("an event after the stall", stream.try_next())
            .await
            .unwrap()
        {
            Some(WatchEvent::Added(o)) => {
                assert_eq!(
                    o.metadata.name.as_deref(),
                    Some("y"),
                    "x was lost in the stall"
                );
                break;
            }
            Some(WatchEvent::Bookmark(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn closed_watches_reconnect_and_continue() {
    let api = TestApi::start().await;
    let hsos = hso_api(&api);
    let mut w = Watch::new(hsos.clone(), watcher::Config::default());
    w.initial().await;
    // Pull events in the background so the watcher reconnects on its own.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let e = w.next().await;
            if tx.send(e).is_err() {
                break;
            }
        }
    });
    eventually("the first watch", || api.stats().open_watches == 1).await;
    assert_eq!(api.stats().requests(Verb::Watch, "httpscaledobjects"), 1);

    api.faults().close_watches();
    eventually("a second watch", || {
        let s = api.stats();
        s.requests(Verb::Watch, "httpscaledobjects") == 2 && s.open_watches == 1
    })
    .await;
    hsos.create(&PostParams::default(), &hso("after", "a.example.com"))
        .await
        .unwrap();
    match within("the event after reconnecting", rx.recv())
        .await
        .unwrap()
    {
        watcher::Event::Apply(o) => assert_eq!(o.metadata.name.as_deref(), Some("after")),
        other => panic!("{other:?}"),
    }
    // Resumed from its resourceVersion, no relist.
    assert_eq!(api.stats().requests(Verb::List, "httpscaledobjects"), 1);
    task.abort();
}

/// 410 / 429 / 500 on lists and on watches: the kube-rs watcher reports the
/// error and recovers once the fault is cleared.
#[tokio::test]
async fn injected_errors_are_seen_and_recovered_from() {
    for on in [FailOn::List, FailOn::Watch] {
        for code in [410u16, 429, 500] {
            let api = TestApi::start().await;
            // kube's client retries 429 by itself (see below); without that
            // layer the watcher reports every injected error.
            let mut config = kube::Config::new(api.url().parse().unwrap());
            config.default_retry = false;
            let client = kube::Client::try_from(config).unwrap();
            let hsos: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
                client,
                "default",
                &testkit::httpscaledobject_resource(),
            );
            create(&hsos, "a").await;
            let mut w = Watch::new(hsos.clone(), watcher::Config::default());
            if on == FailOn::List {
                api.faults().fail_all(on, code);
                // The watcher emits Init before each list attempt; no
                // object arrives while lists fail.
                let quiet = async {
                    loop {
                        match w.next().await {
                            watcher::Event::Init => {}
                            other => panic!("{on:?} {code}: listed despite the fault: {other:?}"),
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_millis(500), quiet).await;
                assert!(w.saw_code(code), "{on:?} {code}: {:?}", w.errors);
                api.faults().clear();
                let mut names = Vec::new();
                loop {
                    match w.next().await {
                        watcher::Event::InitApply(o) => names.push(o.metadata.name.unwrap()),
                        watcher::Event::InitDone => break,
                        watcher::Event::Init => names.clear(),
                        other => panic!("{other:?}"),
                    }
                }
                assert_eq!(names, ["a"], "{on:?} {code}");
            } else {
                assert_eq!(w.initial().await, ["a"]);
                api.faults().fail_next(on, code, 3);
                api.faults().close_watches();
                create(&hsos, "b").await;
                // Seen either as a watch event or in a relist (after 410).
                loop {
                    match w.next().await {
                        watcher::Event::Apply(o) | watcher::Event::InitApply(o)
                            if o.metadata.name.as_deref() == Some("b") =>
                        {
                            break;
                        }
                        _ => {}
                    }
                }
                assert!(w.saw_code(code), "{on:?} {code}: {:?}", w.errors);
            }
        }
    }
}

#[tokio::test]
async fn down_then_up_on_the_same_port_with_the_same_data() {
    let api = TestApi::start().await;
    let hsos = hso_api(&api);
    create(&hsos, "a").await;
    let before = hsos.list(&ListParams::default()).await.unwrap();
    let mut w = Watch::new(hsos.clone(), watcher::Config::default());
    w.initial().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            if tx.send(w.next().await).is_err() {
                break;
            }
        }
    });
    eventually("a watch", || api.stats().open_watches == 1).await;

    api.faults().go_down().await;
    let err = hsos.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::HyperError(_) | kube::Error::Service(_)),
        "{err:?}"
    );
    assert!(tokio::net::TcpStream::connect(api.addr()).await.is_err());
    eventually("watches dropped", || api.stats().open_watches == 0).await;

    api.faults().come_up().await.unwrap();
    let after = hsos.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(after.items.len(), 1);
    // The watcher reconnects by itself and continues.
    create(&hsos, "b").await;
    loop {
        match within("b after coming back", rx.recv()).await.unwrap() {
            watcher::Event::Apply(o) if o.metadata.name.as_deref() == Some("b") => break,
            _ => {}
        }
    }
    task.abort();
}

/// With kube's default client, a 429 is retried transparently (honouring
/// `Retry-After`): the server counts the failed attempt, the caller sees success.
#[tokio::test]
async fn default_client_retries_429() {
    let api = TestApi::start().await;
    api.faults().fail_next(FailOn::List, 429, 1);
    hso_api(&api).list(&ListParams::default()).await.unwrap();
    assert_eq!(api.stats().requests(Verb::List, "httpscaledobjects"), 2);
}
