//! Store tests on a temporary folder: the rules the receiver promises its owner and senders.

use super::*;
use base64::engine::general_purpose::STANDARD as B64;
use futures::stream;
use md5::Md5;
use sha2::{Digest, Sha256};

fn body(data: &[u8]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin + Send {
    // Several chunks, so streaming (not one buffer) is what is tested.
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(chunks)
}

fn md5_b64(data: &[u8]) -> String {
    B64.encode(Md5::digest(data))
}

fn put_req(key: &str, data: &[u8]) -> PutRequest {
    PutRequest {
        key: key.into(),
        content_length: Some(data.len() as u64),
        declared: Declared {
            content_md5: Some(md5_b64(data)),
            ..Declared::default()
        },
        ..PutRequest::default()
    }
}

fn store() -> (tempfile::TempDir, ObjectStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = ObjectStore::open(dir.path()).unwrap();
    s.ensure_bucket("bkt").unwrap();
    (dir, s)
}

async fn read_all(s: &ObjectStore, key: &str, range: Option<ByteRange>) -> Vec<u8> {
    use futures::StreamExt;
    let mut r = s.get("bkt", key, range).await.unwrap();
    let mut out = Vec::new();
    while let Some(c) = r.stream.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

fn files_under(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[tokio::test]
async fn put_get_overwrite_delete() {
    let (dir, s) = store();
    let m = s
        .put(
            "bkt",
            put_req("meta/a", b"hello world"),
            body(b"hello world"),
        )
        .await
        .unwrap();
    assert_eq!(m.etag, hex::encode(Md5::digest(b"hello world")));
    assert_eq!(m.sha256, hex::encode(Sha256::digest(b"hello world")));
    assert_eq!(read_all(&s, "meta/a", None).await, b"hello world");
    assert_eq!(
        read_all(
            &s,
            "meta/a",
            Some(ByteRange::From {
                first: 6,
                last: None
            })
        )
        .await,
        b"world"
    );
    assert_eq!(
        read_all(
            &s,
            "meta/a",
            Some(ByteRange::From {
                first: 0,
                last: Some(4)
            })
        )
        .await,
        b"hello"
    );
    assert_eq!(
        read_all(&s, "meta/a", Some(ByteRange::Suffix(3))).await,
        b"rld"
    );
    assert!(matches!(
        s.get(
            "bkt",
            "meta/a",
            Some(ByteRange::From {
                first: 11,
                last: None
            })
        )
        .await,
        Err(StoreError::InvalidRange { .. })
    ));
    s.put("bkt", put_req("meta/a", b"bye"), body(b"bye"))
        .await
        .unwrap();
    assert_eq!(read_all(&s, "meta/a", None).await, b"bye");
    assert_eq!(
        s.usage("bkt"),
        Usage {
            bytes: 3,
            objects: 1,
            upload_bytes: 0
        }
    );
    // The replaced blob is gone: one blob for one object.
    assert_eq!(files_under(&dir.path().join("buckets/bkt/blobs")).len(), 1);
    // Reopening sees the same.
    let s2 = ObjectStore::open(dir.path()).unwrap();
    assert_eq!(s2.head("bkt", "meta/a").unwrap().size, 3);
    assert!(s.delete("bkt", "meta/a").await.unwrap());
    assert!(!s.delete("bkt", "meta/a").await.unwrap());
    assert!(matches!(
        s.head("bkt", "meta/a"),
        Err(StoreError::NoSuchKey { .. })
    ));
    assert_eq!(s.usage("bkt"), Usage::default());
    assert!(files_under(&dir.path().join("buckets/bkt/blobs")).is_empty());
    assert!(files_under(&dir.path().join("buckets/bkt/keys")).is_empty());
}

#[tokio::test]
async fn hostile_keys_stay_apart_and_refused_ones_write_nothing() {
    let (dir, s) = store();
    for key in [
        "a",
        "a/b",
        "..x/y",
        "c:\\d",
        "nul\0",
        "%61",
        &"é".repeat(300),
    ] {
        s.put("bkt", put_req(key, key.as_bytes()), body(key.as_bytes()))
            .await
            .unwrap();
    }
    for key in [
        "a",
        "a/b",
        "..x/y",
        "c:\\d",
        "nul\0",
        "%61",
        &"é".repeat(300),
    ] {
        assert_eq!(read_all(&s, key, None).await, key.as_bytes());
    }
    for bad in ["a/../b", "/a", "a//b", "", &"x".repeat(1025)] {
        let r = s.put("bkt", put_req(bad, b"x"), body(b"x")).await;
        assert!(matches!(r, Err(StoreError::InvalidKey { .. })), "{bad:?}");
    }
    let s2 = ObjectStore::open(dir.path()).unwrap();
    assert_eq!(s2.usage("bkt").objects, 7);
}

#[tokio::test]
async fn crash_leftovers_are_removed_at_open() {
    let (dir, s) = store();
    s.put("bkt", put_req("meta/keep", b"keep"), body(b"keep"))
        .await
        .unwrap();
    let b = dir.path().join("buckets/bkt");
    std::fs::write(b.join("blobs/deadbeef.tmp"), b"half").unwrap();
    std::fs::write(
        b.join("blobs/0123456789abcdef0123456789abcdef.blob"),
        b"orphan",
    )
    .unwrap();
    std::fs::write(b.join("keys/x.o.tmp-1234"), b"{").unwrap();
    drop(s);
    let s = ObjectStore::open(dir.path()).unwrap();
    assert_eq!(files_under(&b.join("blobs")).len(), 1);
    assert_eq!(files_under(&b.join("keys")).len(), 1);
    assert_eq!(read_all(&s, "meta/keep", None).await, b"keep");
}

#[tokio::test]
async fn quota_refusal_leaves_nothing() {
    let (dir, s) = store();
    let mut r = put_req("meta/big", &[0u8; 100]);
    r.quota = Some(50);
    assert!(matches!(
        s.put("bkt", r.clone(), body(&[0u8; 100])).await,
        Err(StoreError::QuotaExceeded { .. })
    ));
    // Without a length the check happens while streaming.
    r.content_length = None;
    assert!(matches!(
        s.put("bkt", r, body(&[0u8; 100])).await,
        Err(StoreError::QuotaExceeded { .. })
    ));
    assert!(files_under(&dir.path().join("buckets/bkt/blobs")).is_empty());
    assert_eq!(s.usage("bkt"), Usage::default());
    // An overwrite counts only its growth.
    let mut r = put_req("meta/x", &[1u8; 40]);
    r.quota = Some(50);
    s.put("bkt", r, body(&[1u8; 40])).await.unwrap();
    let mut r = put_req("meta/x", &[2u8; 45]);
    r.quota = Some(50);
    s.put("bkt", r, body(&[2u8; 45])).await.unwrap();
    assert_eq!(s.usage("bkt").bytes, 45);
}

#[tokio::test]
async fn digest_mismatch_and_missing_digest_leave_nothing() {
    let (dir, s) = store();
    let mut r = put_req("stage/a", b"good");
    let e = s.put("bkt", r.clone(), body(b"evil")).await.unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::BadDigest {
                header: "Content-MD5",
                ..
            }
        ),
        "{e}"
    );
    r.declared = Declared {
        meta_sha256: Some(hex::encode(Sha256::digest(b"good"))),
        ..Declared::default()
    };
    assert!(matches!(
        s.put("bkt", r.clone(), body(b"evil")).await,
        Err(StoreError::BadDigest { .. })
    ));
    r.declared = Declared::default();
    assert!(matches!(
        s.put("bkt", r.clone(), body(b"good")).await,
        Err(StoreError::DigestRequired { .. })
    ));
    assert!(files_under(&dir.path().join("buckets/bkt/blobs")).is_empty());
    // meta/ may go undeclared.
    r.key = "meta/a".into();
    s.put("bkt", r, body(b"good")).await.unwrap();
}

#[tokio::test]
async fn archive_is_append_only_but_identical_retry_succeeds() {
    let (_dir, s) = store();
    let first = s
        .put("bkt", put_req("archive/p1", b"image"), body(b"image"))
        .await
        .unwrap();
    let again = s
        .put("bkt", put_req("archive/p1", b"image"), body(b"image"))
        .await
        .unwrap();
    assert_eq!(first, again);
    let e = s
        .put("bkt", put_req("archive/p1", b"other"), body(b"other"))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::AppendOnly { .. }));
    assert!(e.to_string().contains("append-only"));
    assert!(matches!(
        s.delete("bkt", "archive/p1").await,
        Err(StoreError::AppendOnly { .. })
    ));
    assert_eq!(read_all(&s, "archive/p1", None).await, b"image");
    assert_eq!(s.usage("bkt").objects, 1);
}

