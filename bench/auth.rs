//! What checking a caller costs: full JWT verification against the verified-token cache
//! (one SHA-256 and one lookup), rejections, API keys and the permission decision, as
//! ns/op and as a ratio to full verification measured in the same run.
//! Run: `cargo bench --bench auth` (numbers from `cargo test --bench auth` are debug builds).
//!
//! ES256 keys come from rcgen; RS256 keys from `node tests/oidc/keys_pem.mjs --fresh`
//! when node is installed (the row is skipped otherwise).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::FutureExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use nestflux::auth::Unlimited;
use nestflux::auth::jwks::{Jwks, KeySet};
use nestflux::auth::jwt::{BearerVerifier, VerifierConfig};
use nestflux::auth::roles::RoleMapper;
use nestflux::authz::Authorizer;
use nestflux::plan::roles::{Permission, RoleId, RolesPlan};
use serde_json::{Value, json};
use sha2::Digest;

const ISSUER: &str = "https://id.example.test";
const AUD: &str = "urn:nestflux:api";

/// Median ns per op over 5 runs of `ops` calls.
fn ns_per_op(ops: u32, mut f: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..ops {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(ops)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[2]
}

fn verifier(jwks_doc: &Value) -> BearerVerifier {
    let allowed = vec![Algorithm::RS256, Algorithm::ES256];
    let jwks = Arc::new(
        Jwks::new(url::Url::parse(ISSUER).expect("url"), allowed.clone()).expect("client"),
    );
    jwks.install(KeySet::from_document(jwks_doc, &allowed));
    BearerVerifier::new(
        jwks,
        VerifierConfig {
            allowed,
            audience: AUD.into(),
            leeway_secs: 30,
            require_access_token_typ: false,
            allowed_clients: Vec::new(),
            roles: RoleMapper::new(vec!["roles".into()], [RoleId("viewer".into())]),
        },
    )
}

fn token(key: &EncodingKey, alg: Algorithm, kid: &str, sub: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    let claims = json!({
        "iss": ISSUER, "aud": AUD, "sub": sub, "roles": ["viewer", "unknown"],
        "iat": now, "exp": now + 3600,
    });
    jsonwebtoken::encode(&header, &claims, key).expect("encode")
}

struct Row {
    name: String,
    ns: f64,
    base: f64,
}

fn bench_alg(rows: &mut Vec<Row>, label: &str, verifier: &BearerVerifier, tokens: &[String]) {
    let one = &tokens[0];
    let ops = 200;
    let uncached = ns_per_op(ops, || {
        let v = verifier.verify_uncached(black_box(one)).now_or_never();
        assert!(matches!(v, Some(Ok(_))), "{label} token must verify");
    });
    verifier
        .verify(one, &Unlimited)
        .now_or_never()
        .expect("ready")
        .expect("valid");
    let cached = ns_per_op(200_000, || {
        let v = verifier.verify(black_box(one), &Unlimited).now_or_never();
        assert!(matches!(v, Some(Ok(_))));
    });
    // A working set of distinct tokens, all cached (one entry per caller).
    let mut i = 0;
    for t in tokens {
        verifier
            .verify(t, &Unlimited)
            .now_or_never()
            .expect("ready")
            .expect("valid");
    }
    let working_set = ns_per_op(200_000, || {
        let t = &tokens[i % tokens.len()];
        i += 1;
        black_box(verifier.verify(t, &Unlimited).now_or_never());
    });
    // Bad signature: a full verification that fails.
    let (message, _) = one.rsplit_once('.').expect("jws");
    let forged = format!("{message}.{}", URL_SAFE_NO_PAD.encode([7u8; 64]));
    let bad_sig = ns_per_op(ops, || {
        let v = verifier.verify_uncached(black_box(&forged)).now_or_never();
        assert!(matches!(v, Some(Err(_))));
    });
    let bad_sig_replayed = ns_per_op(ops, || {
        let v = verifier
            .verify(black_box(&forged), &Unlimited)
            .now_or_never();
        assert!(matches!(v, Some(Err(_))));
    });
    for (name, ns) in [
        ("full verification (uncached)", uncached),
        ("verified-token cache hit", cached),
        ("cache hit, 64 distinct tokens", working_set),
        ("rejected: bad signature, first sight", bad_sig),
        ("rejected: bad signature, replayed", bad_sig_replayed),
    ] {
        rows.push(Row {
            name: format!("{label} {name}"),
            ns,
            base: uncached,
        });
    }
}

fn rsa_from_node() -> Option<(EncodingKey, Value)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc/keys_pem.mjs");
    let out = std::process::Command::new("node")
        .arg(script)
        .arg("--fresh")
        .output()
        .ok()?;
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
    let rsa = list.into_iter().find(|k| k["alg"] == "RS256")?;
    let key = EncodingKey::from_rsa_pem(rsa["private_pem"].as_str()?.as_bytes()).ok()?;
    let mut jwk = rsa["public_jwk"].clone();
    jwk["kid"] = json!("rsa-bench");
    jwk["alg"] = json!("RS256");
    jwk["use"] = json!("sig");
    Some((key, jwk))
}

