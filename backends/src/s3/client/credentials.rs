//! Where the signing keys come from: the profile's keys, or the AWS credential chain. Keys
//! never appear in `Debug` output, logs or errors.

use std::fmt;

use bytes::Bytes;
use reqsign_aws_v4::Credential;
use reqsign_core::Context;

use crate::error::chain;

/// Where the signing keys come from. Shown in `Debug` instead of the keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CredentialSource {
    /// `access-key-id` and `secret-access-key` in the profile: the profile is the whole
    /// truth, the AWS environment is not consulted.
    Profile,
    /// The AWS credential chain, as OpenDAL's S3 service loads it.
    AwsEnvironment,
}

/// What the AWS credential chain tries, in order, and what to set: the message when it
/// finds nothing.
pub(super) const NO_CREDENTIALS: &str = "no credentials: the profile has no `access-key-id` and \
`secret-access-key`, and none were found in the AWS environment (tried, in order: \
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN; the profile named by \
AWS_PROFILE, else \"default\", in ~/.aws/credentials and ~/.aws/config, or the files named by \
AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE, including its SSO settings; web identity \
from AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN; ECS container credentials from \
AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI; EC2 instance metadata unless \
AWS_EC2_METADATA_DISABLED=true): set `access-key-id` and `secret-access-key` in the profile \
(e.g. `{ env = \"AWS_ACCESS_KEY_ID\" }`), export AWS_ACCESS_KEY_ID and \
AWS_SECRET_ACCESS_KEY, or set AWS_PROFILE to a profile with keys in ~/.aws/credentials";

/// The profile's keys as a credential provider. Not reqsign's `StaticCredentialProvider`,
/// whose derived `Debug` prints the secret (and reqsign logs providers with `{:?}`).
#[derive(Clone)]
pub(super) struct ProfileKeys {
    pub(super) access_key_id: String,
    pub(super) secret_access_key: String,
}

impl fmt::Debug for ProfileKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProfileKeys(***)")
    }
}

impl reqsign_core::ProvideCredential for ProfileKeys {
    type Credential = Credential;

    async fn provide_credential(
        &self,
        _: &Context,
    ) -> reqsign_core::Result<Option<Self::Credential>> {
        Ok(Some(Credential {
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            session_token: None,
            expires_in: None,
        }))
    }
}

/// Sends the few HTTP requests the credential chain makes (instance metadata, STS, SSO)
/// with our HTTP client. Neither its `Debug` nor its errors show a request: they can carry
/// tokens.
#[derive(Clone)]
pub(super) struct CredentialHttp(pub(super) reqwest::Client);

impl fmt::Debug for CredentialHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialHttp")
    }
}

impl reqsign_core::HttpSend for CredentialHttp {
    async fn http_send(
        &self,
        req: http::Request<Bytes>,
    ) -> reqsign_core::Result<http::Response<Bytes>> {
        let fail = |e: reqwest::Error| {
            // Without the URL: an STS query can carry a web identity token.
            let e = e.without_url();
            reqsign_core::Error::unexpected(format!("credential request failed: {}", chain(&e)))
                .set_retryable(true)
        };
        let (parts, body) = req.into_parts();
        let resp = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(fail)?;
        let mut out = http::Response::builder().status(resp.status());
        if let Some(h) = out.headers_mut() {
            *h = resp.headers().clone();
        }
        let body = resp.bytes().await.map_err(fail)?;
        out.body(body)
            .map_err(|e| reqsign_core::Error::unexpected(format!("credential response: {e}")))
    }
}
