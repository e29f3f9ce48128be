//! Arbitrary bytes as a table file: opening (checksum off, so that mutations reach the
//! structural checks) returns a table or an error, never panics, and every read of an opened
//! table (lookups that hit and miss, every column of every row, the full verification) stays
//! within the mapping.
#![no_main]

use kairos::event::Value;
use kairos::table::{ColumnType, OpenOptions, Table};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = OpenOptions {
        verify_checksum: false,
        ..OpenOptions::default()
    };
    let Ok(table) = Table::from_bytes(data, &opts) else {
        return;
    };
    let cols: Vec<_> = (0..table.schema().len())
        .filter_map(|i| table.column_at(i))
        .collect();
    let key = table.key_column();
    for row in table.rows().take(1024) {
        for &c in &cols {
            let _ = (
                row.int(c),
                row.float(c),
                row.str(c),
                row.bool(c),
                row.is_null(c),
            );
            let _ = row.value(c);
        }
        // Look every key up, so that the probe paths run on real hits as well as misses.
        match key.ty() {
            ColumnType::Int => {
                if let Some(k) = row.int(key) {
                    let _ = table.get_int(k).map(|r| r.index());
                    let _ = table.get(&Value::Float(k as f64));
                }
            }
            _ => {
                if let Some(k) = row.str(key) {
                    let _ = table.get_str(k).map(|r| r.index());
                }
            }
        }
    }
    for k in [0i64, 1, -1, i64::MIN, i64::MAX] {
        let _ = table.get_int(k);
    }
    for k in ["", "a", "key", "\u{e9}"] {
        let _ = table.get_str(k);
    }
    let _ = table.rows().count();
    let _ = table.verify();
});
