//! JWT bearer auth: HS256 with a shared secret, or RS256/EdDSA with a public key. Claims are
//! `sub`, `tenant_id` (absent for platform admins), `role` and `exp`, plus `iss`/`aud` when the
//! operator configured them. A token of a tenant that does not exist (never did, or was
//! deleted) is refused with 401 `tenant_not_found`: deleting a tenant revokes its tokens.

use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use schemas::TenantId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Roles, in increasing power inside a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    TenantAdmin,
    PlatformAdmin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "tenant_admin" => Ok(Role::TenantAdmin),
            "platform_admin" => Ok(Role::PlatformAdmin),
            other => Err(format!("unknown role {other:?} (platform_admin, tenant_admin, operator, viewer)")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<u64>,
    pub role: Role,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

impl Claims {
    pub fn new(sub: impl Into<String>, tenant_id: Option<u64>, role: Role, exp: u64) -> Self {
        Self { sub: sub.into(), tenant_id, role, exp, iss: None, aud: None }
    }
}

/// Verifies (and, with a secret, mints) tokens.
pub struct Auth {
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    algorithm: Algorithm,
    /// Required `iss` and `aud`, when configured (minted tokens carry them).
    issuer: Option<String>,
    audience: Option<String>,
}

impl Auth {
    /// HS256 with a shared secret (can mint tokens).
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            decoding: DecodingKey::from_secret(secret),
            encoding: Some(EncodingKey::from_secret(secret)),
            algorithm: Algorithm::HS256,
            issuer: None,
            audience: None,
        }
    }

    /// Requires (and mints) these `iss` / `aud` claims.
    pub fn with_issuer_audience(mut self, issuer: Option<String>, audience: Option<String>) -> Self {
        self.issuer = issuer;
        self.audience = audience;
        self
    }

    /// RS256 or EdDSA with a PEM public key (verify only).
    pub fn public_key(algorithm: &str, pem: &[u8]) -> Result<Self, String> {
        let (algorithm, decoding) = match algorithm {
            "RS256" => (Algorithm::RS256, DecodingKey::from_rsa_pem(pem)),
            "EdDSA" => (Algorithm::EdDSA, DecodingKey::from_ed_pem(pem)),
            other => return Err(format!("unsupported JWT algorithm {other:?} (HS256, RS256, EdDSA)")),
        };
        Ok(Self {
            decoding: decoding.map_err(|e| format!("invalid public key: {e}"))?,
            encoding: None,
            algorithm,
            issuer: None,
            audience: None,
        })
    }

    pub fn mint(&self, claims: &Claims) -> Result<String, String> {
        let key = self.encoding.as_ref().ok_or("this key can only verify tokens")?;
        let mut claims = claims.clone();
        claims.iss = claims.iss.or_else(|| self.issuer.clone());
        claims.aud = claims.aud.or_else(|| self.audience.clone());
        encode(&Header::new(self.algorithm), &claims, key).map_err(|e| e.to_string())
    }

    pub fn verify(&self, token: &str) -> ApiResult<Claims> {
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = 5;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        decode::<Claims>(token, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| ApiError::unauthorized(format!("invalid token: {e}")))
    }
}

/// The tenant a request acts in, as its credentials say.
#[derive(Debug, Clone, Copy)]
enum Acting {
    /// A tenant token's tenant, or the existing tenant a platform admin named.
    In(TenantId),
    /// A platform admin who named no tenant.
    Unnamed,
    /// A platform admin who named a tenant that does not exist (or is deleted): only endpoints
    /// that act in a tenant refuse it (404).
    Missing,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub sub: String,
    pub role: Role,
    acting: Acting,
}

impl Caller {
    /// The tenant this request acts in; platform admins name one with `X-Herald-Tenant`.
    pub fn tenant(&self) -> ApiResult<TenantId> {
        match self.acting {
            Acting::In(t) => Ok(t),
            Acting::Unnamed => Err(ApiError::bad_request("tenant_required", "this endpoint acts inside a tenant")),
            Acting::Missing => Err(ApiError::not_found("tenant")),
        }
    }

    /// Fails with 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> ApiResult<()> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("requires role {role:?} or above")))
        }
    }
}

impl Caller {
    /// The caller a verified token names; a platform admin names a tenant with
    /// `X-Herald-Tenant`.
    pub(crate) async fn from_token(
        state: &AppState,
        token: &str,
        headers: &axum::http::HeaderMap,
    ) -> ApiResult<Caller> {
        let claims = state.auth.verify(token.trim())?;
        let acting = match (claims.role, claims.tenant_id) {
            (Role::PlatformAdmin, _) => match headers.get("x-herald-tenant") {
                None => Acting::Unnamed,
                Some(raw) => match raw.to_str().ok().and_then(|r| r.trim().parse().ok()).map(TenantId) {
                    Some(id) if active(state, id).await? => Acting::In(id),
                    _ => Acting::Missing,
                },
            },
            (_, Some(t)) => {
                // Checked on every request: a deleted tenant's tokens stop working at once.
                if !active(state, TenantId(t)).await? {
                    return Err(ApiError::new(
                        axum::http::StatusCode::UNAUTHORIZED,
                        "tenant_not_found",
                        "the token's tenant does not exist",
                    ));
                }
                Acting::In(TenantId(t))
            }
            (_, None) => return Err(ApiError::unauthorized("token has no tenant_id")),
        };
        Ok(Caller { sub: claims.sub, role: claims.role, acting })
    }

