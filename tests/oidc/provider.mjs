// Minimal real OpenID Provider (panva/oidc-provider v9) for NestFlux tests.
// Copied from ../shared/tools/oidc/provider.mjs; run by tests/it/oidc.rs and .ci/schemathesis.sh.
// Usage: PORT=9000 node provider.mjs
// Env: PORT (default 9000; 0 takes a free port, printed in the ready line),
//      RP_REDIRECT (default http://127.0.0.1:8080/callback),
//      API_AUD (default http://127.0.0.1:8080/api), API_AUD_ES, KEYS_FILE (default ./keys.json),
//      KEY_GEN (kid suffix of freshly generated keys, default 1),
//      AT_TTL (access-token lifetime in seconds, default 300),
//      ROTATE_REFRESH=1 (a new refresh token at every refresh),
//      REFRESH_DELAY_MS (hold each refresh grant this long, to catch requests in flight).
// Prints `grant <grant_type>` for every successful token grant (the tests count refreshes).
import Provider from 'oidc-provider';
import { privateJwk } from './keygen.mjs';
import fs from 'node:fs';
import http from 'node:http';

const PORT = Number(process.env.PORT ?? 9000);
const RP_REDIRECT = process.env.RP_REDIRECT || 'http://127.0.0.1:8080/callback';
const API_AUD = process.env.API_AUD || 'http://127.0.0.1:8080/api';       // RS256 JWT ATs
const API_AUD_ES = process.env.API_AUD_ES || 'urn:nestflux:api:es256';    // ES256 JWT ATs
const KEYS_FILE = process.env.KEYS_FILE || new URL('./keys.json', import.meta.url).pathname;
// Key generation label: a new KEY_GEN in a new KEYS_FILE is a key rotation with new kids.
const KEY_GEN = process.env.KEY_GEN || '1';
const AT_TTL = Number(process.env.AT_TTL || 300);
const REFRESH_DELAY_MS = Number(process.env.REFRESH_DELAY_MS || 0);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// Start-up stages on stderr, with milliseconds since node started: when a start stalls, the
// harness shows how far it got (that is how keygen.mjs's deadlock was found).
const stage = (what) => console.error(`provider.mjs: ${what} at ${Math.round(performance.now())} ms`);
stage('modules loaded');

// Persist signing keys so restarts keep the same kids (private JWKs; /jwks only serves public parts).
function loadKeys() {
  if (fs.existsSync(KEYS_FILE)) return JSON.parse(fs.readFileSync(KEYS_FILE, 'utf8'));
  stage('generating keys');
  const rsa = privateJwk('rsa', { modulusLength: 2048 });
  const ec = privateJwk('ec', { namedCurve: 'P-256' });
  const keys = { keys: [
    { ...rsa, kid: `rsa-${KEY_GEN}`, use: 'sig', alg: 'RS256' },
    { ...ec, kid: `ec-${KEY_GEN}`, use: 'sig', alg: 'ES256' },
  ] };
  fs.writeFileSync(KEYS_FILE, JSON.stringify(keys), { mode: 0o600 });
  stage('keys generated');
  return keys;
}

// Static RBAC data: login name -> roles. devInteractions accepts ANY login/password.
const ROLES = { admin: ['admin', 'user'], alice: ['user'], bob: ['auditor'] };
const CLIENT_ROLES = { 'nestflux-svc': ['service'], 'nestflux-web': ['service'] };

const configuration = {
  jwks: loadKeys(),
  clients: [
    { // confidential web client: code(+PKCE) + refresh + client_credentials, RS256 id_token
      client_id: 'nestflux-web', client_secret: 'web-secret',
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types: ['code'], redirect_uris: [RP_REDIRECT],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
      scope: 'openid profile email roles offline_access api:read api:write',
      post_logout_redirect_uris: [RP_REDIRECT.replace(/\/callback$/, '/'), new URL('/', RP_REDIRECT).href],
    },
    { // public SPA client: PKCE required automatically (auth method none), ES256 id_token
      client_id: 'nestflux-spa', token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'], redirect_uris: [RP_REDIRECT],
      id_token_signed_response_alg: 'ES256',
    },
    { // machine client
      client_id: 'nestflux-svc', client_secret: 'svc-secret',
      grant_types: ['client_credentials'], response_types: [], redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_post',
      scope: 'api:read api:write',
    },
  ],
  pkce: { required: () => true },                 // PKCE (S256) for every code flow
  scopes: ['openid', 'offline_access', 'profile', 'email', 'roles', 'api:read', 'api:write'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], roles: ['roles'] },
  conformIdTokenClaims: false,                     // put scope claims (roles, email) in the id_token too
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, name: id, email: `${id}@example.test`, email_verified: true,
      roles: ROLES[id] || ['user'] }),
  }),
  // custom claims inside JWT access tokens (user tokens and client_credentials tokens)
  extraTokenClaims: async (ctx, token) => {
    if (REFRESH_DELAY_MS && ctx.oidc.params.grant_type === 'refresh_token') await sleep(REFRESH_DELAY_MS);
    return token.accountId
      ? { roles: ROLES[token.accountId] || ['user'] }
      : { roles: CLIENT_ROLES[token.clientId] || [] };
  },
  ...(process.env.ROTATE_REFRESH === '1' ? { rotateRefreshToken: () => true } : {}),
  // refresh token whenever the client is allowed the refresh_token grant (no offline_access/prompt=consent dance)
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  features: {
    devInteractions: { enabled: true },            // built-in login+consent HTML forms (any user/password)
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => oneOf || API_AUD,   // no `resource` param -> API_AUD
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resource) => {
        if (resource === API_AUD) return { scope: 'api:read api:write', audience: API_AUD,
          accessTokenTTL: AT_TTL, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
        if (resource === API_AUD_ES) return { scope: 'api:read api:write', audience: API_AUD_ES,
          accessTokenTTL: AT_TTL, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } } };
        throw new Provider.errors.InvalidTarget();
      },
    },
  },
  ttl: { AccessToken: AT_TTL, IdToken: 300, RefreshToken: 86400, ClientCredentials: 300,
    Interaction: 600, Session: 3600, Grant: 3600, AuthorizationCode: 60 },
  cookies: { keys: ['nestflux-test-cookie-key'] },
};

// Listen first, then build the provider for the port actually bound: with PORT=0 the
// kernel picks a free port, so no other process can take it between choosing and binding.
const server = http.createServer();
server.listen(PORT, '127.0.0.1', () => {
  stage(`listening on port ${server.address().port}`);
  const ISSUER = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(ISSUER, configuration);
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  provider.on('grant.success', (ctx) => console.log(`grant ${ctx.oidc.params.grant_type}`));
  server.on('request', provider.callback());
  console.log(`oidc-provider ${ISSUER} ready`);
});
