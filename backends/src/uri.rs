//! Percent-encoding for the requests lomob builds itself (S3 signing, Drive and Graph
//! listings, OAuth forms): one definition of what stays as it is, RFC 3986's unreserved
//! characters, which is also what SigV4 requires.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters left as they are: `A-Z a-z 0-9 - _ . ~`.
pub const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a query key or value, a form field or one path segment.
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_unreserved_characters_stay() {
        assert_eq!(super::encode("aZ0-_.~"), "aZ0-_.~");
        assert_eq!(super::encode("a b'c/é"), "a%20b%27c%2F%C3%A9");
    }
}
