//! Hostile tokens against the real binary: every one is answered 401 with
//! `WWW-Authenticate: Bearer error="invalid_token"`, and header-supplied key URLs are never
//! fetched. Tokens are crafted with the real provider's signing keys where the attack needs
//! a valid signature, so each one fails for the reason it names.

use std::io::ErrorKind;
use std::net::TcpListener;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Project, client};
use crate::oidc::{AUD, KeyMaterial, Provider, keys, nestflux_config, now};

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_json(v: &Value) -> String {
    b64(v.to_string().as_bytes())
}

/// `header.payload.signature`, signed with `key` under `alg` whatever the header says.
fn signed(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let message = format!("{}.{}", b64_json(header), b64_json(claims));
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("sign");
    format!("{message}.{sig}")
}

fn unsigned(header: &Value, claims: &Value, sig: &str) -> String {
    format!("{}.{}.{sig}", b64_json(header), b64_json(claims))
}

struct Keys {
    rsa: KeyMaterial,
    ec: KeyMaterial,
    fresh_rsa: KeyMaterial,
    fresh_ec: KeyMaterial,
}

impl Keys {
    fn rsa_key(&self) -> EncodingKey {
        EncodingKey::from_rsa_pem(self.rsa.private_pem.as_bytes()).expect("rsa pem")
    }
    fn ec_key(&self) -> EncodingKey {
        EncodingKey::from_ec_pem(self.ec.private_pem.as_bytes()).expect("ec pem")
    }
    fn fresh_rsa_key(&self) -> EncodingKey {
        EncodingKey::from_rsa_pem(self.fresh_rsa.private_pem.as_bytes()).expect("rsa pem")
    }
    fn fresh_ec_key(&self) -> EncodingKey {
        EncodingKey::from_ec_pem(self.fresh_ec.private_pem.as_bytes()).expect("ec pem")
    }
}

fn by_alg(list: &[KeyMaterial], alg: &str) -> KeyMaterial {
    list.iter()
        .find(|k| k.alg == alg)
        .cloned()
        .unwrap_or_else(|| panic!("no {alg} key"))
}

