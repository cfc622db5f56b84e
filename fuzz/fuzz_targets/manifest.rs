//! A routing object (JSON or YAML, either kind) through every path a
//! source takes it: typed parse + validation + compile from a `Value`, from
//! JSON text (the watch path, `sync::JsonObject`), and into an index.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sync::{JsonObject, ObjectKind, RouteIndex, SourceObject};

fuzz_target!(|data: &[u8]| {
    let mut values = Vec::new();
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        values.push(v);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(v) = api::yaml::from_str::<Value>(text)
    {
        values.push(v);
    }
    for kind in ObjectKind::ALL {
        // The watch path: JSON text, head first, typed parse only if new.
        let text = JsonObject::new(data.to_vec());
        let from_text = text.identify(kind).is_ok();
        let _ = JsonObject::new(data.to_vec()).compile(kind);
        for v in &values {
            // A parsed value and its own text identify alike.
            let json = serde_json::to_vec(v).unwrap();
            assert_eq!(
                v.identify(kind).is_ok(),
                JsonObject::new(json).identify(kind).is_ok(),
                "identity of {v}"
            );
            let mut index = RouteIndex::new();
            let _ = index.apply(kind, v.clone());
            for route in index.table().routes() {
                for rule in route.rules() {
                    for host in rule.hosts() {
                        let _ = index.table().lookup(&host.to_string(), "/", &routing::NoHeaders);
                    }
                }
            }
        }
        let _ = from_text;
    }
});
