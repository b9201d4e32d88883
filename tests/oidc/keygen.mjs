// A new private key as a JWK, exported inside the generation itself.
//
// Not `generateKeyPairSync(...).privateKey.export({ format: 'jwk' })`: on Node.js 20 that
// can deadlock the main thread. The export holds the key's mutex while it allocates; an
// allocation may start a garbage collection, which may finalize the (by then unreachable)
// generation job, whose destructor takes the same mutex. It showed as a provider start that
// never printed its ready line: twice on CI, once in three local runs of the test suite, and
// once in 780 starts of provider.mjs in a loop, where gdb showed the main thread in
// `ExportJWKEcKey` → `Heap::CollectGarbage` → `~KeyGenJob` → `uv_mutex_lock`. A loop of
// generate-then-export, one per tick, under `node --max-semi-space-size=1` (frequent
// collections) hung in both of two runs; the same loop with the encoding given to the
// generation ran 68,386 times in 40 s.
import { generateKeyPairSync } from 'node:crypto';

/** `type` and `options` as for generateKeyPairSync ('rsa' + modulusLength, 'ec' + namedCurve). */
export function privateJwk(type, options) {
  return generateKeyPairSync(type, {
    ...options,
    publicKeyEncoding: { format: 'jwk' },
    privateKeyEncoding: { format: 'jwk' },
  }).privateKey;
}
