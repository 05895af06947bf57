//! OneDrive's own checksums of stored files (`file.hashes.quickXorHash`), which OpenDAL's
//! onedrive service drops: the children of a stage folder listed by lomob itself with
//! `$select=name,size,lastModifiedDateTime,file,folder`, following `@odata.nextLink`, through
//! the operator's transport (signed with the token OpenDAL uses, see
//! [`crate::oauth::api_get`]). The hash is given as `quickxor:BASE64` in
//! [`ObjectInfo::etag`]; lomob computes the same hash while uploading
//! ([`crate::quickxor`]), verifies the upload by it and records it.

use opendal::Operator;

use crate::oauth::api_get;
use crate::ObjectInfo;

const ROOT: &str = "https://graph.microsoft.com/v1.0/me/drive/root";
const SELECT: &str = "$select=name,size,lastModifiedDateTime,file,folder";

/// Lists and stats objects under a OneDrive folder with their QuickXorHash.
pub struct GraphHashes {
    root: Vec<String>,
}

fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn info(key: String, item: &serde_json::Value) -> ObjectInfo {
    ObjectInfo {
        key,
        size: item["size"].as_u64().unwrap_or(0),
        etag: item["file"]["hashes"]["quickXorHash"]
            .as_str()
            .map(|h| format!("quickxor:{h}")),
        modified: item["lastModifiedDateTime"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_second()),
        sha256: None,
    }
}

impl GraphHashes {
    pub fn new(root: &str) -> Self {
        GraphHashes {
            root: segments(root),
        }
    }

    /// The item address of `path` under the root: `…/root:/lomob/stage:`.
    fn item(&self, path: &str) -> String {
        let segs: Vec<String> = self
            .root
            .iter()
            .cloned()
            .chain(segments(path))
            .map(|s| crate::uri::encode(&s))
            .collect();
        if segs.is_empty() {
            ROOT.to_string()
        } else {
            format!("{ROOT}:/{}:", segs.join("/"))
        }
    }

    /// Every file under `prefix` (a folder key such as `stage/`), recursively, with its
    /// QuickXorHash; keys relative to the root, as OpenDAL gives them.
    pub async fn list(&self, op: &Operator, prefix: &str) -> opendal::Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let start = segments(prefix).join("/");
        let mut todo = vec![if start.is_empty() { start } else { start + "/" }];
        while let Some(at) = todo.pop() {
            let mut url = format!("{}/children?{SELECT}", self.item(&at));
            loop {
                let v = match api_get(op, &url).await {
                    Ok(v) => v,
                    Err(e) if e.kind() == opendal::ErrorKind::NotFound => break,
                    Err(e) => return Err(e),
                };
                for item in v["value"].as_array().into_iter().flatten() {
                    let name = item["name"].as_str().unwrap_or_default();
                    if item.get("folder").is_some_and(|f| !f.is_null()) {
                        todo.push(format!("{at}{name}/"));
                    } else {
                        out.push(info(format!("{at}{name}"), item));
                    }
                }
                match v["@odata.nextLink"].as_str() {
                    Some(next) => url = next.to_string(),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// The file `key` with its QuickXorHash; `None` when there is none.
    pub async fn stat(&self, op: &Operator, key: &str) -> opendal::Result<Option<ObjectInfo>> {
        let url = format!(
            "{}?$select=name,size,lastModifiedDateTime,file",
            self.item(key)
        );
        match api_get(op, &url).await {
            Ok(v) if v.get("file").is_some_and(|f| !f.is_null()) => {
                Ok(Some(info(key.to_string(), &v)))
            }
            Ok(_) => Ok(None),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn item_addresses_are_encoded() {
        let g = super::GraphHashes::new("/lomob");
        assert_eq!(
            g.item("stage/"),
            "https://graph.microsoft.com/v1.0/me/drive/root:/lomob/stage:"
        );
        assert_eq!(
            g.item("meta/a b"),
            "https://graph.microsoft.com/v1.0/me/drive/root:/lomob/meta/a%20b:"
        );
        assert_eq!(
            super::GraphHashes::new("/").item(""),
            "https://graph.microsoft.com/v1.0/me/drive/root"
        );
    }
}
