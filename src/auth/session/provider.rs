//! The OpenID provider as a relying party sees it, through the `openidconnect` crate:
//! discovery (with the RP-initiated logout metadata), the authorization URL with `state`,
//! `nonce` and PKCE S256, the code exchange, the refresh grant and the logout URL.
//!
//! Every request goes through one HTTP client of our own: no redirects (SSRF), bounded
//! time and a bounded body, plain HTTP only where the issuer itself is plain HTTP. Discovery
//! happens on first use and is cached for an hour, so the server starts and serves while
//! the provider is down; until it answers, logins get 503.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreClientAuthMethod, CoreIdToken, CoreJsonWebKeySet,
    CoreTokenResponse,
};
use openidconnect::{
    AsyncHttpClient, AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndSessionUrl,
    EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, LogoutRequest, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl,
    ProviderMetadataWithLogout, RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse,
};

use crate::plan::auth::SessionPlan;

/// Largest discovery document or token response read.
const MAX_BODY_BYTES: usize = 256 * 1024;
/// Time allowed for one request to the provider.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a discovery document is trusted before it is fetched again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// After a failed discovery, requests answer 503 at once for this long instead of each
/// waiting for the provider again.
const DISCOVERY_RETRY: Duration = Duration::from_secs(2);

/// The client type after discovery: authorization and token endpoints set.
type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointNotSet,
>;

/// Why the provider could not do what was asked. Written to the log only.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// Not reachable, too slow, or answering with a server error: try again later.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider refused (`invalid_grant`, …): the code or refresh token is spent.
    #[error("the provider refused: {0}")]
    Rejected(String),
    /// The discovery document is unusable (wrong issuer, missing or unsafe endpoints).
    #[error("the provider's discovery document is unusable: {0}")]
    Discovery(String),
}

/// Why one HTTP exchange with the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connection, TLS or timeout.
    #[error("{0}")]
    Transport(String),
    /// The body exceeds [`MAX_BODY_BYTES`].
    #[error("response larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// The request or response could not be converted.
    #[error("{0}")]
    Build(String),
}

