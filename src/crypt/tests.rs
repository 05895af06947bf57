use std::process::Command;
use std::sync::Arc;

use lomob_backends::source::ByteSource;
use proptest::prelude::*;

use super::*;
use crate::archive::MemorySource;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn keypair() -> (Identity, Recipient) {
    let id = generate_identity();
    let r = id.to_recipient();
    (id, r)
}

#[test]
fn keys_round_trip_through_their_text() {
    let (id, r) = keypair();
    let text = r.to_string();
    assert!(text.starts_with("age1") && text.len() == 62, "{text}");
    assert_eq!(text.parse::<Recipient>().unwrap(), r);
    let secret = id.expose_secret();
    assert!(secret.starts_with("AGE-SECRET-KEY-1") && secret.len() == 74);
    let parsed =
        parse_identity_file(format!("# c\n\n{secret}\n").as_bytes(), &mut || None).unwrap();
    assert_eq!(parsed[0].to_recipient(), r);
    assert!(!format!("{id:?}").contains(&secret[16..]));
    assert!(secret
        .parse::<Recipient>()
        .unwrap_err()
        .contains("secret identity"));
    assert!(parse_identity_file(b"age1nope\n", &mut || None).is_err());
}

#[test]
fn bytes_round_trip_for_every_recipient_and_refuse_strangers() {
    let (a, ra) = keypair();
    let (b, rb) = keypair();
    let (c, _) = keypair();
    for n in [0, 1, 65535, 65536, 65537, 3 * 65536, 200_000] {
        let plain = pattern(n);
        let cipher = encrypt_bytes(&[ra, rb], &plain);
        assert!(is_age(&cipher));
        let (h, _) = parse_header(&cipher).unwrap();
        assert_eq!(cipher.len() as u64, ciphertext_len(n as u64, h.len));
        assert_eq!(
            decrypt_bytes(std::slice::from_ref(&a), &cipher).unwrap(),
            plain
        );
        assert_eq!(
            decrypt_bytes(std::slice::from_ref(&b), &cipher).unwrap(),
            plain
        );
        assert_eq!(
            decrypt_bytes(std::slice::from_ref(&c), &cipher).unwrap_err(),
            DecryptError::Header(HeaderError::NoMatchingIdentity)
        );
    }
}

#[test]
fn tampering_and_truncation_are_integrity_errors() {
    let (a, ra) = keypair();
    let plain = pattern(3 * 65536 + 10);
    let cipher = encrypt_bytes(&[ra], &plain);
    let (h, _) = parse_header(&cipher).unwrap();
    // A flipped byte in each chunk, in the header's MAC input, and cuts at chunk borders.
    for at in [
        h.len as usize + 5,
        h.len as usize + 65552 * 2 + 1,
        cipher.len() - 1,
    ] {
        let mut bad = cipher.clone();
        bad[at] ^= 1;
        assert!(matches!(
            decrypt_bytes(std::slice::from_ref(&a), &bad),
            Err(DecryptError::Integrity(_))
        ));
    }
    let mut bad = cipher.clone();
    bad[30] ^= 1;
    assert!(decrypt_bytes(std::slice::from_ref(&a), &bad).is_err());
    for cut in [
        h.len as usize + 65552,
        h.len as usize + 2 * 65552,
        cipher.len() - 1,
    ] {
        assert!(
            decrypt_bytes(std::slice::from_ref(&a), &cipher[..cut]).is_err(),
            "cut {cut}"
        );
    }
    let mut long = cipher.clone();
    long.push(0);
    assert!(decrypt_bytes(std::slice::from_ref(&a), &long).is_err());
}

