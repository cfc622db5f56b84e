//! Who may read from the cache: bearer tokens from a static file, and (in a
//! cluster) any token the API server accepts through a TokenReview, whose
//! answer is cached for a while so a replica's 1 s resync does not cost the
//! API server a review each time.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tracing::warn;

/// How long a rejected token's review is remembered.
const NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// Reviews remembered at most; past this, expired ones are dropped first.
const MAX_CACHED: usize = 100_000;

/// Authenticates subscribers.
pub struct Authenticator {
    tokens: HashSet<String>,
    review: Option<TokenReview>,
    anonymous: bool,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("static_tokens", &self.tokens.len())
            .field("token_review", &self.review.is_some())
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

struct TokenReview {
    client: kube::Client,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, bool)>>,
}

impl Authenticator {
    /// Accepts any request (tests and trusted networks only).
    pub fn anonymous() -> Self {
        Authenticator {
            tokens: HashSet::new(),
            review: None,
            anonymous: true,
        }
    }

    /// Accepts these tokens.
    pub fn tokens(tokens: impl IntoIterator<Item = String>) -> Self {
        Authenticator {
            tokens: tokens.into_iter().filter(|t| !t.is_empty()).collect(),
            review: None,
            anonymous: false,
        }
    }

    /// Reads tokens from a file, one per line (blank lines and `#` comments ignored).
    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Ok(Self::tokens(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        ))
    }

    /// Also accepts tokens the API server authenticates (TokenReview),
    /// remembering a positive answer for `ttl`.
    pub fn with_token_review(mut self, client: kube::Client, ttl: Duration) -> Self {
        self.review = Some(TokenReview {
            client,
            ttl,
            cache: Mutex::new(HashMap::new()),
        });
        self
    }

    /// True when every request is accepted.
    pub fn is_anonymous(&self) -> bool {
        self.anonymous
    }

    /// Whether the request's `Authorization: Bearer` token is accepted.
    pub async fn check(&self, headers: &http::HeaderMap) -> bool {
        if self.anonymous {
            return true;
        }
        let Some(token) = bearer(headers) else {
            return false;
        };
        if self.tokens.contains(token) {
            return true;
        }
        match &self.review {
            Some(r) => r.check(token).await,
            None => false,
        }
    }
}

fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?
        .trim();
    (!t.is_empty()).then_some(t)
}

impl TokenReview {
    async fn check(&self, token: &str) -> bool {
        let now = Instant::now();
        if let Some((until, ok)) = self.cache.lock().get(token).copied()
            && until > now
        {
            return ok;
        }
        let ok = match self.review(token).await {
            Ok(ok) => ok,
            Err(e) => {
                // Not cached: the next request asks again.
                warn!(error = %e, "TokenReview failed");
                return false;
            }
        };
        let ttl = if ok { self.ttl } else { NEGATIVE_TTL };
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (until, _)| *until > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(token.to_owned(), (now + ttl, ok));
        ok
    }

    async fn review(&self, token: &str) -> Result<bool, String> {
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        });
        let req = http::Request::post("/apis/authentication.k8s.io/v1/tokenreviews")
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(kube::client::Body::from(
                serde_json::to_vec(&body).map_err(|e| e.to_string())?,
            ))
            .map_err(|e| e.to_string())?;
        let resp = self.client.send(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        Ok(v.pointer("/status/authenticated")
            .and_then(Value::as_bool)
            .unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(auth: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[tokio::test]
    async fn static_tokens() {
        let a = Authenticator::tokens(["s3cret".to_string()]);
        assert!(a.check(&with("Bearer s3cret")).await);
        assert!(!a.check(&with("Bearer other")).await);
        assert!(!a.check(&with("Basic s3cret")).await);
        assert!(!a.check(&http::HeaderMap::new()).await);
        assert!(
            Authenticator::anonymous()
                .check(&http::HeaderMap::new())
                .await
        );
    }

    #[test]
    fn token_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens");
        std::fs::write(&p, "# comment\n a \n\nb\n").unwrap();
        let a = Authenticator::from_file(&p).unwrap();
        assert_eq!(a.tokens.len(), 2);
        assert!(a.tokens.contains("a"));
    }
}
