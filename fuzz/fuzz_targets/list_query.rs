//! What a list/watch server parses from a request: the path, the query
//! string, label and field selectors, `If-None-Match` digests and the
//! metadata-only `Accept` form.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = listwatch::ListWatchQuery::parse(Some(s));
    let _ = listwatch::LabelSelector::parse(s);
    let _ = listwatch::FieldSelector::parse(s);
    let _ = listwatch::parse_path(s);
    let _ = wire::accepts_metadata_list(s);
    if let Some(d) = wire::digest::from_if_none_match(s) {
        // A digest read from a header is one we could have written.
        assert_eq!(
            wire::digest::from_if_none_match(&wire::digest::entity_tag(d)),
            Some(d)
        );
    }
});