#[test]
fn passphrase_protected_identity_files_open_with_the_passphrase_only() {
    let (id, r) = keypair();
    let text = format!("{}\n", id.expose_secret());
    let sealed = passphrase_protect(text.as_bytes(), b"correct horse", 10);
    let got = parse_identity_file(&sealed, &mut || Some(b"correct horse".to_vec())).unwrap();
    assert_eq!(got[0].to_recipient(), r);
    assert!(matches!(
        parse_identity_file(&sealed, &mut || Some(b"wrong".to_vec())),
        Err(IdentityFileError::Encrypted(HeaderError::BadPassphrase))
    ));
    assert!(matches!(
        parse_identity_file(&sealed, &mut || None),
        Err(IdentityFileError::NeedsPassphrase)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Any range of any object decrypts from exactly the chunks `chunk_span` names, and
    /// regenerating the ciphertext from any offset gives the same bytes.
    #[test]
    fn ranges_map_onto_their_chunks(n in 0usize..300_000, a in 0usize..300_000, len in 1usize..150_000, piece in 1usize..140_000) {
        let (id, r) = keypair();
        let plain = pattern(n);
        let file_key = [7u8; 16];
        let nonce = [9u8; 16];
        let head = write_header(&[r], &file_key, &nonce);
        let src = EncryptingSource::new(Arc::new(MemorySource(plain.clone())), head, PayloadKey::derive(&file_key, &nonce));
        let cipher = src.to_vec().unwrap();
        let off = (a % (cipher.len() + 1)) as u64;
        let mut tail = Vec::new();
        std::io::Read::read_to_end(&mut src.open_at(off).unwrap(), &mut tail).unwrap();
        prop_assert_eq!(&tail[..], &cipher[off as usize..]);
        if n > 0 {
            let start = (a % n) as u64;
            let end = (start + len as u64).min(n as u64);
            let (span, first, skip) = chunk_span(start..end, n as u64, src.head_len());
            prop_assert!(span.end - span.start <= (end - start) + 2 * (CHUNK + 16));
            let (h, _) = parse_header(&cipher).unwrap();
            let key = h.unwrap_with(&[id]).unwrap();
            let got = decrypt_chunks(&key, first, n as u64, &cipher[span.start as usize..span.end as usize]).unwrap();
            let got = &got[skip as usize..skip as usize + (end - start) as usize];
            prop_assert_eq!(got, &plain[start as usize..end as usize]);
            // The same chunks arriving in pieces of any size (a streamed read).
            let mut dec = RangeDecryptor::new(key.clone(), first, n as u64);
            let mut streamed = Vec::new();
            for p in cipher[span.start as usize..span.end as usize].chunks(piece) {
                dec.update(p, &mut streamed).unwrap();
            }
            prop_assert_eq!(&streamed[skip as usize..skip as usize + (end - start) as usize], &plain[start as usize..end as usize]);
        }
    }
}

/// The stock `age` tool, where installed (the test script installs it; with
/// `LOMOB_REQUIRE_SERVICES` set its absence fails the test).
fn age_tool() -> Option<()> {
    let found = Command::new("age").arg("--version").output().is_ok();
    if !found && std::env::var_os("LOMOB_REQUIRE_SERVICES").is_some() {
        panic!("the `age` command is required (apt-get install age)");
    }
    found.then_some(())
}

#[test]
fn the_age_tool_reads_ours_and_we_read_its() {
    if age_tool().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (id, r) = keypair();
    let (recovery, rr) = keypair();
    let plain = pattern(150_000);
    let cipher = encrypt_bytes(&[r, rr], &plain);
    std::fs::write(dir.path().join("obj.age"), &cipher).unwrap();
    for (name, who) in [("primary", &id), ("recovery", &recovery)] {
        let keyfile = dir.path().join(name);
        std::fs::write(&keyfile, format!("{}\n", who.expose_secret())).unwrap();
        let out = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&keyfile)
            .arg(dir.path().join("obj.age"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, plain);
    }
    // And the other way: age-keygen's identity and age's ciphertext.
    let keyfile = dir.path().join("gen");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&keyfile)
        .output()
        .unwrap();
    assert!(out.status.success());
    let ids = parse_identity_file(&std::fs::read(&keyfile).unwrap(), &mut || None).unwrap();
    std::fs::write(dir.path().join("plain"), &plain).unwrap();
    let out = Command::new("age")
        .arg("-r")
        .arg(ids[0].to_recipient().to_string())
        .arg(dir.path().join("plain"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(decrypt_bytes(&ids, &out.stdout).unwrap(), plain);
}
