//! Go duration syntax (`1m30s`, `1.5h`, `300ms`) as every flag and
//! variable takes it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = api::parse_go_duration(s) {
        // Whole seconds and nanoseconds read back the same.
        let again = api::parse_go_duration(&format!("{}s{}ns", d.as_secs(), d.subsec_nanos()))
            .expect("a duration's own seconds and nanoseconds parse");
        assert_eq!(again, d, "{s}");
    }
});