#[tokio::test]
async fn multipart_complete_etag_and_resume() {
    let (dir, s) = store();
    let p1 = vec![1u8; 1000];
    let p2 = vec![2u8; 10];
    let whole: Vec<u8> = [p1.clone(), p2.clone()].concat();
    let meta = BTreeMap::from([("sha256".to_owned(), hex::encode(Sha256::digest(&whole)))]);
    let id = s
        .create_upload(
            "bkt",
            CreateUpload {
                key: "archive/big".into(),
                metadata: meta,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let d = |data: &[u8]| Declared {
        content_md5: Some(md5_b64(data)),
        ..Declared::default()
    };
    // A part without a digest, or with a wrong one, is refused.
    assert!(matches!(
        s.put_part(
            "bkt",
            "archive/big",
            &id,
            1,
            None,
            &Declared::default(),
            None,
            body(&p1)
        )
        .await,
        Err(StoreError::DigestRequired { .. })
    ));
    assert!(matches!(
        s.put_part("bkt", "archive/big", &id, 1, None, &d(&p2), None, body(&p1))
            .await,
        Err(StoreError::BadDigest { .. })
    ));
    let a = s
        .put_part(
            "bkt",
            "archive/big",
            &id,
            1,
            Some(1000),
            &d(&p1),
            None,
            body(&p1),
        )
        .await
        .unwrap();
    // Re-sending a part replaces it.
    let a = s
        .put_part(
            "bkt",
            "archive/big",
            &id,
            1,
            Some(1000),
            &d(&p1),
            None,
            body(&p1),
        )
        .await
        .unwrap_or(a);
    let b = s
        .put_part("bkt", "archive/big", &id, 2, None, &d(&p2), None, body(&p2))
        .await
        .unwrap();
    assert_eq!(s.usage("bkt").upload_bytes, 1010);
    // After a restart the parts and the upload are still listed.
    let s = ObjectStore::open(dir.path()).unwrap();
    let page = s.list_parts("bkt", "archive/big", &id, 0, 1).unwrap();
    assert!(page.truncated);
    assert_eq!(page.parts[0].etag, a.etag);
    let page = s.list_parts("bkt", "archive/big", &id, 1, 10).unwrap();
    assert_eq!(page.parts.len(), 1);
    assert!(!page.truncated);
    let ups = s.list_uploads("bkt", "archive/", None, None, 10).unwrap();
    assert_eq!(ups.uploads.len(), 1);
    // Wrong order and wrong ETag are refused, and the upload stays.
    let listed = vec![(2, b.etag.clone()), (1, a.etag.clone())];
    assert!(matches!(
        s.complete_upload("bkt", "archive/big", &id, &listed, None, None)
            .await,
        Err(StoreError::InvalidPartOrder { .. })
    ));
    let listed = vec![(1, a.etag.clone()), (2, "\"00\"".into())];
    assert!(matches!(
        s.complete_upload("bkt", "archive/big", &id, &listed, None, None)
            .await,
        Err(StoreError::InvalidPart { .. })
    ));
    // A wrong whole-object digest: BadDigest, parts kept.
    let listed = vec![(1, format!("\"{}\"", a.etag)), (2, b.etag.clone())];
    let wrong = hex::encode(Sha256::digest(b"nope"));
    assert!(matches!(
        s.complete_upload("bkt", "archive/big", &id, &listed, Some(&wrong), None)
            .await,
        Err(StoreError::BadDigest { .. })
    ));
    assert_eq!(
        s.list_parts("bkt", "archive/big", &id, 0, 10)
            .unwrap()
            .parts
            .len(),
        2
    );
    let m = s
        .complete_upload("bkt", "archive/big", &id, &listed, None, None)
        .await
        .unwrap();
    let mut md5s = Vec::new();
    md5s.extend_from_slice(&Md5::digest(&p1));
    md5s.extend_from_slice(&Md5::digest(&p2));
    assert_eq!(m.etag, format!("{}-2", hex::encode(Md5::digest(&md5s))));
    assert_eq!(m.sha256, hex::encode(Sha256::digest(&whole)));
    assert_eq!(read_all(&s, "archive/big", None).await, whole);
    assert_eq!(
        s.usage("bkt"),
        Usage {
            bytes: 1010,
            objects: 1,
            upload_bytes: 0
        }
    );
    assert!(s
        .list_uploads("bkt", "", None, None, 10)
        .unwrap()
        .uploads
        .is_empty());
    assert!(files_under(&dir.path().join("buckets/bkt/uploads")).is_empty());
    // Abort of another upload removes its parts.
    let id2 = s
        .create_upload(
            "bkt",
            CreateUpload {
                key: "stage/x".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    s.put_part("bkt", "stage/x", &id2, 1, None, &d(&p2), None, body(&p2))
        .await
        .unwrap();
    s.abort_upload("bkt", "stage/x", &id2).await.unwrap();
    assert_eq!(s.usage("bkt").upload_bytes, 0);
    assert!(matches!(
        s.list_parts("bkt", "stage/x", &id2, 0, 10),
        Err(StoreError::NoSuchUpload { .. })
    ));
}

#[tokio::test]
async fn listing_order_delimiter_and_paging() {
    let (_dir, s) = store();
    for key in ["b", "a/2", "a/1", "c/d/e", "a0", "c/x"] {
        s.put("bkt", put_req(key, b"x"), body(b"x")).await.unwrap();
    }
    let all = s
        .list(
            "bkt",
            &ListQuery {
                max: 1000,
                ..Default::default()
            },
        )
        .unwrap();
    let keys: Vec<_> = all.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["a/1", "a/2", "a0", "b", "c/d/e", "c/x"]);
    let q = ListQuery {
        delimiter: Some("/".into()),
        max: 1000,
        ..Default::default()
    };
    let page = s.list("bkt", &q).unwrap();
    assert_eq!(page.common_prefixes, ["a/", "c/"]);
    assert_eq!(
        page.objects
            .iter()
            .map(|o| o.key.as_str())
            .collect::<Vec<_>>(),
        ["a0", "b"]
    );
    // Pages of one, resuming after a common prefix skips everything under it.
    let mut q = ListQuery {
        delimiter: Some("/".into()),
        max: 1,
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let p = s.list("bkt", &q).unwrap();
        seen.extend(p.common_prefixes.iter().cloned());
        seen.extend(p.objects.iter().map(|o| o.key.clone()));
        if !p.truncated {
            break;
        }
        q.after = p.next_after;
    }
    assert_eq!(seen, ["a/", "a0", "b", "c/"]);
    let q = ListQuery {
        prefix: "c/".into(),
        delimiter: Some("/".into()),
        max: 1000,
        ..Default::default()
    };
    let page = s.list("bkt", &q).unwrap();
    assert_eq!(page.common_prefixes, ["c/d/"]);
    assert_eq!(page.objects[0].key, "c/x");
}

#[tokio::test]
async fn parts_of_a_declared_size_are_written_in_place_and_checked_at_complete() {
    let (dir, s) = store();
    let (p1, p2, p3) = (vec![1u8; 8], vec![2u8; 8], vec![3u8; 3]);
    let whole: Vec<u8> = [p1.clone(), p2.clone(), p3.clone()].concat();
    let id = s
        .create_upload(
            "bkt",
            CreateUpload {
                key: "archive/img".into(),
                metadata: BTreeMap::from([("part-size".to_owned(), "8".to_owned())]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let d = |data: &[u8]| Declared {
        content_md5: Some(md5_b64(data)),
        ..Declared::default()
    };
    let put = |n: u32, data: Vec<u8>| {
        let s = &s;
        let id = id.clone();
        async move {
            s.put_part(
                "bkt",
                "archive/img",
                &id,
                n,
                None,
                &d(&data),
                None,
                body(&data),
            )
            .await
        }
    };
    // Out of order, one part sent twice (first with other bytes), one too large.
    let c = put(3, p3.clone()).await.unwrap();
    put(1, vec![9u8; 8]).await.unwrap();
    let a = put(1, p1.clone()).await.unwrap();
    assert!(matches!(
        put(2, vec![2u8; 9]).await,
        Err(StoreError::InvalidPart { .. })
    ));
    let b = put(2, p2.clone()).await.unwrap();
    assert_eq!(s.usage("bkt").upload_bytes, 19);
    // Parts not at their places (1 and 3 without 2) are refused.
    assert!(matches!(
        s.complete_upload(
            "bkt",
            "archive/img",
            &id,
            &[(1, a.etag.clone()), (3, c.etag.clone())],
            None,
            None
        )
        .await,
        Err(StoreError::InvalidPart { .. })
    ));
    // A part's bytes damaged in the data file are found when no whole digest is declared.
    let data = dir
        .path()
        .join("buckets/bkt/uploads")
        .join(&id)
        .join("inplace.bin");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[9] ^= 1;
    std::fs::write(&data, &bytes).unwrap();
    let listed = vec![
        (1, a.etag.clone()),
        (2, b.etag.clone()),
        (3, c.etag.clone()),
    ];
    assert!(s
        .complete_upload("bkt", "archive/img", &id, &listed, None, None)
        .await
        .is_err());
    bytes[9] ^= 1;
    std::fs::write(&data, &bytes).unwrap();
    // A wrong whole digest: refused, nothing moved, the parts stay.
    let wrong = hex::encode(Sha256::digest(b"nope"));
    assert!(matches!(
        s.complete_upload("bkt", "archive/img", &id, &listed, Some(&wrong), None)
            .await,
        Err(StoreError::BadDigest { .. })
    ));
    assert!(data.is_file());
    let right = hex::encode(Sha256::digest(&whole));
    let m = s
        .complete_upload("bkt", "archive/img", &id, &listed, Some(&right), None)
        .await
        .unwrap();
    let mut md5s = Vec::new();
    for p in [&p1, &p2, &p3] {
        md5s.extend_from_slice(&Md5::digest(p));
    }
    assert_eq!(m.etag, format!("{}-3", hex::encode(Md5::digest(&md5s))));
    assert_eq!(m.size, 19);
    assert_eq!(read_all(&s, "archive/img", None).await, whole);
    assert_eq!(s.usage("bkt").upload_bytes, 0);
    assert!(files_under(&dir.path().join("buckets/bkt/uploads")).is_empty());
    // And it survives a restart.
    let s = ObjectStore::open(dir.path()).unwrap();
    assert_eq!(read_all(&s, "archive/img", None).await, whole);
}