fn main() {
    let ec = rcgen::KeyPair::generate().expect("P-256 key");
    let raw = ec.public_key_raw();
    let ec_jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": "ec-bench", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
    });
    let ec_key = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).expect("ec pem");
    let rsa = rsa_from_node();
    let mut keys = vec![ec_jwk];
    if let Some((_, jwk)) = &rsa {
        keys.push(jwk.clone());
    }
    let v = verifier(&json!({ "keys": keys }));

    let mut rows = Vec::new();
    let es_tokens: Vec<String> = (0..64)
        .map(|i| token(&ec_key, Algorithm::ES256, "ec-bench", &format!("user-{i}")))
        .collect();
    bench_alg(&mut rows, "ES256", &v, &es_tokens);
    match &rsa {
        Some((key, _)) => {
            let rs_tokens: Vec<String> = (0..64)
                .map(|i| token(key, Algorithm::RS256, "rsa-bench", &format!("user-{i}")))
                .collect();
            bench_alg(&mut rows, "RS256", &v, &rs_tokens);
        }
        None => println!("RS256 rows skipped: node not found (tests/oidc/keys_pem.mjs)"),
    }

    // The cost of saying no before any cryptography.
    let base = rows[0].ns;
    let garbage = "x".repeat(400);
    let oversized = format!("{}.e30.sig", "a".repeat(9000));
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#)
    );
    for (name, t) in [
        ("rejected: not a JWS", &garbage),
        ("rejected: oversized", &oversized),
        ("rejected: alg none", &none),
    ] {
        let ns = ns_per_op(200_000, || {
            let r = v.verify(black_box(t), &Unlimited).now_or_never();
            assert!(matches!(r, Some(Err(_))));
        });
        rows.push(Row {
            name: name.into(),
            ns,
            base,
        });
    }

    // API key lookup (SHA-256 + constant-time compare against every declared key).
    let new = nestflux::auth::api_key::generate().expect("random");
    let sha: [u8; 32] = sha2::Sha256::digest(new.key.as_bytes()).into();
    let plans: Vec<_> = (0..10)
        .map(|i| nestflux::plan::auth::ApiKeyPlan {
            name: format!("k{i}"),
            sha256: if i == 9 { sha } else { [i as u8; 32] },
            roles: vec![RoleId("viewer".into())],
        })
        .collect();
    let keys = nestflux::auth::api_key::ApiKeys::new(&plans);
    let ns = ns_per_op(200_000, || {
        assert!(keys.find(black_box(&new.key)).is_some());
    });
    rows.push(Row {
        name: "API key, 10 declared".into(),
        ns,
        base,
    });

    // RBAC: the decision for a route permission, reference-like roles.
    let perm = |s: &str| Permission::parse(s).expect("permission");
    let mut roles = RolesPlan::default();
    roles.closures.insert(
        RoleId("viewer".into()),
        [perm("notes:read")].into_iter().collect(),
    );
    roles.closures.insert(
        RoleId("editor".into()),
        [
            perm("notes:read"),
            perm("notes:create"),
            perm("notes:update:own"),
        ]
        .into_iter()
        .collect(),
    );
    roles.closures.insert(
        RoleId("admin".into()),
        [perm("notes:*"), perm("audit:read")].into_iter().collect(),
    );
    let need = perm("notes:update");
    let authz = Authorizer::for_roles(&roles, [need.clone()]);
    let caller_roles = vec![RoleId("viewer".into()), RoleId("editor".into())];
    let ns = ns_per_op(1_000_000, || {
        black_box(authz.decide(black_box(&caller_roles), &need));
    });
    rows.push(Row {
        name: "RBAC decision, 2 roles".into(),
        ns,
        base,
    });

    println!(
        "{:<44} {:>12} {:>12}",
        "scenario", "ns/op", "vs full verify"
    );
    for r in &rows {
        println!("{:<44} {:>12.0} {:>12.4}x", r.name, r.ns, r.ns / r.base);
    }
}
