//! `/queue` answers as the scaler decodes them (`scaler::link::decode`),
//! in both forms: upstream's JSON and the compact delta form.
//!
//! - Any bytes, read as either form: no panic; a body that decodes is
//!   encoded again with `wire::queue` and must decode to the same value.
//! - Differential: a value built from the bytes (instance, epoch, routes
//!   with counts, removed routes) is encoded as the interceptor encodes it
//!   and must come back from the scaler's decode exactly (the plain form
//!   as Go's `encoding/json` reads a map: the last of two equal keys wins,
//!   and a negative concurrency reads as 0).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::arbitrary::{self, Unstructured};
use libfuzzer_sys::fuzz_target;
use wire::queue::{self, CompactQueue};

#[derive(Debug)]
struct Value {
    instance: u64,
    epoch: u64,
    full: bool,
    changed: Vec<(String, i64, u64)>,
    removed: Vec<String>,
}

fn value(u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    Ok(Value {
        instance: u.arbitrary()?,
        epoch: u.arbitrary()?,
        full: u.arbitrary()?,
        changed: u.arbitrary()?,
        removed: u.arbitrary()?,
    })
}

fuzz_target!(|data: &[u8]| {
    arbitrary_bodies(data);
    if let Ok(v) = value(&mut Unstructured::new(data)) {
        compact_round_trip(&v);
        plain_round_trip(&v);
    }
});

/// `data` as a body of either form.
fn arbitrary_bodies(data: &[u8]) {
    for compact in [false, true] {
        let _ = scaler::link::decode(data, compact);
    }
    if let Ok(q) = std::str::from_utf8(data).map(queue::parse_compact)
        && let Ok(q) = q
    {
        let (report, since) = scaler::link::decode(data, true).expect("parsed once, parses twice");
        assert_eq!(since, Some(q.since()));
        assert_eq!(report.changed().collect::<Vec<_>>(), q.changed);
        assert_eq!(report.removed().collect::<Vec<_>>(), q.removed);
        // What the encoder can carry comes back the same.
        let encodable = q.changed.iter().all(|e| queue::is_compact_key(e.0))
            && q.removed.iter().all(|k| queue::is_compact_key(k));
        if encodable {
            let again = q.encode();
            assert_eq!(queue::parse_compact(&again).as_ref(), Ok(&q), "{again:?}");
        }
    }
    if let Ok(entries) = queue::decode_plain(data) {
        let again = queue::encode_plain(entries.iter().map(|(k, c, n)| (k.as_ref(), *c, *n)));
        let back = queue::decode_plain(again.as_bytes()).expect("our own JSON decodes");
        assert_eq!(back, last_wins(entries.iter().map(|(k, c, n)| (k.as_ref(), *c, *n))));
    }
}

/// Encoded as the interceptor does, decoded as the scaler does.
fn compact_round_trip(v: &Value) {
    let changed: Vec<(&str, i64, u64)> = v
        .changed
        .iter()
        .filter(|e| queue::is_compact_key(&e.0))
        .map(|(k, c, n)| (k.as_str(), *c, *n))
        .collect();
    let removed: Vec<&str> = v
        .removed
        .iter()
        .map(String::as_str)
        .filter(|k| queue::is_compact_key(k))
        .collect();
    let body = queue::encode_compact(
        v.instance,
        v.epoch,
        v.full,
        changed.iter().copied(),
        removed.iter().copied(),
    );
    let want = CompactQueue {
        instance: v.instance,
        epoch: v.epoch,
        full: v.full,
        changed: changed.clone(),
        removed: removed.clone(),
    };
    assert_eq!(queue::parse_compact(&body).as_ref(), Ok(&want), "{body:?}");
    let (report, since) = scaler::link::decode(body.as_bytes(), true).expect("our own body decodes");
    assert_eq!(report.instance, Some(v.instance));
    assert_eq!(report.full, v.full);
    assert_eq!(since, Some(queue::format_since(v.instance, v.epoch)));
    assert_eq!(queue::parse_since(&since.unwrap()), Some((v.instance, v.epoch)));
    assert_eq!(report.changed().collect::<Vec<_>>(), changed);
    assert_eq!(report.removed().collect::<Vec<_>>(), removed);
}

fn plain_round_trip(v: &Value) {
    let entries = v.changed.iter().map(|(k, c, n)| (k.as_str(), *c, *n));
    let body = queue::encode_plain(entries.clone());
    let (report, since) = scaler::link::decode(body.as_bytes(), false).expect("our own JSON decodes");
    assert_eq!((report.instance, report.full, since), (None, true, None));
    let want: Vec<(std::borrow::Cow<'_, str>, i64, u64)> = last_wins(entries)
        .into_iter()
        .map(|(k, c, n)| (k, c.max(0), n))
        .collect();
    let got: Vec<(&str, i64, u64)> = report.changed().collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((g.0, g.1, g.2), (w.0.as_ref(), w.1, w.2));
    }
    assert_eq!(report.removed().count(), 0);
}

/// A map's entries in key order, the last of equal keys winning.
fn last_wins<'a>(
    entries: impl IntoIterator<Item = (&'a str, i64, u64)>,
) -> Vec<(std::borrow::Cow<'a, str>, i64, u64)> {
    let map: BTreeMap<&str, (i64, u64)> = entries.into_iter().map(|(k, c, n)| (k, (c, n))).collect();
    map.into_iter().map(|(k, (c, n))| (k.into(), c, n)).collect()
}