/// The HTTP client every provider request uses.
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    fn new() -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: reqwest::Client::builder()
                // A redirect could send a request, and the client secret, anywhere (SSRF).
                .redirect(reqwest::redirect::Policy::none())
                .timeout(TIMEOUT)
                .connect_timeout(TIMEOUT)
                .user_agent(concat!("nestflux/", env!("CARGO_PKG_VERSION")))
                .build()?,
        })
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        let transport = |e: reqwest::Error| HttpError::Transport(e.without_url().to_string());
        let mut res = self
            .client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        if res
            .content_length()
            .is_some_and(|n| n > MAX_BODY_BYTES as u64)
        {
            return Err(HttpError::TooLarge);
        }
        let status = res.status();
        let headers = res.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(HttpError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let mut out = openidconnect::http::Response::builder()
            .status(status)
            .body(body)
            .map_err(|e| HttpError::Build(e.to_string()))?;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// What discovery found, ready to use.
pub struct Discovered {
    client: Client,
    end_session: Option<EndSessionUrl>,
    fetched: Instant,
}

/// Tokens from the token endpoint.
pub struct Tokens {
    /// The access token.
    pub access_token: String,
    /// A refresh token, when the provider issued one.
    pub refresh_token: Option<String>,
    /// The ID token, as received (compact JWS).
    pub id_token: Option<String>,
    /// The access token's lifetime, when the provider said.
    pub expires_in: Option<Duration>,
}

/// The provider of one `[auth.session]`, shared by every worker.
pub struct Provider {
    issuer: url::Url,
    accepted_issuers: Vec<String>,
    client_id: String,
    client_secret: Option<String>,
    redirect_url: RedirectUrl,
    post_logout: PostLogoutRedirectUrl,
    scopes: Vec<String>,
    http: Http,
    current: tokio::sync::RwLock<Option<Arc<Discovered>>>,
    /// Single flight for discovery, with the time of the last failed attempt.
    discovering: tokio::sync::Mutex<Option<Instant>>,
}

impl Provider {
    /// A provider for `issuer`; nothing is fetched yet.
    pub fn new(
        issuer: url::Url,
        accepted_issuers: Vec<String>,
        session: &SessionPlan,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            issuer,
            accepted_issuers,
            client_id: session.client_id.clone(),
            client_secret: session.client_secret.clone(),
            redirect_url: RedirectUrl::from_url(session.redirect_url.clone()),
            post_logout: PostLogoutRedirectUrl::from_url(session.post_logout_redirect_url.clone()),
            scopes: session.scopes.clone(),
            http: Http::new()?,
            current: tokio::sync::RwLock::new(None),
            discovering: tokio::sync::Mutex::new(None),
        })
    }

    /// The discovered provider: cached, refetched hourly (the old document keeps serving
    /// while the provider is down), fetched by one request at a time.
    pub async fn discovered(&self) -> Result<Arc<Discovered>, ProviderError> {
        let cached = self.current.read().await.clone();
        if let Some(d) = &cached
            && d.fetched.elapsed() < DISCOVERY_TTL
        {
            return Ok(d.clone());
        }
        let mut last_failure = self.discovering.lock().await;
        // Someone else may have finished while we waited.
        if let Some(d) = self.current.read().await.clone()
            && d.fetched.elapsed() < DISCOVERY_TTL
        {
            return Ok(d);
        }
        if let Some(at) = *last_failure
            && at.elapsed() < DISCOVERY_RETRY
        {
            return cached
                .ok_or_else(|| ProviderError::Unavailable("discovery failed moments ago".into()));
        }
        match self.discover().await {
            Ok(d) => {
                let d = Arc::new(d);
                *self.current.write().await = Some(d.clone());
                *last_failure = None;
                tracing::info!(target: "nestflux::auth", issuer = %self.issuer, "provider discovered for browser login");
                Ok(d)
            }
            Err(e) => {
                *last_failure = Some(Instant::now());
                tracing::warn!(target: "nestflux::auth", error = %e, "provider discovery failed");
                // An older document keeps serving.
                cached.ok_or(e)
            }
        }
    }

    /// The discovered provider if known, without fetching.
    pub async fn known(&self) -> Option<Arc<Discovered>> {
        self.current.read().await.clone()
    }

    async fn discover(&self) -> Result<Discovered, ProviderError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.as_str().trim_end_matches('/')
        );
        let request = openidconnect::http::Request::builder()
            .method(openidconnect::http::Method::GET)
            .uri(&url)
            .header(openidconnect::http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|e| ProviderError::Discovery(e.to_string()))?;
        let res = self
            .http
            .send(request)
            .await
            .map_err(|e| ProviderError::Unavailable(format!("GET {url}: {e}")))?;
        if !res.status().is_success() {
            return Err(ProviderError::Unavailable(format!(
                "GET {url}: status {}",
                res.status().as_u16()
            )));
        }
        let metadata: ProviderMetadataWithLogout = serde_json::from_slice(res.body())
            .map_err(|e| ProviderError::Discovery(format!("GET {url}: {e}")))?;
        let issuer = metadata.issuer().as_str();
        if !self.accepted_issuers.iter().any(|i| i == issuer) {
            return Err(ProviderError::Discovery(format!(
                "names issuer {issuer:?}, expected {:?}",
                self.issuer.as_str()
            )));
        }
        let token_url = metadata
            .token_endpoint()
            .cloned()
            .ok_or_else(|| ProviderError::Discovery("no token_endpoint".into()))?;
        self.check_endpoint(
            "authorization_endpoint",
            metadata.authorization_endpoint().url(),
        )?;
        self.check_endpoint("token_endpoint", token_url.url())?;
        let end_session = metadata
            .additional_metadata()
            .end_session_endpoint
            .clone()
            .filter(|u| self.check_endpoint("end_session_endpoint", u.url()).is_ok());
        // client_secret_basic is the default (RFC 6749 §2.3.1); use client_secret_post only
        // where the provider says it takes nothing else.
        let post_only = metadata
            .token_endpoint_auth_methods_supported()
            .is_some_and(|m| {
                m.contains(&CoreClientAuthMethod::ClientSecretPost)
                    && !m.contains(&CoreClientAuthMethod::ClientSecretBasic)
            });
        let mut client = CoreClient::new(
            ClientId::new(self.client_id.clone()),
            metadata.issuer().clone(),
            // ID tokens are verified with the bearer tokens' key cache, not here.
            CoreJsonWebKeySet::new(Vec::new()),
        )
        .set_auth_uri(metadata.authorization_endpoint().clone())
        .set_token_uri(token_url)
        .set_redirect_uri(self.redirect_url.clone());
        if let Some(secret) = &self.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.clone()));
        }
        if post_only {
            client = client.set_auth_type(AuthType::RequestBody);
        }
        Ok(Discovered {
            client,
            end_session,
            fetched: Instant::now(),
        })
    }

    /// Endpoints must be https, or plain HTTP only when the issuer itself is.
    fn check_endpoint(&self, name: &str, url: &url::Url) -> Result<(), ProviderError> {
        let ok = url.host_str().is_some()
            && (url.scheme() == "https"
                || (url.scheme() == "http" && self.issuer.scheme() == "http"));
        if ok {
            Ok(())
        } else {
            Err(ProviderError::Discovery(format!(
                "{name} `{url}` must be https:// like the issuer"
            )))
        }
    }

    /// The URL that sends the browser to the provider's login.
    pub fn authorize_url(
        &self,
        d: &Discovered,
        state: String,
        nonce: String,
        pkce_verifier: &str,
    ) -> url::Url {
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
            pkce_verifier.to_string(),
        ));
        let mut request = d.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(state),
            move || Nonce::new(nonce),
        );
        for scope in &self.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        request.set_pkce_challenge(challenge).url().0
    }

    /// Exchanges an authorization code (with its PKCE verifier) for tokens.
    pub async fn exchange(
        &self,
        d: &Discovered,
        code: String,
        pkce_verifier: String,
    ) -> Result<Tokens, ProviderError> {
        let res = d
            .client
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier))
            .request_async(&self.http)
            .await;
        tokens(res)
    }

    /// The refresh grant.
    pub async fn refresh(&self, refresh_token: String) -> Result<Tokens, ProviderError> {
        let d = self.discovered().await?;
        let token = RefreshToken::new(refresh_token);
        let res = d
            .client
            .exchange_refresh_token(&token)
            .request_async(&self.http)
            .await;
        tokens(res)
    }

    /// Where logout sends the browser: the provider's `end_session_endpoint` with
    /// `id_token_hint`, `client_id` and `post_logout_redirect_uri`, or straight to the
    /// post-logout URL when the provider has none (or is unknown yet).
    pub fn logout_url(&self, d: Option<&Discovered>, id_token: Option<&str>) -> url::Url {
        let Some(end) = d.and_then(|d| d.end_session.clone()) else {
            return self.post_logout.url().clone();
        };
        let mut request = LogoutRequest::from(end)
            .set_client_id(ClientId::new(self.client_id.clone()))
            .set_post_logout_redirect_uri(self.post_logout.clone());
        if let Some(hint) = id_token.and_then(|t| t.parse::<CoreIdToken>().ok()) {
            request = request.set_id_token_hint(&hint);
        }
        request.http_get_url()
    }
}

