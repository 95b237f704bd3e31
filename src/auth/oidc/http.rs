//! The HTTP client the gateway talks to identity providers with: one request per connection
//! (discovery, keys and code exchanges are rare), HTTP/1.1 over rustls with the provider's
//! roots, bounded in time (connect and whole exchange) and size (answers up to 1 MiB), and it
//! never follows a redirect: a provider that answers 3xx gets an error, so no URL it names
//! can send the gateway elsewhere (SSRF).

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The largest answer read from a provider.
pub const MAX_ANSWER: usize = 1 << 20;

/// Why a provider could not be asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("{0} is not a usable URL")]
    Url(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("no answer from {0} within {1:?}")]
    Timeout(String, Duration),
    #[error("{0} answered a redirect ({1}); redirects are not followed")]
    Redirect(String, u16),
    #[error("{0} answered {1}")]
    Status(String, u16),
    #[error("the answer of {0} is larger than 1 MiB")]
    TooLarge(String),
    #[error("the answer of {0} is not the JSON expected: {1}")]
    Json(String, String),
    #[error("talking to {0} failed: {1}")]
    Io(String, String),
}

/// The client for one provider.
#[derive(Clone)]
pub struct Client {
    tls: TlsConnector,
    connect_timeout: Duration,
    timeout: Duration,
}

/// One answer: status and body (the caller decides what a non-2xx means).
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Client {
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Client {
        Client {
            tls: TlsConnector::from(tls),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }

    /// GET `url` and parse its JSON (2xx only).
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> Result<T, FetchError> {
        let a = self.send(Method::GET, url, None, None).await?;
        if !a.status.is_success() {
            return Err(FetchError::Status(url.to_owned(), a.status.as_u16()));
        }
        serde_json::from_slice(&a.body).map_err(|e| FetchError::Json(url.to_owned(), e.to_string()))
    }

    /// POST a form to `url`, with HTTP Basic credentials when given.
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<Answer, FetchError> {
        let body = serde_urlencoded::to_string(form)
            .map_err(|e| FetchError::Url(format!("{url} ({e})")))?;
        let auth = basic.map(|(user, password)| {
            use base64::Engine;
            // RFC 6749 2.3.1: both parts form-encoded before the base64.
            let enc = |s: &str| form_urlencoded_component(s);
            let pair = format!("{}:{}", enc(user), enc(password));
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        self.send(Method::POST, url, Some(body), auth).await
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        form: Option<String>,
        auth: Option<String>,
    ) -> Result<Answer, FetchError> {
        match tokio::time::timeout(self.timeout, self.exchange(method, url, form, auth)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout(url.to_owned(), self.timeout)),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        url: &str,
        form: Option<String>,
        auth: Option<String>,
    ) -> Result<Answer, FetchError> {
        let bad = || FetchError::Url(url.to_owned());
        let uri: Uri = url.parse().map_err(|_| bad())?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let host = uri.host().ok_or_else(bad)?.to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((bare.as_str(), port)),
        )
        .await
        .map_err(|_| FetchError::Timeout(url.to_owned(), self.connect_timeout))?
        .map_err(|e| FetchError::Connect(url.to_owned(), e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, authority)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("authgate/", env!("CARGO_PKG_VERSION")));
        if form.is_some() {
            req = req.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        if let Some(a) = auth {
            let v = HeaderValue::from_str(&a).map_err(|_| bad())?;
            req = req.header(AUTHORIZATION, v);
        }
        let req = req
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .map_err(|_| bad())?;
        let io = |e: &dyn std::fmt::Display| FetchError::Io(url.to_owned(), e.to_string());
        let resp = if https {
            let name = ServerName::try_from(bare.clone()).map_err(|_| bad())?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| FetchError::Connect(url.to_owned(), e.to_string()))?;
            one_request(tls, req).await.map_err(|e| io(&e))?
        } else {
            one_request(tcp, req).await.map_err(|e| io(&e))?
        };
        let status = resp.status();
        if status.is_redirection() {
            return Err(FetchError::Redirect(url.to_owned(), status.as_u16()));
        }
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    FetchError::TooLarge(url.to_owned())
                } else {
                    FetchError::Io(url.to_owned(), e.to_string())
                }
            })?
            .to_bytes();
        Ok(Answer { status, body })
    }
}

async fn one_request<S>(
    stream: S,
    req: Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await?;
    // The connection ends with the answer; bounded in case the provider keeps it open.
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
    });
    send.send_request(req).await
}

/// `application/x-www-form-urlencoded` encoding of one component.
fn form_urlencoded_component(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|v| v.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_encoded() {
        assert_eq!(form_urlencoded_component("a b:c"), "a+b%3Ac");
        assert_eq!(form_urlencoded_component("plain"), "plain");
    }
}
