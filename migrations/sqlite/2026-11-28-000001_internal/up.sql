-- Internal tables of NestFlux (names start with nestflux_, which resources may not use).
CREATE TABLE nestflux_users (
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    email      TEXT,
    name       TEXT,
    first_seen TEXT NOT NULL,
    last_seen  TEXT NOT NULL,
    PRIMARY KEY (issuer, subject)
);

-- Signing keys of the development issuer.
CREATE TABLE nestflux_dev_keys (
    kid         TEXT PRIMARY KEY NOT NULL,
    private_pem TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
