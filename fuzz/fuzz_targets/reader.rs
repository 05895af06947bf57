//! Fuzz target: the ISO reader must never panic, hang or allocate without bound on arbitrary
//! bytes. Runs open + entries + read_file + catalog on a Cursor.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Cursor;

use lomob::iso::IsoImage;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut iso) = IsoImage::open(Cursor::new(data.to_vec())) {
        if let Ok(entries) = iso.entries() {
            for e in entries.iter().take(64) {
                let _ = iso.read_file(e, &mut std::io::sink());
            }
        }
        let _ = iso.catalog();
    }
});
