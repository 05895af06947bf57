//! The XML bodies of the S3 calls we make ourselves: the few response shapes we read and the
//! two request bodies we write. Kept apart from the client so the parsing can be tested on
//! captured responses without a server.

use serde::Deserialize;

/// `<Error><Code>..</Code><Message>..</Message></Error>`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InitiateMultipartUploadResult {
    pub upload_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListPartsResult {
    pub is_truncated: bool,
    pub next_part_number_marker: Option<String>,
    pub part: Vec<PartXml>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PartXml {
    pub part_number: u32,
    #[serde(rename = "ETag")]
    pub etag: String,
    pub size: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CompleteMultipartUploadResult {
    #[serde(rename = "ETag")]
    pub etag: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListMultipartUploadsResult {
    pub is_truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_upload_id_marker: Option<String>,
    pub upload: Vec<UploadXml>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UploadXml {
    pub key: String,
    pub upload_id: String,
    pub initiated: String,
    pub storage_class: Option<String>,
}

/// Escapes text for an XML element body.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The body of CompleteMultipartUpload: every part's number and ETag, in order.
pub fn complete_body(parts: &[(u32, String)]) -> String {
    let mut s = String::from("<CompleteMultipartUpload>");
    for (n, etag) in parts {
        s.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
            escape(etag)
        ));
    }
    s.push_str("</CompleteMultipartUpload>");
    s
}

/// The body of RestoreObject.
pub fn restore_body(days: u32, tier: &str) -> String {
    format!(
        "<RestoreRequest xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Days>{days}</Days>\
         <GlacierJobParameters><Tier>{tier}</Tier></GlacierJobParameters></RestoreRequest>"
    )
}

/// Parses a body, returning `None` when it is not the expected shape.
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("response is not UTF-8: {e}"))?;
    quick_xml::de::from_str(text).map_err(|e| {
        let head: String = text.chars().take(200).collect();
        format!("unexpected response ({e}): {head}")
    })
}

/// True when a 200 body is really an error (CompleteMultipartUpload can fail that way).
pub fn is_error_document(body: &[u8]) -> bool {
    let head = &body[..body.len().min(200)];
    let text = String::from_utf8_lossy(head);
    let text = text.trim_start();
    let text = match text.strip_prefix("<?xml") {
        Some(rest) => rest
            .split_once("?>")
            .map(|(_, r)| r.trim_start())
            .unwrap_or(""),
        None => text,
    };
    text.starts_with("<Error>") || text.starts_with("<Error ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_list_parts() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><Key>k</Key><UploadId>u</UploadId>
  <PartNumberMarker>0</PartNumberMarker><NextPartNumberMarker>2</NextPartNumberMarker>
  <MaxParts>2</MaxParts><IsTruncated>true</IsTruncated>
  <Part><PartNumber>1</PartNumber><LastModified>2024-01-01T00:00:00.000Z</LastModified>
    <ETag>"aa"</ETag><Size>5242880</Size></Part>
  <Part><PartNumber>2</PartNumber><ETag>&quot;bb&quot;</ETag><Size>10</Size></Part>
</ListPartsResult>"#;
        let r: ListPartsResult = parse(body).unwrap();
        assert!(r.is_truncated);
        assert_eq!(r.next_part_number_marker.as_deref(), Some("2"));
        assert_eq!(r.part.len(), 2);
        assert_eq!(r.part[0].etag, "\"aa\"");
        assert_eq!(r.part[1].etag, "\"bb\"");
        assert_eq!(r.part[0].size, 5_242_880);
    }

    #[test]
    fn parses_empty_lists_and_errors() {
        let r: ListMultipartUploadsResult =
            parse(b"<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>")
                .unwrap();
        assert!(r.upload.is_empty());
        let body = b"<?xml version=\"1.0\"?>\n<Error><Code>NoSuchUpload</Code><Message>gone</Message></Error>";
        assert!(is_error_document(body));
        let e: ErrorBody = parse(body).unwrap();
        assert_eq!(e.code, "NoSuchUpload");
        assert!(!is_error_document(b"<CompleteMultipartUploadResult>"));
    }

    #[test]
    fn writes_complete_body() {
        let b = complete_body(&[(1, "\"a\"".into()), (2, "\"b\"".into())]);
        assert_eq!(
            b,
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"a\"</ETag></Part>\
             <Part><PartNumber>2</PartNumber><ETag>\"b\"</ETag></Part></CompleteMultipartUpload>"
        );
    }
}
