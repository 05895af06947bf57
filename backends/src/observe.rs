//! Counting what an OpenDAL operator actually sends.
//!
//! Providers bill per request, and a retried request is billed again, so request counts
//! must come from the HTTP transport itself, not from an estimate made before the call. An
//! operator built with an observer routes every HTTP request through [`ObservedTransport`],
//! which reports it and hands it on to the transport the operator had.

use std::sync::Arc;

use opendal::{Buffer, HttpBody, HttpTransport, HttpTransporter, Operator};

/// Sees every HTTP request an operator sends, retries included.
pub trait RequestObserver: Send + Sync + 'static {
    fn request(&self, method: &http::Method, uri: &http::Uri);
}

struct ObservedTransport {
    inner: HttpTransporter,
    observer: Arc<dyn RequestObserver>,
}

impl HttpTransport for ObservedTransport {
    async fn fetch(&self, req: http::Request<Buffer>) -> opendal::Result<http::Response<HttpBody>> {
        self.observer.request(req.method(), req.uri());
        self.inner.fetch(req).await
    }
}

/// Routes the operator's HTTP requests past `observer`. Call it before layers are added:
/// layers are replayed on top of the context set here.
pub fn observe(op: Operator, observer: Arc<dyn RequestObserver>) -> Operator {
    let ctx = op.context().clone();
    let transport = HttpTransporter::new(ObservedTransport {
        inner: ctx.http_transport().clone(),
        observer,
    });
    op.with_context(ctx.with_http_transport(transport))
}
