//! The one response body type and small constructors for it.

use crate::error::GatewayError;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, Limited};

/// Bodies the gateway answers with: its own small ones or an upstream's stream.
pub type Body = BoxBody<Bytes, hyper::Error>;

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Reads a whole request body of at most `limit` bytes: 413 beyond it, 400 if it breaks off.
pub async fn read_limited(
    body: hyper::body::Incoming,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    let collected = Limited::new(body, limit).collect().await.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            GatewayError::BodyTooLarge
        } else {
            GatewayError::BadRequest("could not read the request body".to_owned())
        }
    })?;
    Ok(collected.to_bytes())
}
