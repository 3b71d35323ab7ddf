/**
 * The credits page in a real browser (Debian's chromium driven by playwright-core), against the service as
 * `npm start` runs it without settings: the local Stripe in its process, its hosted checkout page, its
 * webhook delivery. A buyer pays on the local Stripe page and the balance on the credits page changes within
 * 2 s without a reload; with the webhook dropped, "Sync credits" brings the credits; a plan bought there
 * grants its monthly credits. Screenshots are kept
 * in test-artifacts/ (git-ignored).
 */
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SignJWT } from 'jose';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import Stripe from 'stripe';
import { devSessionKeyPath } from '../devSecret';
import { repositoryRoot, startServiceProcess, stopAllServiceProcesses, type ServiceProcess } from './support/serviceProcess';
import { createTestDatabase, type TestDatabase } from './support/testDatabase';

/** The bound: after paying, the credits page shows the new balance within this long, without a reload. */
const balanceVisibleMillis = 2_000;
const artifactsDir = path.join(repositoryRoot, 'test-artifacts');
const chromiumPath = '/usr/bin/chromium';
const chromiumArgs = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let database: TestDatabase;
let service: ServiceProcess;
let dataDir: string;
let userDataDir: string;
let browser: BrowserContext;
let stripe: Stripe;
let endpointId: string;

beforeAll(async () => {
  database = await createTestDatabase();
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'credits-page-data-'));
  userDataDir = await mkdtemp(path.join(os.tmpdir(), 'credits-page-chromium-'));
  // No Stripe settings: the service runs the local Stripe in its own process, as `npm start` does.
  service = await startServiceProcess({ databaseUrl: database.url, dataDir, name: 'npm start with the local Stripe' });
  const logged = (field: string) => {
    const line = service.logLines.find((entry) => entry.includes(`"${field}"`));
    return line ? ((JSON.parse(line) as Record<string, string>)[field] as string) : undefined;
  };
  stripe = new Stripe('sk_test_browser', { ...stripeConfigOf(logged('stripeApiBase')!), maxNetworkRetries: 0 });
  endpointId = logged('endpointId')!;
  browser = await chromium.launchPersistentContext(userDataDir, { executablePath: chromiumPath, headless: true, args: chromiumArgs, viewport: { width: 1024, height: 900 } });
  await mkdir(artifactsDir, { recursive: true });
}, 120_000);
afterAll(async () => {
  await browser?.close();
  await stopAllServiceProcesses();
  await database?.drop();
  await rm(dataDir, { recursive: true, force: true });
  await rm(userDataDir, { recursive: true, force: true });
});

function stripeConfigOf(base: string) {
  const url = new URL(base);
  return { host: url.hostname, port: Number(url.port), protocol: 'http' as const };
}

/** A session token of the product's sign-in: here the development key the service made in its data dir. */
async function sessionToken(userId: string): Promise<string> {
  const key = (await readFile(devSessionKeyPath(dataDir), 'utf8')).trim();
  return new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(userId).setIssuedAt().setExpirationTime('30m').sign(new TextEncoder().encode(key));
}

async function signIn(page: Page, userId: string): Promise<void> {
  await page.goto(`${service.url}/billing/`);
  await page.getByLabel('Session token').fill(await sessionToken(userId));
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByTestId('stream-state').filter({ hasText: 'Live' }).waitFor();
  await page.getByTestId('total-credits').filter({ hasText: '0 credits' }).waitFor();
}

/**
 * Buys on the local Stripe's page, opened by the credits page in a new tab, with its button (Pay, or Subscribe
 * for a plan); resolves with the time it was pressed.
 */
async function buyOnStripePage(page: Page, buttonName: RegExp, payButton: 'Pay' | 'Subscribe' = 'Pay'): Promise<number> {
  const popupOpened = page.waitForEvent('popup');
  await page.getByRole('button', { name: buttonName }).click();
  const checkout = await popupOpened;
  await checkout.waitForURL(/\/c\/pay\/cs_test_/);
  await checkout.getByRole('button', { name: payButton, exact: true }).waitFor();
  const paidAtMillis = Date.now();
  await checkout.getByRole('button', { name: payButton, exact: true }).click();
  await checkout.waitForURL(/checkout=success/);
  await checkout.close();
  return paidAtMillis;
}

