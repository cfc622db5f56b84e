//! A watch response body, line by line, as the client parses it, and each
//! event's object as the sync loop reads its head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync::{JsonObject, ObjectKind};

fuzz_target!(|data: &[u8]| {
    let (frames, _end) = kubewatch::parse_watch_body(data);
    for frame in frames {
        if let kubewatch::WatchFrame::Event { object, .. } = frame {
            let o = JsonObject::new(object);
            for kind in ObjectKind::ALL {
                let _ = o.key(kind);
            }
        }
    }
});