/// The tokens of a token-endpoint answer, or why there are none.
fn tokens<TE: openidconnect::ErrorResponse + 'static>(
    res: Result<CoreTokenResponse, RequestTokenError<HttpError, TE>>,
) -> Result<Tokens, ProviderError> {
    match res {
        Ok(t) => Ok(Tokens {
            access_token: t.access_token().secret().clone(),
            refresh_token: t.refresh_token().map(|r| r.secret().clone()),
            id_token: t.id_token().map(|i| i.to_string()),
            expires_in: t.expires_in(),
        }),
        Err(RequestTokenError::ServerResponse(e)) => {
            // The error code only (the description is the provider's prose).
            let code = serde_json::to_value(&e)
                .ok()
                .and_then(|v| v.get("error").and_then(|c| c.as_str()).map(str::to_string))
                .unwrap_or_else(|| "error".into());
            if matches!(code.as_str(), "temporarily_unavailable" | "server_error") {
                Err(ProviderError::Unavailable(code))
            } else {
                Err(ProviderError::Rejected(code))
            }
        }
        Err(RequestTokenError::Request(e)) => Err(ProviderError::Unavailable(e.to_string())),
        // The body is never logged: it may hold tokens.
        Err(RequestTokenError::Parse(e, _)) => Err(ProviderError::Unavailable(format!(
            "unreadable token response at {}",
            e.path()
        ))),
        Err(RequestTokenError::Other(e)) => Err(ProviderError::Unavailable(e)),
    }
}
