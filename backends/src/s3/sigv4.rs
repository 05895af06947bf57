//! AWS Signature Version 4 for the S3 requests OpenDAL does not make for us.
//!
//! Written here rather than borrowed from `reqsign` because reqsign's v3 signer wants a whole
//! credential-loading context, while we already hold the keys (from the profile) and need a
//! pure function we can test against AWS's published examples. The algorithm is the one in
//! AWS's "Signature Version 4 header-based authentication" page: a canonical request, a string
//! to sign, and an HMAC chain keyed by the secret.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

/// Characters S3 leaves as they are in a signed URI: `A-Z a-z 0-9 - _ . ~`.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// In a path, `/` separates segments and stays as it is.
const PATH: &AsciiSet = &QUERY.remove(b'/');

/// SHA-256 of the empty body, used for bodiless requests.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// The payload hash of a request whose body is not signed (streamed bodies).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// The keys that sign requests. `Debug` shows only the access key id's first characters.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Present for temporary (STS) credentials.
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.access_key_id.chars().take(4).collect();
        f.debug_struct("Credentials")
            .field("access_key_id", &format_args!("{shown}***"))
            .field("secret_access_key", &format_args!("***"))
            .field(
                "session_token",
                &format_args!(
                    "{}",
                    if self.session_token.is_some() {
                        "***"
                    } else {
                        "none"
                    }
                ),
            )
            .finish()
    }
}

/// Percent-encodes a path as S3 signs it (each segment encoded, `/` kept).
pub fn encode_path(path: &str) -> String {
    utf8_percent_encode(path, PATH).to_string()
}

/// Percent-encodes a query key or value.
pub fn encode_query(s: &str) -> String {
    utf8_percent_encode(s, QUERY).to_string()
}

/// Hex SHA-256 of a body.
pub fn sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// The query string in canonical form: pairs sorted, keys and values encoded, `k=` for a
/// bare key.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (encode_query(k), encode_query(v)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// What one request looks like to the signer.
pub struct SigningInput<'a> {
    pub method: &'a str,
    /// The path, already encoded with [`encode_path`].
    pub encoded_path: &'a str,
    /// Query pairs, not encoded.
    pub query: &'a [(String, String)],
    /// Every header to sign, including `host`, `x-amz-date` and `x-amz-content-sha256`.
    /// Names may be in any case.
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body (or `UNSIGNED-PAYLOAD`).
    pub payload_sha256: &'a str,
    /// `YYYYMMDDTHHMMSSZ`, the same value as the `x-amz-date` header.
    pub amz_date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// Returns the canonical request (exposed for tests and debugging).
pub fn canonical_request(input: &SigningInput<'_>) -> (String, String) {
    let mut headers: Vec<(String, String)> = input
        .headers
        .iter()
        .map(|(k, v)| {
            let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
            (k.to_ascii_lowercase(), v)
        })
        .collect();
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let req = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        input.method,
        input.encoded_path,
        canonical_query(input.query),
        canonical_headers,
        signed,
        input.payload_sha256
    );
    (req, signed)
}

/// Computes the `Authorization` header value for a request.
pub fn authorization(creds: &Credentials, input: &SigningInput<'_>) -> String {
    let (creq, signed_headers) = canonical_request(input);
    let date = &input.amz_date[..8];
    let scope = format!("{date}/{}/{}/aws4_request", input.region, input.service);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        input.amz_date,
        sha256_hex(creq.as_bytes())
    );
    let k_date = hmac(format!("AWS4{}", creds.secret_access_key).as_bytes(), date);
    let k_region = hmac(&k_date, input.region);
    let k_service = hmac(&k_region, input.service);
    let k_signing = hmac(&k_service, "aws4_request");
    let signature = hex::encode(hmac(&k_signing, &to_sign));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope},SignedHeaders={signed_headers},Signature={signature}",
        creds.access_key_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_creds() -> Credentials {
        Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    fn h(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    /// AWS's published "GET Object" example (S3 developer guide, header-based auth).
    #[test]
    fn matches_aws_get_object_example() {
        let headers = vec![
            h("Host", "examplebucket.s3.amazonaws.com"),
            h("Range", "bytes=0-9"),
            h("x-amz-content-sha256", EMPTY_SHA256),
            h("x-amz-date", "20130524T000000Z"),
        ];
        let input = SigningInput {
            method: "GET",
            encoded_path: &encode_path("/test.txt"),
            query: &[],
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
            amz_date: "20130524T000000Z",
            region: "us-east-1",
            service: "s3",
        };
        assert_eq!(
            authorization(&example_creds(), &input),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    /// AWS's published "GET Bucket (List Objects)" example: exercises the query string.
    #[test]
    fn matches_aws_list_objects_example() {
        let headers = vec![
            h("host", "examplebucket.s3.amazonaws.com"),
            h("x-amz-content-sha256", EMPTY_SHA256),
            h("x-amz-date", "20130524T000000Z"),
        ];
        let query = vec![h("max-keys", "2"), h("prefix", "J")];
        let input = SigningInput {
            method: "GET",
            encoded_path: "/",
            query: &query,
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
            amz_date: "20130524T000000Z",
            region: "us-east-1",
            service: "s3",
        };
        let auth = authorization(&example_creds(), &input);
        assert!(
            auth.ends_with(
                "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
            ),
            "{auth}"
        );
    }

    #[test]
    fn encodes_like_s3() {
        assert_eq!(encode_path("/a b/ü+$.iso"), "/a%20b/%C3%BC%2B%24.iso");
        assert_eq!(encode_query("a/b=c"), "a%2Fb%3Dc");
        let q = vec![h("uploads", ""), h("prefix", "x y")];
        assert_eq!(canonical_query(&q), "prefix=x%20y&uploads=");
    }

    #[test]
    fn debug_redacts_keys() {
        let c = example_creds();
        let d = format!("{c:?}");
        assert!(!d.contains("wJalr"), "{d}");
        assert!(!d.contains("AKIAIOSFODNN7EXAMPLE"), "{d}");
    }
}
