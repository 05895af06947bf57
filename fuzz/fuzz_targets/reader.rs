//! Fuzz target: the ISO reader must never panic, hang or allocate without bound on arbitrary
//! bytes. Runs open + entries + read_file + catalog on a Cursor.
//!
//! The input is the image from sector 16 on: the 32 KiB system area before it, which the
//! reader never looks at, is prepended as zeros. Without this the fuzzer had to grow an
//! input past 32 KiB before reaching the first descriptor, and never did (coverage stayed
//! at the size check). fuzz/seeds/reader holds an image made by lomob, cut the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Cursor;

use lomob::iso::IsoImage;

const SYSTEM_AREA: usize = 16 * 2048;

fuzz_target!(|data: &[u8]| {
    let mut image = vec![0u8; SYSTEM_AREA];
    image.extend_from_slice(data);
    if let Ok(mut iso) = IsoImage::open(Cursor::new(image)) {
        if let Ok(entries) = iso.entries() {
            for e in entries.iter().take(64) {
                let _ = iso.read_file(e, &mut std::io::sink());
            }
        }
        let _ = iso.catalog();
    }
});
