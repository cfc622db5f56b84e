//! A list response as the client decodes it, its items reconciled into an
//! index as the sync loop does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync::{JsonObject, ObjectKind, ResourceVersion, RouteIndex};

fuzz_target!(|data: &[u8]| {
    let Ok(list) = serde_json::from_slice::<wire::ListBody<'_>>(data) else {
        return;
    };
    let rv = list.metadata.resource_version.clone().map(ResourceVersion::new);
    for kind in ObjectKind::ALL {
        let items: Vec<JsonObject> = list
            .items
            .iter()
            .map(|i| JsonObject::new(i.get().as_bytes().to_vec()))
            .collect();
        let mut index = RouteIndex::new();
        let _ = index.stale(kind, &items, rv.as_ref());
        let _ = index.reconcile(kind, items, rv.clone());
        // A second identical list changes nothing.
        let again: Vec<JsonObject> = list
            .items
            .iter()
            .map(|i| JsonObject::new(i.get().as_bytes().to_vec()))
            .collect();
        let second = index.reconcile(kind, again, rv.clone());
        // (A list naming one object twice flips between its versions; no
        // server sends one.)
        let mut keys: Vec<_> = list
            .items
            .iter()
            .filter_map(|i| JsonObject::new(i.get().as_bytes().to_vec()).key(kind).ok())
            .map(|(k, _)| k)
            .collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        if keys.len() == n {
            assert_eq!(second.changes, 0, "a repeated list changed the index");
        }
    }
});
