//! The `webdav` backend, through OpenDAL's webdav service (one-shot writes), and lomob's
//! own streamed PUT for images ([`put::WebdavPut`]).

mod config;
pub mod put;

pub use config::WebdavConfig;
pub use put::WebdavPut;

use crate::{build, reveal, BackendError, ByteSize, Capabilities, ChecksumKind};

impl WebdavConfig {
    pub fn validate(&self) -> Result<(), BackendError> {
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            return Err(BackendError::invalid(
                "webdav",
                format!(
                    "`endpoint` {:?} must start with https:// or http://",
                    self.endpoint
                ),
            ));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(BackendError::invalid(
                "webdav",
                "`password` needs `username`",
            ));
        }
        Ok(())
    }

    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            one_shot_limit: Some(self.one_shot_limit.unwrap_or(ByteSize::gb(1))),
            streaming_write: false,
            ..Capabilities::hot(ChecksumKind::None)
        }
    }

    pub fn operator(&self) -> Result<opendal::Operator, BackendError> {
        let k = "webdav";
        let mut o = vec![
            ("endpoint", self.endpoint.clone()),
            ("root", self.root.clone()),
        ];
        if let Some(u) = &self.username {
            o.push(("username", u.clone()));
        }
        if let Some(p) = &self.password {
            o.push(("password", reveal(k, p)?));
        }
        if let Some(t) = &self.token {
            o.push(("token", reveal(k, t)?));
        }
        build(k, "webdav", o)
    }
}
