//! Drive's own checksums of stored files, which OpenDAL's gdrive service never asks for:
//! `files.list` under the stage folder with `sha256Checksum` and `md5Checksum` in `fields`,
//! page by page, sent by lomob itself through the operator's transport (signed with the
//! token OpenDAL uses, see [`crate::oauth::api_get`]). A check compares a staged copy with
//! its content's SHA-256 without downloading a byte, and an upload is verified by the
//! checksum Drive computed of what it stored.

use std::collections::HashMap;
use std::sync::Mutex;

use opendal::Operator;

use crate::oauth::api_get;
use crate::uri::encode as enc;
use crate::ObjectInfo;

const FILES: &str = "https://www.googleapis.com/drive/v3/files";
const FOLDER: &str = "application/vnd.google-apps.folder";
const FIELDS: &str =
    "nextPageToken,files(id,name,mimeType,size,modifiedTime,sha256Checksum,md5Checksum)";

/// Lists and stats objects under a Drive folder with Drive's checksums.
pub struct DriveHashes {
    /// The profile's `root`, as segments.
    root: Vec<String>,
    /// Folder ids by path from the drive's root ("lomob/stage"), as found.
    folders: Mutex<HashMap<String, String>>,
}

/// A name inside a query's single quotes.
fn quoted(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn info(key: String, f: &serde_json::Value) -> ObjectInfo {
    let sha256 = f["sha256Checksum"].as_str().map(str::to_ascii_lowercase);
    let md5 = f["md5Checksum"].as_str().map(str::to_ascii_lowercase);
    ObjectInfo {
        key,
        size: f["size"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| f["size"].as_u64())
            .unwrap_or(0),
        etag: sha256
            .as_ref()
            .map(|s| format!("sha256:{s}"))
            .or_else(|| md5.map(|m| format!("md5:{m}"))),
        modified: f["modifiedTime"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_second()),
        sha256,
    }
}

impl DriveHashes {
    pub fn new(root: &str) -> Self {
        DriveHashes {
            root: segments(root),
            folders: Mutex::new(HashMap::new()),
        }
    }

    /// One page of `files.list` for query `q`.
    async fn page(
        op: &Operator,
        q: &str,
        extra: &str,
        token: Option<&str>,
    ) -> opendal::Result<serde_json::Value> {
        let mut url = format!(
            "{FILES}?q={}&fields={}&pageSize=1000{extra}",
            enc(q),
            enc(FIELDS)
        );
        if let Some(t) = token {
            url.push_str(&format!("&pageToken={}", enc(t)));
        }
        api_get(op, &url).await
    }

    /// The id of the folder at `dirs` under the profile's root; `None` when it is not there.
    async fn folder(&self, op: &Operator, dirs: &[String]) -> opendal::Result<Option<String>> {
        let mut id = "root".to_string();
        let mut path = String::new();
        for name in self.root.iter().chain(dirs) {
            path.push('/');
            path.push_str(name);
            let known = self
                .folders
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&path)
                .cloned();
            id = match known {
                Some(k) => k,
                None => {
                    let q = format!(
                        "'{id}' in parents and name = '{}' and mimeType = '{FOLDER}' and trashed = false",
                        quoted(name)
                    );
                    let v = Self::page(op, &q, "", None).await?;
                    let Some(found) = v["files"][0]["id"].as_str() else {
                        return Ok(None);
                    };
                    self.folders
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(path.clone(), found.to_string());
                    found.to_string()
                }
            };
        }
        Ok(Some(id))
    }

    /// Every file under `prefix` (a folder key such as `stage/`), recursively, with Drive's
    /// checksums; keys relative to the root, as OpenDAL gives them.
    pub async fn list(&self, op: &Operator, prefix: &str) -> opendal::Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let Some(top) = self.folder(op, &segments(prefix)).await? else {
            return Ok(out);
        };
        let start = segments(prefix).join("/");
        let mut todo = vec![(top, if start.is_empty() { start } else { start + "/" })];
        while let Some((id, at)) = todo.pop() {
            let q = format!("'{id}' in parents and trashed = false");
            let mut token: Option<String> = None;
            loop {
                let v = Self::page(op, &q, "", token.as_deref()).await?;
                for f in v["files"].as_array().into_iter().flatten() {
                    let name = f["name"].as_str().unwrap_or_default();
                    if f["mimeType"].as_str() == Some(FOLDER) {
                        if let Some(fid) = f["id"].as_str() {
                            todo.push((fid.to_string(), format!("{at}{name}/")));
                        }
                    } else {
                        out.push(info(format!("{at}{name}"), f));
                    }
                }
                match v["nextPageToken"].as_str() {
                    Some(t) if !t.is_empty() => token = Some(t.to_string()),
                    _ => break,
                }
            }
        }
        Ok(out)
    }

    /// The file `key` with Drive's checksums (the newest, should Drive hold two of that
    /// name); `None` when there is none.
    pub async fn stat(&self, op: &Operator, key: &str) -> opendal::Result<Option<ObjectInfo>> {
        let mut segs = segments(key);
        let Some(name) = segs.pop() else {
            return Ok(None);
        };
        let Some(parent) = self.folder(op, &segs).await? else {
            return Ok(None);
        };
        let q = format!(
            "'{parent}' in parents and name = '{}' and trashed = false",
            quoted(&name)
        );
        let v = Self::page(
            op,
            &q,
            &format!("&orderBy={}", enc("modifiedTime desc")),
            None,
        )
        .await?;
        Ok(v["files"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["mimeType"].as_str() != Some(FOLDER))
            .map(|f| info(key.to_string(), f)))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_quoted_for_queries() {
        assert_eq!(super::quoted("it's"), "it\\'s");
        assert_eq!(super::enc("a b'c"), "a%20b%27c");
    }
}