    /// The tenant named by the credentials, if any (the console shows it).
    pub fn tenant_id(&self) -> Option<TenantId> {
        match self.acting {
            Acting::In(t) => Some(t),
            _ => None,
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    /// A bearer token, or else the console's session cookie, which must come with the
    /// session's CSRF token on anything but a read (`crate::console::session`).
    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let token = match parts.headers.get(axum::http::header::AUTHORIZATION) {
            Some(header) => header
                .to_str()
                .ok()
                .and_then(|h| h.strip_prefix("Bearer "))
                .ok_or_else(|| ApiError::unauthorized("expected 'Authorization: Bearer <token>'"))?,
            None => crate::console::session::from_cookie(&parts.method, &parts.headers)?,
        };
        Caller::from_token(state, token, &parts.headers).await
    }
}

/// Whether the tenant exists and is not deleted.
async fn active(state: &AppState, tenant: TenantId) -> ApiResult<bool> {
    Ok(state.store.get_tenant(tenant).await?.is_some_and(|t| t.is_active()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp_offset: i64) -> Claims {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        Claims::new("u", Some(1), Role::Operator, (now + exp_offset) as u64)
    }

    #[test]
    fn round_trips_and_rejects_bad_tokens() {
        let auth = Auth::hs256(b"secret-one");
        let token = auth.mint(&claims(60)).unwrap();
        assert_eq!(auth.verify(&token).unwrap().role, Role::Operator);
        // expired
        assert!(auth.verify(&auth.mint(&claims(-600)).unwrap()).is_err());
        // wrong key
        assert!(Auth::hs256(b"secret-two").verify(&token).is_err());
        // alg: none
        let parts: Vec<&str> = token.split('.').collect();
        let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
        assert!(auth.verify(&format!("{none_header}.{}.", parts[1])).is_err());
        assert!(auth.verify("garbage").is_err());
    }

    #[test]
    fn configured_issuer_and_audience_are_required() {
        let strict = Auth::hs256(b"secret-one").with_issuer_audience(Some("herald".into()), Some("api".into()));
        let minted = strict.mint(&claims(60)).unwrap();
        assert_eq!(strict.verify(&minted).unwrap().iss.as_deref(), Some("herald"));
        // A token without them, or with others, is refused.
        let bare = Auth::hs256(b"secret-one").mint(&claims(60)).unwrap();
        assert!(strict.verify(&bare).is_err());
        let other = Auth::hs256(b"secret-one").with_issuer_audience(Some("evil".into()), Some("api".into()));
        assert!(strict.verify(&other.mint(&claims(60)).unwrap()).is_err());
        let other = Auth::hs256(b"secret-one").with_issuer_audience(Some("herald".into()), Some("other".into()));
        assert!(strict.verify(&other.mint(&claims(60)).unwrap()).is_err());
        // Without configuration, iss/aud are not checked.
        assert!(Auth::hs256(b"secret-one").verify(&minted).is_ok());
    }

    /// A throwaway Ed25519 pair generated for this test only (`openssl genpkey -algorithm ed25519`).
    const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGaYZoebknPVz857tJDquLiBY+DVZ8LvjAuutx2vcdnj\n-----END PRIVATE KEY-----\n";
    const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAnFZlbpC58FqC7i9fav5x/qX6ZEVdIqZF29Z8BFGKKag=\n-----END PUBLIC KEY-----\n";

    #[test]
    fn eddsa_public_key_verifies_and_refuses_hs256() {
        let verifier = Auth::public_key("EdDSA", ED_PUBLIC.as_bytes()).unwrap();
        let key = EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap();
        let token = encode(&Header::new(Algorithm::EdDSA), &claims(60), &key).unwrap();
        assert_eq!(verifier.verify(&token).unwrap().sub, "u");
        assert!(verifier.mint(&claims(60)).is_err(), "a public key cannot mint");
        // An HS256 token (e.g. signed with the public key bytes as a secret) is refused.
        let forged = Auth::hs256(ED_PUBLIC.as_bytes()).mint(&claims(60)).unwrap();
        assert!(verifier.verify(&forged).is_err());
        assert!(Auth::public_key("none", ED_PUBLIC.as_bytes()).is_err());
    }
}
