// Prints the provider's signing keys (KEYS_FILE, private JWKs) as PKCS#8 PEM plus the
// public JWKs, as JSON, so the attack tests can craft tokens with real keys.
// Usage: node keys_pem.mjs KEYS_FILE | --fresh (a new RSA and P-256 pair, not the provider's)
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { privateJwk } from './keygen.mjs';
import fs from 'node:fs';

function fresh() {
  const rsa = privateJwk('rsa', { modulusLength: 2048 });
  const ec = privateJwk('ec', { namedCurve: 'P-256' });
  return [{ ...rsa, kid: 'fresh-rsa', alg: 'RS256' }, { ...ec, kid: 'fresh-ec', alg: 'ES256' }];
}

const keys = process.argv[2] === '--fresh'
  ? fresh()
  : JSON.parse(fs.readFileSync(process.argv[2], 'utf8')).keys;
const out = keys.map((jwk) => {
  const priv = createPrivateKey({ key: jwk, format: 'jwk' });
  const pub = createPublicKey(priv);
  return {
    kid: jwk.kid,
    alg: jwk.alg,
    private_pem: priv.export({ format: 'pem', type: 'pkcs8' }),
    public_spki_pem: pub.export({ format: 'pem', type: 'spki' }),
    public_pkcs1_pem: jwk.kty === 'RSA' ? pub.export({ format: 'pem', type: 'pkcs1' }) : null,
    public_der_b64: pub.export({ format: 'der', type: 'spki' }).toString('base64'),
    public_jwk: pub.export({ format: 'jwk' }),
  };
});
process.stdout.write(JSON.stringify(out));