test('paying on the local Stripe page changes the balance on the credits page within 2 s, without a reload; with the webhook dropped, "Sync credits" brings it', async () => {
  const page = await browser.newPage();
  await signIn(page, 'browser_alice');
  // Set once: a reload would lose it.
  await page.evaluate('window.loadedOnce = true');

  const paidAtMillis = await buyOnStripePage(page, /^Buy 500 credits/);
  await page.getByTestId('total-credits').filter({ hasText: '500 credits' }).waitFor({ timeout: balanceVisibleMillis - (Date.now() - paidAtMillis) });
  expect(await page.getByTestId('purchased-credits').textContent()).toBe('500');
  expect(await page.evaluate('window.loadedOnce')).toBe(true);
  await page.screenshot({ path: path.join(artifactsDir, 'credits-page-after-purchase.png'), fullPage: true });

  // The webhook is dropped: the local Stripe's endpoint is disabled, so Stripe's events never reach the service.
  await stripe.webhookEndpoints.update(endpointId, { disabled: true });
  await buyOnStripePage(page, /^Buy 100 credits/);
  await page.getByTestId('pending-purchases').filter({ hasText: 'awaiting payment' }).waitFor();
  expect(await page.getByTestId('total-credits').textContent()).toBe('500 credits');

  // Keyboard only: focus "Sync credits" and press Enter.
  await page.getByRole('button', { name: 'Sync credits' }).focus();
  await page.keyboard.press('Enter');
  await page.getByTestId('total-credits').filter({ hasText: '600 credits' }).waitFor({ timeout: balanceVisibleMillis });
  await page.getByRole('status').filter({ hasText: 'Credits are up to date.' }).waitFor();
  expect(await page.getByTestId('pending-purchases').textContent()).toBe('None');
  expect(await page.evaluate('window.loadedOnce')).toBe(true);
  await page.screenshot({ path: path.join(artifactsDir, 'credits-page-after-sync.png'), fullPage: true });
  await stripe.webhookEndpoints.update(endpointId, { disabled: false });
  await page.close();
}, 90_000);

test('subscribing to a plan on the local Stripe page grants its monthly credits and shows the plan within 2 s, without a reload', async () => {
  const page = await browser.newPage();
  await signIn(page, 'browser_carol');
  await page.evaluate('window.loadedOnce = true');

  const paidAtMillis = await buyOnStripePage(page, /^Subscribe to Basic plan/, 'Subscribe');
  // The sign-up's events (subscription created, then active; its first invoice paid; the session) in any order.
  await page.getByTestId('subscription-credits').filter({ hasText: /^1,000$/ }).waitFor({ timeout: balanceVisibleMillis - (Date.now() - paidAtMillis) });
  await page.getByTestId('plan').filter({ hasText: 'Basic plan (active)' }).waitFor({ timeout: balanceVisibleMillis });
  expect(await page.getByTestId('total-credits').textContent()).toBe('1,000 credits');
  expect(await page.getByTestId('period-end').textContent()).not.toBe('—');
  expect(await page.evaluate('window.loadedOnce')).toBe(true);
  await page.screenshot({ path: path.join(artifactsDir, 'credits-page-after-subscribing.png'), fullPage: true });
  await page.close();
}, 60_000);

test('on a phone the page fits the screen, every control is reachable with Tab, and the page holds no secret', async () => {
  const page = await browser.newPage();
  await page.setViewportSize({ width: 375, height: 740 });
  await signIn(page, 'browser_bob');
  expect(await page.evaluate('document.documentElement.scrollWidth <= window.innerWidth')).toBe(true);
  await page.screenshot({ path: path.join(artifactsDir, 'credits-page-phone.png'), fullPage: true });

  const reached = new Set<string>();
  for (let i = 0; i < 20; i++) {
    await page.keyboard.press('Tab');
    reached.add(String(await page.evaluate("document.activeElement ? document.activeElement.textContent.trim() : ''")));
  }
  for (const control of ['Sync credits', 'Sign out']) expect(reached).toContain(control);
  expect([...reached].filter((label) => label.startsWith('Buy ')).length).toBe(3);
  expect([...reached].filter((label) => label.startsWith('Subscribe to ')).length).toBe(2);

  const html = await (await fetch(`${service.url}/billing/`)).text();
  const key = (await readFile(devSessionKeyPath(dataDir), 'utf8')).trim();
  expect(html).not.toContain(key);
  expect(page.url()).not.toMatch(/token|ticket/);
  await page.close();
}, 60_000);
