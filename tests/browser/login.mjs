// One browser login through NestFlux in Debian's headless Chromium, driven by playwright-core
// (which downloads no browser): login and consent at the real oidc-provider, the session
// cookie as Chromium stores it, an API call and a same-origin write with it, then logout
// through a form, confirmed at the provider. Prints what it observed as one JSON line; the
// Rust test (tests/it/browser.rs) judges it.
//
// Env: APP (https://127.0.0.1:PORT), SPKI (base64 SHA-256 of the test CA's public key, the
// only certificate trusted), CHROMIUM (default /usr/bin/chromium), LOGIN_USER (default admin).
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const APP = process.env.APP;
const SPKI = process.env.SPKI;
const USER = process.env.LOGIN_USER || 'admin';
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
if (!APP || !SPKI) throw new Error('APP and SPKI are required');

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'nestflux-chromium-'));
const out = {};
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  timeout: 60000,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    // Trust exactly the test CA's key: a certificate it did not sign still fails.
    `--ignore-certificate-errors-spki-list=${SPKI}`,
  ],
});
context.setDefaultTimeout(20000);
const page = context.pages()[0] ?? await context.newPage();
try {
  await page.goto(`${APP}/auth/login?return_to=/api/me`);

  // The provider's login page, then its consent page.
  await page.waitForSelector('input[name="login"]');
  out.login_page = page.url();
  await page.fill('input[name="login"]', USER);
  await page.fill('input[name="password"]', 'anything');
  await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
  if (!page.url().startsWith(APP)) {
    await Promise.all([page.waitForURL((u) => u.href.startsWith(APP)), page.click('button[type="submit"]')]);
  }
  await page.waitForURL(`${APP}/api/me`);
  out.landed = page.url();
  out.me = JSON.parse(await page.textContent('body'));

  const cookie = (await context.cookies(APP)).find((c) => c.name === '__Host-nestflux_session');
  out.cookie = cookie && {
    secure: cookie.secure, httpOnly: cookie.httpOnly, sameSite: cookie.sameSite,
    path: cookie.path, domain: cookie.domain, length: cookie.value.length,
  };
  out.cookie_visible_to_scripts = await page.evaluate(() => document.cookie.includes('nestflux_session'));
  out.session = await page.evaluate(async () => (await fetch('/auth/session')).json());
  out.write_status = await page.evaluate(async () => {
    const res = await fetch('/api/notes', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ title: 'written from Chromium' }),
    });
    return res.status;
  });

  // Logout with a form, as a page would; the provider asks to confirm.
  await Promise.all([
    page.waitForURL((u) => !u.href.startsWith(APP)),
    page.evaluate(() => {
      const form = document.createElement('form');
      form.method = 'POST';
      form.action = '/auth/logout';
      document.body.appendChild(form);
      form.submit();
    }),
  ]);
  out.logout_page = page.url();
  out.cookie_after_logout = (await context.cookies(APP)).some((c) => c.name === '__Host-nestflux_session');
  await Promise.all([page.waitForURL((u) => u.href.startsWith(APP)), page.click('button[name="logout"]')]);
  out.after_provider_logout = page.url();
  const res = await page.goto(`${APP}/api/me`);
  out.me_after_logout = res.status();
} catch (e) {
  out.error = String(e && e.stack || e);
  out.error_url = page.url();
  out.error_page = (await page.content().catch(() => '')).slice(0, 3000);
} finally {
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(out));