#[test]
fn thirty_plus_hostile_tokens_are_all_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let provider = Provider::start(0, &dir.path().join("keys.json"), "1");
    let issuer = provider.issuer();
    let provider_keys = keys(&provider.keys_file.to_string_lossy());
    let fresh = keys("--fresh");
    let k = Keys {
        rsa: by_alg(&provider_keys, "RS256"),
        ec: by_alg(&provider_keys, "ES256"),
        fresh_rsa: by_alg(&fresh, "RS256"),
        fresh_ec: by_alg(&fresh, "ES256"),
    };
    assert_eq!((k.rsa.kid.as_str(), k.ec.kid.as_str()), ("rsa-1", "ec-1"));

    // Header-supplied key URLs point here: nestflux must never connect.
    let trap = TcpListener::bind("127.0.0.1:0").expect("trap listener");
    trap.set_nonblocking(true).expect("nonblocking");
    let trap_url = format!("http://{}", trap.local_addr().expect("addr"));

    // Every hostile token comes from this one client: a budget of failed authentications
    // large enough that each is checked, not refused unchecked (tested on its own).
    let project = Project::new(&format!(
        "{}\n[rate_limits.auth_failures]\nper_second = 1000\nburst = 1000\n",
        nestflux_config(
            &issuer,
            AUD,
            "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        )
    ));
    let server = project.serve(&[("RUST_LOG", "info,nestflux::auth=debug")]);

    let t = now();
    let claims = json!({
        "iss": issuer, "aud": AUD, "sub": "mallory", "roles": ["admin"],
        "iat": t, "exp": t + 300,
    });
    let with = |patch: Value| {
        let mut c = claims.clone();
        for (key, v) in patch.as_object().expect("object") {
            if v.is_null() {
                c.as_object_mut().expect("object").remove(key);
            } else {
                c[key] = v.clone();
            }
        }
        c
    };
    let rs_header = |kid: &str| json!({ "alg": "RS256", "typ": "JWT", "kid": kid });
    let es_header = |kid: &str| json!({ "alg": "ES256", "typ": "JWT", "kid": kid });
    let rs =
        |header: Value, claims: &Value| signed(&header, claims, &k.rsa_key(), Algorithm::RS256);

    // Controls: the crafting is right, so each refusal below is for its own reason.
    let good_rs = rs(rs_header("rsa-1"), &claims);
    let good_es = signed(&es_header("ec-1"), &claims, &k.ec_key(), Algorithm::ES256);
    for good in [&good_rs, &good_es] {
        let res = client()
            .get(server.url("/api/me/admin"))
            .bearer_auth(good)
            .send()
            .expect("request");
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "control token refused:\n{}",
            server.log()
        );
    }

    let rsa_spki = k.rsa.public_spki_pem.clone();
    let rsa_pkcs1 = k.rsa.public_pkcs1_pem.clone().expect("pkcs1");
    let rsa_der = STANDARD.decode(&k.rsa.public_der_b64).expect("der");
    let rsa_jwk = k.rsa.public_jwk.to_string();
    let rsa_n = k.rsa.public_jwk["n"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let hs = |alg: Algorithm, name: &str, secret: &[u8]| {
        signed(
            &json!({ "alg": name, "typ": "JWT", "kid": "rsa-1" }),
            &claims,
            &EncodingKey::from_secret(secret).expect("hmac key"),
            alg,
        )
    };
    let real_sig = good_rs.rsplit('.').next().unwrap_or_default().to_string();
    let (good_h, good_p) = {
        let mut parts = good_rs.split('.');
        (
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        )
    };

    // x5c: a real self-signed certificate whose key signs the token.
    let cert_key = rcgen::KeyPair::generate().expect("keypair");
    let cert = rcgen::CertificateParams::new(vec!["attacker.test".into()])
        .expect("params")
        .self_signed(&cert_key)
        .expect("cert");
    let cert_signer = EncodingKey::from_ec_pem(cert_key.serialize_pem().as_bytes()).expect("ec");

    let mut attacks: Vec<(&str, String)> = vec![
        // alg none in its spellings, unsigned or with the real signature left on.
        (
            "alg none",
            unsigned(&json!({"alg": "none", "typ": "JWT"}), &claims, ""),
        ),
        ("alg None", unsigned(&json!({"alg": "None"}), &claims, "")),
        (
            "alg NONE",
            unsigned(&json!({"alg": "NONE", "kid": "rsa-1"}), &claims, ""),
        ),
        ("alg nOnE", unsigned(&json!({"alg": "nOnE"}), &claims, "AA")),
        (
            "alg none with a real signature",
            unsigned(&json!({"alg": "none", "kid": "rsa-1"}), &claims, &real_sig),
        ),
        (
            "alg empty",
            unsigned(&json!({"alg": ""}), &claims, &real_sig),
        ),
        // HS256 keyed with the RSA public key, in several encodings (key confusion).
        (
            "HS256 with SPKI PEM",
            hs(Algorithm::HS256, "HS256", rsa_spki.as_bytes()),
        ),
        (
            "HS256 with PKCS#1 PEM",
            hs(Algorithm::HS256, "HS256", rsa_pkcs1.as_bytes()),
        ),
        ("HS256 with DER", hs(Algorithm::HS256, "HS256", &rsa_der)),
        (
            "HS256 with the JWK JSON",
            hs(Algorithm::HS256, "HS256", rsa_jwk.as_bytes()),
        ),
        (
            "HS256 with the modulus",
            hs(Algorithm::HS256, "HS256", rsa_n.as_bytes()),
        ),
        (
            "HS384 with SPKI PEM",
            hs(Algorithm::HS384, "HS384", rsa_spki.as_bytes()),
        ),
        (
            "HS512 with SPKI PEM",
            hs(Algorithm::HS512, "HS512", rsa_spki.as_bytes()),
        ),
        // Signatures stripped, garbage or borrowed.
        ("stripped signature", format!("{good_h}.{good_p}.")),
        (
            "garbage signature",
            format!("{good_h}.{good_p}.{}", b64(&[0x41; 256])),
        ),
        (
            "payload swapped under a real signature",
            format!(
                "{good_h}.{}.{real_sig}",
                b64_json(&with(json!({"sub": "root"})))
            ),
        ),
        // Wrong key under a real kid; unknown kids; kid injection.
        (
            "wrong RSA key under kid rsa-1",
            signed(
                &rs_header("rsa-1"),
                &claims,
                &k.fresh_rsa_key(),
                Algorithm::RS256,
            ),
        ),
        (
            "wrong EC key under kid ec-1",
            signed(
                &es_header("ec-1"),
                &claims,
                &k.fresh_ec_key(),
                Algorithm::ES256,
            ),
        ),
        (
            "unknown kid",
            signed(
                &rs_header("rsa-999"),
                &claims,
                &k.fresh_rsa_key(),
                Algorithm::RS256,
            ),
        ),
        (
            "kid path traversal",
            rs(rs_header("../../../../../../dev/null"), &claims),
        ),
        (
            "kid SQL injection",
            rs(rs_header("x' UNION SELECT 'rsa-1'--"), &claims),
        ),
        ("kid with NUL", rs(rs_header("rsa-1\u{0}"), &claims)),
        (
            "kid as URL",
            rs(rs_header(&format!("{trap_url}/jwks")), &claims),
        ),
        ("kid 10k chars", rs(rs_header(&"k".repeat(10_000)), &claims)),
        (
            "kid not a string",
            rs(json!({"alg": "RS256", "kid": ["rsa-1"]}), &claims),
        ),
        // Keys supplied by the token itself.
        (
            "jku to a local listener",
            signed(
                &json!({"alg": "RS256", "kid": "fresh-rsa", "jku": format!("{trap_url}/jwks.json")}),
                &claims,
                &k.fresh_rsa_key(),
                Algorithm::RS256,
            ),
        ),
        (
            "jku with the real kid",
            signed(
                &json!({"alg": "RS256", "kid": "rsa-1", "jku": format!("{trap_url}/jwks.json")}),
                &claims,
                &k.fresh_rsa_key(),
                Algorithm::RS256,
            ),
        ),
        (
            "x5u to a local listener",
            signed(
                &json!({"alg": "RS256", "kid": "rsa-1", "x5u": format!("{trap_url}/cert.pem")}),
                &claims,
                &k.fresh_rsa_key(),
                Algorithm::RS256,
            ),
        ),
        (
            "embedded jwk",
            signed(
                &json!({"alg": "RS256", "jwk": k.fresh_rsa.public_jwk}),
                &claims,
                &k.fresh_rsa_key(),
                Algorithm::RS256,
            ),
        ),
        (
            "embedded jwk under the real kid",
            signed(
                &json!({"alg": "ES256", "kid": "ec-1", "jwk": k.fresh_ec.public_jwk}),
                &claims,
                &k.fresh_ec_key(),
                Algorithm::ES256,
            ),
        ),
        (
            "embedded x5c",
            signed(
                &json!({"alg": "ES256", "x5c": [STANDARD.encode(cert.der())]}),
                &claims,
                &cert_signer,
                Algorithm::ES256,
            ),
        ),
        // ECDSA r = s = 0 ("psychic signatures").
        (
            "ES256 all-zero signature",
            unsigned(&es_header("ec-1"), &claims, &b64(&[0u8; 64])),
        ),
        // Algorithm and key must agree.
        ("RS256 under the EC kid", rs(rs_header("ec-1"), &claims)),
        (
            "ES256 under the RSA kid",
            signed(&es_header("rsa-1"), &claims, &k.ec_key(), Algorithm::ES256),
        ),
        (
            "PS256 (not allowed) with the real RSA key",
            signed(
                &json!({"alg": "PS256", "kid": "rsa-1"}),
                &claims,
                &k.rsa_key(),
                Algorithm::PS256,
            ),
        ),
        // Claims.
        (
            "expired",
            rs(rs_header("rsa-1"), &with(json!({"exp": t - 3600}))),
        ),
        (
            "nbf in the future",
            rs(rs_header("rsa-1"), &with(json!({"nbf": t + 3600}))),
        ),
        (
            "missing exp",
            rs(rs_header("rsa-1"), &with(json!({"exp": null}))),
        ),
        (
            "exp as a string",
            rs(
                rs_header("rsa-1"),
                &with(json!({"exp": (t + 300).to_string()})),
            ),
        ),
        (
            "wrong aud",
            rs(rs_header("rsa-1"), &with(json!({"aud": "urn:other:api"}))),
        ),
        (
            "missing aud",
            rs(rs_header("rsa-1"), &with(json!({"aud": null}))),
        ),
        (
            "aud list without ours",
            rs(rs_header("rsa-1"), &with(json!({"aud": ["a", "b"]}))),
        ),
        (
            "wrong iss",
            rs(
                rs_header("rsa-1"),
                &with(json!({"iss": "http://evil.test"})),
            ),
        ),
        (
            "missing iss",
            rs(rs_header("rsa-1"), &with(json!({"iss": null}))),
        ),
        (
            "missing sub",
            rs(rs_header("rsa-1"), &with(json!({"sub": null}))),
        ),
        (
            "empty sub",
            rs(rs_header("rsa-1"), &with(json!({"sub": ""}))),
        ),
        (
            "sub in the development namespace",
            rs(rs_header("rsa-1"), &with(json!({"sub": "dev:alice"}))),
        ),
        (
            "sub in the API-key namespace",
            rs(rs_header("rsa-1"), &with(json!({"sub": "apikey:ci"}))),
        ),
        // Header rules.
        (
            "unknown crit",
            rs(
                json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"], "exp": 1}),
                &claims,
            ),
        ),
        (
            "typ dpop+jwt",
            rs(
                json!({"alg": "RS256", "kid": "rsa-1", "typ": "dpop+jwt"}),
                &claims,
            ),
        ),
        (
            "cty JWT (nested)",
            rs(
                json!({"alg": "RS256", "kid": "rsa-1", "cty": "JWT"}),
                &claims,
            ),
        ),
        // Malformed segments.
        ("two segments", format!("{good_h}.{good_p}")),
        ("four segments", format!("{good_rs}.{real_sig}")),
        ("empty header", format!(".{good_p}.{real_sig}")),
        (
            "header not base64url",
            format!("{good_h}*.{good_p}.{real_sig}"),
        ),
        (
            "header not JSON",
            format!("{}.{good_p}.{real_sig}", b64(b"{alg:RS256")),
        ),
        ("payload not JSON", rs_raw_payload(&k, b"not json")),
        ("padded base64", format!("{good_h}=.{good_p}.{real_sig}")),
        (
            "whitespace inside",
            format!("{good_h}. {good_p}.{real_sig}"),
        ),
        // Oversized, validly signed.
        (
            "oversized (9 KiB claim)",
            rs(
                rs_header("rsa-1"),
                &with(json!({"pad": "x".repeat(9 * 1024)})),
            ),
        ),
    ];
    // A duplicate of the control, to check the list is not vacuous: it must pass.
    attacks.push(("(control)", good_rs.clone()));

    let mut accepted = Vec::new();
    for (name, token) in &attacks {
        let res = client()
            .get(server.url("/api/me"))
            .header("authorization", format!("Bearer {token}"))
            .send();
        let Ok(res) = res else {
            // reqwest refuses to send some header bytes at all (e.g. NUL): refused en route.
            continue;
        };
        let status = res.status();
        let challenge = res
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if *name == "(control)" {
            assert_eq!(status, StatusCode::OK);
            continue;
        }
        if status != StatusCode::UNAUTHORIZED || challenge != "Bearer error=\"invalid_token\"" {
            accepted.push(format!("{name}: {status} {challenge:?}"));
        }
        let body: Value = res.json().unwrap_or_default();
        assert_eq!(body["status"], 401, "{name}: {body}");
    }
    assert!(
        accepted.is_empty(),
        "hostile tokens not refused with 401 invalid_token:\n{}\n{}",
        accepted.join("\n"),
        server.log()
    );
    assert!(attacks.len() > 30, "{} attacks", attacks.len());

    // Nobody fetched the header-supplied URLs.
    match trap.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("nestflux connected to the jku/x5u trap from {peer}"),
        Err(e) => panic!("trap listener: {e}"),
    }
    // The log names no token.
    let log = server.log();
    assert!(
        !log.contains(&good_rs) && !log.contains(&real_sig),
        "token in log"
    );
}

fn rs_raw_payload(k: &Keys, payload: &[u8]) -> String {
    let header = b64_json(&json!({"alg": "RS256", "kid": "rsa-1"}));
    let message = format!("{header}.{}", b64(payload));
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &k.rsa_key(), Algorithm::RS256)
        .expect("sign");
    format!("{message}.{sig}")
}
