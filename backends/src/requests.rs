//! Requests as providers bill them, counted as they are sent (every attempt counts: retries
//! are billed too). One type for the engine and the backends: the S3 client counts its own
//! requests, and OpenDAL operators are counted by their HTTP transport through
//! [`RequestCounters`]' [`RequestObserver`] implementation.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::observe::RequestObserver;

/// Request types as S3 bills them (PUT, COPY, POST and LIST are the expensive class; GET and
/// HEAD the cheap one; DELETE is free).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestType {
    Put,
    Post,
    List,
    Get,
    Head,
    Delete,
}

/// Requests sent by one client (every attempt counts: retries are billed too). Shared by the
/// clones of a client; read it with [`RequestCounters::snapshot`].
#[derive(Debug, Default)]
pub struct RequestCounters {
    put: AtomicU64,
    post: AtomicU64,
    list: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    delete: AtomicU64,
    /// UploadPart requests (also counted in `put`), to see what a resume re-sent.
    pub(crate) upload_part: AtomicU64,
    /// Bytes of request bodies sent, retries included.
    pub(crate) bytes_sent: AtomicU64,
    /// Attempts after the first of a request the S3 client retried (already counted in
    /// their types above).
    pub(crate) retries: AtomicU64,
}

/// A copy of the counters at one moment. `put`, `post`, `list`, `get`, `head` and `delete`
/// partition every request sent (retries included); `upload_part` is a subset of `put`, not
/// an extra count: do not add it to `put`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RequestCounts {
    /// PutObject, UploadPart and CreateBucket.
    pub put: u64,
    /// CreateMultipartUpload, CompleteMultipartUpload and RestoreObject.
    pub post: u64,
    /// ListParts and ListMultipartUploads.
    pub list: u64,
    pub get: u64,
    pub head: u64,
    /// DeleteObject and AbortMultipartUpload (free on S3).
    pub delete: u64,
    /// UploadPart requests: already included in `put`.
    pub upload_part: u64,
    /// Request body bytes sent, retries included.
    pub bytes_sent: u64,
    /// Attempts after the first of a request the S3 client retried: already included in
    /// the types above.
    pub retries: u64,
}

impl RequestCounters {
    fn slot(&self, t: RequestType) -> &AtomicU64 {
        match t {
            RequestType::Put => &self.put,
            RequestType::Post => &self.post,
            RequestType::List => &self.list,
            RequestType::Get => &self.get,
            RequestType::Head => &self.head,
            RequestType::Delete => &self.delete,
        }
    }

    pub(crate) fn count(&self, t: RequestType) {
        self.slot(t).fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RequestCounts {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RequestCounts {
            put: r(&self.put),
            post: r(&self.post),
            list: r(&self.list),
            get: r(&self.get),
            head: r(&self.head),
            delete: r(&self.delete),
            upload_part: r(&self.upload_part),
            bytes_sent: r(&self.bytes_sent),
            retries: r(&self.retries),
        }
    }
}

impl RequestCounts {
    /// Every request sent.
    pub fn total(&self) -> u64 {
        self.put + self.post + self.list + self.get + self.head + self.delete
    }

    /// PUT, POST and LIST: the requests S3 bills at the higher rate.
    pub fn class_a(&self) -> u64 {
        self.put + self.post + self.list
    }

    /// GET and HEAD: the requests S3 bills at the lower rate.
    pub fn class_b(&self) -> u64 {
        self.get + self.head
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        RequestCounts {
            put: self.put - earlier.put,
            post: self.post - earlier.post,
            list: self.list - earlier.list,
            get: self.get - earlier.get,
            head: self.head - earlier.head,
            delete: self.delete - earlier.delete,
            upload_part: self.upload_part - earlier.upload_part,
            bytes_sent: self.bytes_sent - earlier.bytes_sent,
            retries: self.retries - earlier.retries,
        }
    }
}

impl RequestCounters {
    /// Adds `n` requests of type `t` (operations of a backend that bills none, counted one
    /// per call).
    pub fn add(&self, t: RequestType, n: u64) {
        self.slot(t).fetch_add(n, Ordering::Relaxed);
    }
}

impl RequestCounts {
    /// Adds another count to this one.
    pub fn add(&mut self, o: &RequestCounts) {
        self.put += o.put;
        self.post += o.post;
        self.list += o.list;
        self.get += o.get;
        self.head += o.head;
        self.delete += o.delete;
        self.upload_part += o.upload_part;
        self.bytes_sent += o.bytes_sent;
        self.retries += o.retries;
    }
}

/// HTTP requests as the providers bill them: listings (S3 ListObjects and ListParts,
/// WebDAV PROPFIND) apart from plain reads.
impl RequestObserver for RequestCounters {
    fn request(&self, method: &http::Method, uri: &http::Uri) {
        let query = uri.query().unwrap_or("");
        let listing = [
            "list-type=",
            "uploads",
            "prefix=",
            "delimiter=",
            "max-keys=",
        ]
        .iter()
        .any(|q| query.contains(q));
        let t = match method.as_str() {
            "PUT" | "MKCOL" | "MOVE" | "COPY" | "PATCH" => RequestType::Put,
            "POST" => RequestType::Post,
            "HEAD" => RequestType::Head,
            "DELETE" => RequestType::Delete,
            "PROPFIND" => RequestType::List,
            "GET" if listing => RequestType::List,
            _ => RequestType::Get,
        };
        self.add(t, 1);
    }
}
