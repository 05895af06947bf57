//! What lomob knows about one stored object, whichever backend holds it: one type for the
//! backends (from OpenDAL metadata or an S3 HEAD) and for the engine's stage and archive
//! listings, so nothing copies fields from one description into another.

use serde::Serialize;

/// An object on a stage or archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// As the server gives it (quotes removed).
    pub etag: Option<String>,
    /// Unix seconds.
    pub modified: Option<i64>,
    /// The content's SHA-256 (hex) when the backend keeps user metadata and we stored it.
    pub sha256: Option<String>,
}

impl ObjectInfo {
    /// From OpenDAL's metadata (the SHA-256 comes from user metadata, where the backend
    /// keeps it).
    pub fn from_opendal(key: &str, m: &opendal::Metadata) -> ObjectInfo {
        ObjectInfo {
            key: key.to_string(),
            size: m.content_length(),
            etag: m.etag().map(unquote),
            modified: m.last_modified().map(|t| t.into_inner().as_second()),
            sha256: m
                .user_metadata()
                .and_then(|u| u.get("sha256").map(str::to_string)),
        }
    }
}

/// The kinds of checksum a provider computes that lomob keeps as `KIND:VALUE` in
/// [`ObjectInfo::etag`] and in a staged record, where the provider's API has no ETag that
/// follows the bytes: Drive's `sha256:HEX` (or `md5:HEX`), OneDrive's `quickxor:BASE64`.
pub const PROVIDER_SUMS: [&str; 3] = ["sha256", "md5", "quickxor"];

/// `(kind, value)` of a provider checksum kept as an etag; `None` for a plain ETag.
pub fn provider_sum(etag: &str) -> Option<(&str, &str)> {
    let (kind, value) = etag.split_once(':')?;
    PROVIDER_SUMS.contains(&kind).then_some((kind, value))
}

/// An ETag without the quotes HTTP puts around it.
pub fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

/// Unix seconds from an HTTP date (`Last-Modified`), `None` when it is not one.
pub fn http_date(s: &str) -> Option<i64> {
    jiff::fmt::rfc2822::parse(s)
        .ok()
        .map(|z| z.timestamp().as_second())
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_dates_parse() {
        assert_eq!(
            super::http_date("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(1_445_412_480)
        );
        assert_eq!(super::http_date("yesterday"), None);
    }

    #[test]
    fn provider_sums_are_told_from_etags() {
        assert_eq!(
            super::provider_sum("quickxor:AAA="),
            Some(("quickxor", "AAA="))
        );
        assert_eq!(super::provider_sum("sha256:ab"), Some(("sha256", "ab")));
        assert_eq!(super::provider_sum("{3B13-0D},10"), None);
        assert_eq!(super::provider_sum("W/\"x:y\""), None);
    }

    #[test]
    fn etags_lose_their_quotes() {
        assert_eq!(super::unquote("\"abc-2\""), "abc-2");
        assert_eq!(super::unquote("abc"), "abc");
    }
}
