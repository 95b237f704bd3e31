//! The gateway's own HTML pages (sign in, sign out): plain, accessible, no external assets,
//! usable on a phone, and sent with headers that keep them out of frames and caches.

use crate::body::{full, Body};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

/// What the sign-in page shows.
pub struct LoginPage<'a> {
    pub title: &'a str,
    /// A local path to go on to after signing in.
    pub next: &'a str,
    /// The user name typed last time (kept after a failure).
    pub username: &'a str,
    /// A problem to show, in words (`role="alert"`).
    pub message: Option<String>,
    /// Identity providers: (name, display name), each a "Sign in with" button.
    pub providers: &'a [(String, String)],
    /// Whether the password form is shown (`login.password`).
    pub password: bool,
    /// HTML (escaped by its maker) after the buttons: the passkey button, which loads the
    /// gateway's script (the page's CSP then allows it).
    pub extra: &'a str,
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "*{box-sizing:border-box}body{font-family:system-ui,sans-serif;max-width:24rem;margin:3rem auto;padding:0 1rem;line-height:1.4}h1{font-size:1.5rem}label{display:block;margin-top:1rem}input{display:block;width:100%;max-width:100%;padding:.6rem;font-size:1rem;margin-top:.25rem}button{margin-top:1.5rem;padding:.7rem 1.4rem;font-size:1rem;width:100%}.sso{display:block;text-align:center;padding:.7rem;border:1px solid #444;border-radius:4px;text-decoration:none;color:inherit}.or{text-align:center;margin-top:1.5rem}.alert{border:1px solid #b00;background:#fee;color:#600;padding:.6rem;margin-top:1rem}.s{border:1px solid #ccc;border-radius:4px;padding:0 .8rem .8rem;margin-top:1rem}.s h2{font-size:1rem;overflow-wrap:anywhere}code,.uri{overflow-wrap:anywhere}figure{margin:1rem 0}svg{max-width:100%;height:auto}";

fn document(title: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n<style>{STYLE}</style>\n</head><body><main>\n{main}\n</main></body></html>\n",
        title = escape(title)
    )
}

pub fn login(p: &LoginPage<'_>, status: StatusCode, secure: bool) -> Response<Body> {
    let alert = p.message.as_deref().map_or(String::new(), |m| {
        format!("<p class=\"alert\" role=\"alert\">{}</p>\n", escape(m))
    });
    let (user_focus, pass_focus) = if p.username.is_empty() {
        (" autofocus", "")
    } else {
        ("", " autofocus")
    };
    let form = if p.password {
        format!(
            r#"<form method="post" action="/auth/login">
<input type="hidden" name="next" value="{next}">
<label for="username">User name</label><input id="username" name="username" value="{user}" autocomplete="username" autocapitalize="none" autocorrect="off" spellcheck="false" required{user_focus}>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required{pass_focus}>
<button type="submit">Sign in</button>
</form>"#,
            next = escape(p.next),
            user = escape(p.username),
        )
    } else {
        String::new()
    };
    let mut buttons = String::new();
    if !p.providers.is_empty() {
        if p.password {
            buttons.push_str("<p class=\"or\">or</p>\n");
        }
        for (name, display) in p.providers {
            buttons.push_str(&format!(
                "<p><a class=\"sso\" href=\"/auth/oidc/{name}/start?next={next}\">Sign in with {display}</a></p>\n",
                name = escape(name),
                next = escape(&crate::path::encode_component(p.next)),
                display = escape(display),
            ));
        }
    }
    if !p.extra.is_empty() {
        if p.password || !p.providers.is_empty() {
            buttons.push_str("<p class=\"or\">or</p>\n");
        }
        buttons.push_str(p.extra);
    }
    let main = format!(
        "<h1>{title}</h1>\n{alert}{form}\n{buttons}",
        title = escape(p.title),
    );
    let resp = page(status, document(p.title, &main), secure);
    if p.extra.contains("<script") {
        with_script(resp)
    } else {
        resp
    }
}

/// The policy of a gateway page that loads the gateway's own script (passkeys): that script
/// and requests to the gateway, nothing else.
const CSP_WITH_SCRIPT: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Lets a gateway page run the gateway's own script (`/auth/assets/...`), no other.
pub fn with_script(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP_WITH_SCRIPT),
    );
    resp
}

/// The sign-out confirmation: a form that POSTs the logout with the session's CSRF value, or
/// a note that nobody is signed in.
pub fn logout(title: &str, csrf: Option<&str>, secure: bool) -> Response<Body> {
    let main = match csrf {
        Some(csrf) => format!(
            r#"<h1>Sign out</h1>
<p>Sign out of {title}?</p>
<form method="post" action="/auth/logout">
<input type="hidden" name="csrf_token" value="{csrf}">
<label><input type="checkbox" name="all" value="true" style="display:inline;width:auto"> Sign out on every device</label>
<button type="submit" autofocus>Sign out</button>
</form>"#,
            title = escape(title),
            csrf = escape(csrf)
        ),
        None => {
            "<h1>Signed out</h1>\n<p>You are not signed in. <a href=\"/auth/login\">Sign in</a></p>"
                .to_owned()
        }
    };
    page(StatusCode::OK, document(title, &main), secure)
}

/// A page of `main` (HTML the caller escaped) under `title`, with the usual headers.
pub fn html(status: StatusCode, title: &str, main: &str, secure: bool) -> Response<Body> {
    page(status, document(title, main), secure)
}

/// An HTML page with the headers every gateway page carries.
/// An error the gateway answers to a browser's navigation (§10): the status, a plain sentence,
/// and a way to sign in again where that helps. Same look and headers as the login page.
pub fn error(status: StatusCode, sentence: &str, sign_in: bool, secure: bool) -> Response<Body> {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let link = if sign_in {
        "<p><a href=\"/auth/login\">Sign in again</a></p>"
    } else {
        ""
    };
    let main = format!(
        "<h1>{}</h1>\n<p role=\"alert\">{}</p>\n{link}",
        escape(&title),
        escape(sentence)
    );
    page(status, document(&title, &main), secure)
}

fn page(status: StatusCode, html: String, secure: bool) -> Response<Body> {
    let mut resp = Response::new(full(html));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    security_headers(h, secure);
    resp
}

/// No framing (clickjacking), no sniffing, no referrer, no caching; HSTS over TLS.
pub fn security_headers(h: &mut http::HeaderMap, secure: bool) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if secure {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
}

/// A wait in words: "1 minute", "14 minutes", "30 seconds".
pub fn wait_in_words(seconds: u64) -> String {
    match seconds {
        0..=1 => "a second".to_owned(),
        2..=59 => format!("{seconds} seconds"),
        60..=119 => "1 minute".to_owned(),
        s => format!("{} minutes", s.div_ceil(60)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_waits_read_as_words() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(wait_in_words(30), "30 seconds");
        assert_eq!(wait_in_words(61), "1 minute");
        assert_eq!(wait_in_words(14 * 60 - 5), "14 minutes");
    }
}
