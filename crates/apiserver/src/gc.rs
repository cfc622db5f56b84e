//! Garbage collection by owner references, as kube-controller-manager's
//! garbage collector does it in the background: an object whose owners
//! (`metadata.ownerReferences`, by uid) are all gone is deleted (its own
//! finalizers honoured); one that lost only some of them loses those
//! references. An object whose reference was removed (orphaned) survives.

use std::collections::HashSet;

use listwatch::Store;
use serde_json::Value;

use crate::objects::{self, Target};
use crate::server::Core;

fn owner_uids(obj: &Value) -> Vec<&str> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `obj` names an owner.
pub(crate) fn has_owners(obj: &Value) -> bool {
    !owner_uids(obj).is_empty()
}

/// Collects until nothing more is collectable (a chain of owners goes in
/// one call). Called with the write lock held (`rv`).
pub(crate) fn collect(shared: &Core, rv: &mut u64) {
    loop {
        let stores = shared.stores.all();
        let mut live: HashSet<String> = HashSet::new();
        let mut dependents: Vec<(Store, Value)> = Vec::new();
        for store in &stores {
            for o in store.snapshot().iter() {
                let v = o.to_value();
                if let Some(uid) = v.pointer("/metadata/uid").and_then(Value::as_str) {
                    live.insert(uid.to_owned());
                }
                if has_owners(&v) {
                    dependents.push((store.clone(), v));
                }
            }
        }
        let mut changed = false;
        for (store, obj) in dependents {
            let owners = owner_uids(&obj);
            let kept: Vec<&str> = owners
                .iter()
                .copied()
                .filter(|u| live.contains(*u))
                .collect();
            if kept.len() == owners.len() {
                continue;
            }
            let Some(def) = shared.def(&store.resource().gvr) else {
                continue;
            };
            let ns = obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let result = if kept.is_empty() {
                if objects::is_terminating(&obj) {
                    continue; // already marked; its finalizers decide
                }
                objects::delete(&store, &def, &ns, &name, rv)
            } else {
                let refs: Vec<Value> = obj
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .map(|refs| {
                        refs.iter()
                            .filter(|r| {
                                r.get("uid")
                                    .and_then(Value::as_str)
                                    .is_some_and(|u| live.contains(u))
                            })
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                let mut new = obj.clone();
                new["metadata"]["ownerReferences"] = Value::Array(refs);
                if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                objects::update(&store, &def, &ns, &name, new, Target::Main, rv)
            };
            match result {
                Ok(_) => changed = true,
                Err(e) => tracing::debug!(object = %name, error = %e, "garbage collection failed"),
            }
        }
        if !changed {
            return;
        }
    }
}
