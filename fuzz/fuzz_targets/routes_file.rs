//! A file of the routes directory: the document splitter (multi-document
//! YAML, `kind: List`, JSON) with errors naming file and line.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for name in ["routes.yaml", "routes.json"] {
        match sync::dir_source::parse_file(Path::new(name), data) {
            Ok(objects) => {
                for o in objects {
                    assert!(o.is_object(), "a document that is not an object: {o}");
                }
            }
            Err(e) => assert_eq!(e.path, name),
        }
    }
});
