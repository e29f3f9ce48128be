//! Arbitrary bytes as an input line: the decoder returns an event or an error, never panics,
//! and in line mode never reads past the end of the line.
#![no_main]

use kairos::event::{Event, JsonDecoder, TimeUnit};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fields = vec![
        vec!["ts".to_string()],
        vec!["a".to_string()],
        vec!["a".to_string(), "b".to_string()],
        vec!["s".to_string()],
    ];
    let dec = JsonDecoder::new(&fields, Some(0), TimeUnit::Millis);
    let mut ev = Event::with_slots(fields.len());
    let _ = dec.decode(data, 0, &mut ev);
    // Line mode must stop within the input and never past a newline.
    if let Ok((len, _)) = dec.decode_line(data, 0, &mut ev) {
        assert!(len <= data.len());
        assert!(!data[..len].contains(&b'\n'));
    }
});
