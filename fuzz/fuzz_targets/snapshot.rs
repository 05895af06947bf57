//! Fuzz target: the snapshot importer must never panic, hang or allocate without bound on
//! arbitrary bytes (a snapshot may be downloaded from a site someone else can write to).
//! Runs the parse and checks of `lomob manifest import`; an input they accept is imported
//! into a fresh manifest, which must succeed.
#![no_main]

use libfuzzer_sys::fuzz_target;

use lomob::manifest::export::{check_bytes, import_file};
use lomob::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    if check_bytes(data).is_ok() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("snapshot.jsonl");
        std::fs::write(&file, data).unwrap();
        let m = Manifest::open(&dir.path().join("db")).unwrap();
        import_file(&m, &file).expect("what check_bytes accepts imports");
    }
});
