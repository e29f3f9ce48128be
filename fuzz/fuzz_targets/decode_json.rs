//! Arbitrary bytes as input lines: the decoder returns an event or an error, never panics, and
//! in line mode never reads past the end of the line. The lines go through one decoder, so that
//! the keys it learns from earlier lines are checked against the later ones.
#![no_main]

use kairos::event::{Event, JsonDecoder, TimeUnit};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fields: Vec<Vec<String>> = ["ts", "a", "a.b", "s", "user_id", "abcdefghijklmn"]
        .iter()
        .map(|p| p.split('.').map(str::to_string).collect())
        .collect();
    let dec = JsonDecoder::new(&fields, Some(0), TimeUnit::Millis);
    let mut ev = Event::with_slots(fields.len());
    let _ = dec.decode(data, 0, &mut ev);
    // Line mode must stop within the input and never past a newline.
    let mut rest = data;
    while !rest.is_empty() {
        let end = match dec.decode_line(rest, 0, &mut ev) {
            Ok((len, _)) => {
                assert!(len <= rest.len());
                assert!(!rest[..len].contains(&b'\n'));
                len
            }
            Err(_) => rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len()),
        };
        rest = rest.get(end + 1..).unwrap_or(&[]);
    }
});
