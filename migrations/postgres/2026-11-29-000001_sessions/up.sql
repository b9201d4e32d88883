-- Browser sessions (OIDC code flow). Times are Unix milliseconds. The cookie holds a random
-- session id; only its SHA-256 (hex) is stored. Tokens are nf1 ciphertexts (AES-256-GCM with
-- the field-encryption key ring, AAD "nestflux_sessions/<column>/<id_hash>").
CREATE TABLE nestflux_sessions (
    id_hash             TEXT PRIMARY KEY NOT NULL,
    issuer              TEXT NOT NULL,
    subject             TEXT NOT NULL,
    roles               TEXT NOT NULL,              -- JSON array of role names
    access_token        TEXT NOT NULL,
    refresh_token       TEXT,
    id_token            TEXT,
    access_expires_at   BIGINT,                     -- NULL: the provider gave no lifetime
    refresh_at          BIGINT,                     -- refresh once now >= this (NULL: never)
    created_at          BIGINT NOT NULL,
    last_seen_at        BIGINT NOT NULL,
    idle_expires_at     BIGINT NOT NULL,
    absolute_expires_at BIGINT NOT NULL,
    generation          BIGINT NOT NULL,           -- bumped by every token refresh (compare-and-swap)
    refresh_lease_until BIGINT                     -- a refresh is in progress somewhere until then
);
CREATE INDEX nestflux_sessions_idle ON nestflux_sessions (idle_expires_at);
CREATE INDEX nestflux_sessions_absolute ON nestflux_sessions (absolute_expires_at);

-- Logins between /auth/login and /auth/callback: single-use, expiring, bound to the browser
-- by the SHA-256 of a short-lived cookie. The PKCE verifier is an nf1 ciphertext
-- (AAD "nestflux_logins/pkce_verifier/<state_hash>"); the nonce is kept only as its SHA-256.
CREATE TABLE nestflux_logins (
    state_hash    TEXT PRIMARY KEY NOT NULL,
    browser_hash  TEXT NOT NULL,
    nonce_hash    TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    return_to     TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX nestflux_logins_expires ON nestflux_logins (expires_at);
