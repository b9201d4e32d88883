-- Server secrets generated on first start (the cursor MAC key when no encryption key ring
-- is configured). Never printed; a copy of the database carries them, like the dev keys.
CREATE TABLE nestflux_secrets (
    name       TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- One user row per issuer: `https://idp/` and `https://idp` are the same issuer. Rows whose
-- issuer differs only by trailing slashes are folded into one (earliest first_seen, latest
-- last_seen), stored under the issuer without them.
INSERT INTO nestflux_users (issuer, subject, email, name, first_seen, last_seen)
SELECT rtrim(issuer, '/'), subject, max(email), max(name), min(first_seen), max(last_seen)
FROM nestflux_users
WHERE issuer LIKE '%/' AND rtrim(issuer, '/') <> ''
GROUP BY rtrim(issuer, '/'), subject
ON CONFLICT (issuer, subject) DO UPDATE SET
    email = COALESCE(nestflux_users.email, excluded.email),
    name = COALESCE(nestflux_users.name, excluded.name),
    first_seen = LEAST(nestflux_users.first_seen, excluded.first_seen),
    last_seen = GREATEST(nestflux_users.last_seen, excluded.last_seen);
DELETE FROM nestflux_users WHERE issuer LIKE '%/' AND rtrim(issuer, '/') <> '';
