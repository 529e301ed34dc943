//! The console's sign-in: a token minted by `herald token` (or, later, by an SSO integration)
//! is exchanged for an `HttpOnly; SameSite=Strict` session cookie holding it, so no script
//! ever reads the token. Requests authenticated by the cookie must carry the session's CSRF
//! token in `X-CSRF-Token` on anything but a read; the CSRF token is derived from the session
//! token (SHA-256 under a fixed label), so it needs no server-side session table, works the
//! same on every API replica and with a verify-only public key, and cannot be computed by a
//! page that does not know the token. Roles are the API's: the cookie names the same caller a
//! bearer token would.
//!
//! It is not: an identity provider. Sign-out clears the cookie; the token itself stays valid
//! until it expires (as a bearer token would).

use crate::error::{ApiError, ApiResult};
use crate::{AppState, Caller};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The session cookie's name.
pub const COOKIE: &str = "herald_session";
/// The header that carries the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The longest a console session lasts, whatever the token's own expiry.
pub const MAX_SESSION_S: u64 = 12 * 3_600;

/// The session's CSRF token: a hash of the session token under a label of its own.
pub fn csrf_token(session: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"herald-console-csrf\0");
    hasher.update(session.as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

/// Equal without an early exit (the comparison's time does not tell how much matched).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session token from the cookie header, if there is one.
pub fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// The token of a cookie-authenticated request: reads need only the cookie; anything else
/// needs the session's CSRF token too (403 `csrf_failed` without it).
pub(crate) fn from_cookie<'h>(method: &Method, headers: &'h HeaderMap) -> ApiResult<&'h str> {
    let token = cookie_token(headers).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        let sent = headers.get(CSRF_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
        if !same(sent, csrf_token(token).as_bytes()) {
            return Err(ApiError::forbidden("missing or wrong X-CSRF-Token for this session").with_code("csrf_failed"));
        }
    }
    Ok(token)
}

/// A `Set-Cookie` value for the session (`max_age_s` 0 clears it).
fn cookie(value: &str, max_age_s: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let raw = format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}");
    HeaderValue::from_str(&raw).unwrap_or_else(|_| HeaderValue::from_static("herald_session=; Max-Age=0"))
}

/// Whether the request reached us over TLS (directly or through a proxy that says so).
fn over_tls(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// A cross-site form post carries another site's `Origin`: refused (sign-in CSRF).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    origin.split_once("://").is_some_and(|(_, rest)| rest == host)
}

/// `POST /console/signin`: a valid token becomes the session cookie (303 to the console);
/// anything else re-shows the form with the reason in words.
pub(crate) async fn sign_in(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !same_origin(&headers) {
        return super::pages::sign_in(
            StatusCode::FORBIDDEN,
            Some("This sign-in came from another site and was refused."),
        );
    }
    let token = match form_token(&body) {
        Some(t) if !t.is_empty() && t.len() <= 8_192 => t,
        _ => return super::pages::sign_in(StatusCode::BAD_REQUEST, Some("Paste the token from `herald token`.")),
    };
    let claims = match state.auth.verify(&token) {
        Ok(c) => c,
        Err(e) => {
            return super::pages::sign_in(
                StatusCode::UNAUTHORIZED,
                Some(&format!("That token was refused: {}.", e.message)),
            )
        }
    };
    if let Err(e) = Caller::from_token(&state, &token, &HeaderMap::new()).await {
        return super::pages::sign_in(e.status, Some(&format!("That token cannot sign in: {}.", e.message)));
    }
    let left = claims.exp.saturating_sub(jsonwebtoken::get_current_timestamp()).min(MAX_SESSION_S);
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/console/campaigns")]).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie(&token, left, over_tls(&headers)));
    response
}

fn form_token(body: &[u8]) -> Option<String> {
    form_urlencoded::parse(body).find(|(k, _)| k == "token").map(|(_, v)| v.trim().to_string())
}

/// `POST /console/signout` (CSRF-checked like every change): clears the cookie.
pub(crate) async fn sign_out(_caller: Caller, headers: HeaderMap) -> ApiResult<Response> {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie("", 0, over_tls(&headers)));
    Ok(response)
}

/// Who is signed in, and the CSRF token the console's scripts send with every change.
#[derive(serde::Serialize)]
pub(crate) struct SessionView {
    sub: String,
    role: crate::Role,
    tenant_id: Option<u64>,
    csrf: String,
}

/// `GET /console/session`: the signed-in caller (401 without a session).
pub(crate) async fn show(caller: Caller, headers: HeaderMap) -> ApiResult<Json<SessionView>> {
    let token = cookie_token(&headers).ok_or_else(|| ApiError::unauthorized("no console session"))?;
    Ok(Json(SessionView {
        sub: caller.sub.clone(),
        role: caller.role,
        tenant_id: caller.tenant_id().map(|t| t.0),
        csrf: csrf_token(token),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn reads_need_the_cookie_and_changes_need_the_csrf_token_too() {
        let h = headers(&[("cookie", "a=b; herald_session=tok.en; c=d")]);
        assert_eq!(from_cookie(&Method::GET, &h).unwrap(), "tok.en");
        let refused = from_cookie(&Method::POST, &h).unwrap_err();
        assert_eq!((refused.status, refused.code), (StatusCode::FORBIDDEN, "csrf_failed"));
        let wrong = headers(&[("cookie", "herald_session=tok.en"), ("x-csrf-token", &csrf_token("other"))]);
        assert_eq!(from_cookie(&Method::DELETE, &wrong).unwrap_err().code, "csrf_failed");
        let good = headers(&[("cookie", "herald_session=tok.en"), ("x-csrf-token", &csrf_token("tok.en"))]);
        assert_eq!(from_cookie(&Method::POST, &good).unwrap(), "tok.en");
        assert_eq!(from_cookie(&Method::GET, &HeaderMap::new()).unwrap_err().status, StatusCode::UNAUTHORIZED);
        assert!(from_cookie(&Method::GET, &headers(&[("cookie", "herald_session=")])).is_err());
    }

    #[test]
    fn a_cross_site_origin_is_not_the_same_origin() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8080"), ("origin", "https://evil.example")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8080"), ("origin", "null")])));
    }

    #[test]
    fn the_cookie_is_http_only_and_strict() {
        let c = cookie("t", 60, false);
        let c = c.to_str().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && !c.contains("Secure"));
        assert!(cookie("t", 60, true).to_str().unwrap().ends_with("; Secure"));
    }
}
