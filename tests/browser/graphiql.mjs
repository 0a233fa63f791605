// Headless-Chromium check of the GraphiQL page: it loads with no request leaving the
// machine, opens with the tour's tabs, runs the first (Browse) and shows data, then runs
// the MyOrders tab, which in dev mode comes signed in as the demo shopper.
//
//   BASE_URL=http://127.0.0.1:8080 SCREENSHOT=target/graphiql.png node graphiql.mjs
//
// Exits 0 with a one-line summary, or 1 with the reason.

import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const BASE_URL = (process.env.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const SCREENSHOT = resolve(process.env.SCREENSHOT || 'target/graphiql.png');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TOTAL_TIMEOUT_MS = 60_000;
const STEP_TIMEOUT_MS = 20_000;

const LOCAL_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]', '::1', new URL(BASE_URL).hostname]);

/** Requests to any host but the server under test: the page must work offline. */
const external = [];
const pageErrors = [];
const cspViolations = [];
const consoleErrors = [];

function isExternal(url) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  if (!['http:', 'https:', 'ws:', 'wss:'].includes(parsed.protocol)) return false;
  return !LOCAL_HOSTS.has(parsed.hostname);
}

/** Text of the response editor (CodeMirror 5 keeps its instance on the wrapper element). */
function readResult(page) {
  return page.evaluate(() => {
    const wrapper = document.querySelector('.graphiql-response .CodeMirror');
    if (!wrapper) return '';
    return wrapper.CodeMirror ? wrapper.CodeMirror.getValue() : wrapper.innerText;
  });
}

async function check(context) {
  context.on('request', (request) => {
    if (isExternal(request.url())) external.push(`${request.method()} ${request.url()}`);
  });
  // Fail closed: nothing external is fetched even if the page asks for it.
  await context.route(
    (url) => isExternal(url.href),
    (route) => route.abort('blockedbyclient'),
  );

  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.on('websocket', (ws) => {
    if (isExternal(ws.url())) external.push(`WS ${ws.url()}`);
  });
  page.on('pageerror', (error) => pageErrors.push(error.message));
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const text = message.text();
    if (/Content Security Policy/i.test(text)) cspViolations.push(text);
    else consoleErrors.push(text);
  });

  const response = await page.goto(`${BASE_URL}/graphiql`, { waitUntil: 'load' });
  if (!response || !response.ok()) {
    throw new Error(`GET ${BASE_URL}/graphiql answered ${response ? response.status() : 'nothing'}`);
  }
  const title = await page.title();

  await page.locator('.graphiql-query-editor .CodeMirror').first().waitFor({ state: 'visible' });
  const execute = page.locator('button.graphiql-execute-button').first();
  await execute.waitFor({ state: 'visible' });
  const tabNames = await page.locator('.graphiql-tab').allInnerTexts();
  const run = async (mustInclude) => {
    await execute.click();
    await page
      .waitForFunction(
        (expected) => {
          const wrapper = document.querySelector('.graphiql-response .CodeMirror');
          const text = wrapper ? (wrapper.CodeMirror ? wrapper.CodeMirror.getValue() : wrapper.innerText) : '';
          return text.includes(expected) || text.includes('"errors"');
        },
        mustInclude,
        { timeout: STEP_TIMEOUT_MS, polling: 100 },
      )
      .catch(() => {});
    return readResult(page);
  };
  const result = await run('"categories"');
  // The tour's MyOrders tab, signed in as the demo shopper without copying a token.
  await page.locator('.graphiql-tab', { hasText: 'MyOrders' }).first().click();
  await page.waitForFunction(() => {
    const editor = document.querySelector('.graphiql-query-editor .CodeMirror');
    return editor && editor.CodeMirror && editor.CodeMirror.getValue().includes('query MyOrders');
  }, null, { timeout: STEP_TIMEOUT_MS, polling: 100 });
  // GraphiQL picks the operation under the cursor: put it inside MyOrders.
  await page.evaluate(() => {
    const cm = document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror;
    const line = cm.getValue().split('\n').findIndex((l) => l.includes('query MyOrders'));
    cm.focus();
    cm.setCursor({ line: line + 1, ch: 2 });
  });
  // GraphiQL re-reads the operations of an editor shortly after it changes, as a person
  // switching tabs never notices.
  await page.waitForTimeout(1000);
  const mine = await run('shopper@till.dev');

  await mkdir(dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });

  const problems = [];
  if (external.length) problems.push(`requests left the machine: ${external.join(', ')}`);
  if (pageErrors.length) problems.push(`uncaught page errors: ${pageErrors.join(' | ')}`);
  if (cspViolations.length) problems.push(`CSP violations: ${cspViolations.join(' | ')}`);
  if (!result.includes('"data"')) problems.push(`no "data" in the result pane: ${JSON.stringify(result.slice(0, 500))}`);
  if (result.includes('"errors"')) problems.push(`the result has errors: ${result.slice(0, 500)}`);
  for (const tab of ['Browse', 'SignIn', 'PlaceOrder', 'MyOrders', 'StockChanged', 'BackOffice']) {
    if (!tabNames.some((name) => name.includes(tab))) problems.push(`no ${tab} tab among ${JSON.stringify(tabNames)}`);
  }
  if (!mine.includes('shopper@till.dev') || mine.includes('"errors"')) {
    problems.push(`the MyOrders tab did not run signed in: ${mine.slice(0, 500)}`);
  }
  if (problems.length) throw new Error(problems.join('; '));

  return { title, bytes: result.length };
}

function withTimeout(promise, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function main() {
  const userDataDir = await mkdtemp(join(tmpdir(), 'till-graphiql-'));
  let context;
  // Playwright owns --user-data-dir: a persistent context on a fresh temp dir.
  const launchAndCheck = async () => {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      timeout: STEP_TIMEOUT_MS,
      viewport: { width: 1400, height: 900 },
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    return check(context);
  };
  try {
    const { title, bytes } = await withTimeout(launchAndCheck(), TOTAL_TIMEOUT_MS);
    const warn = consoleErrors.length ? `, ${consoleErrors.length} console error(s): ${consoleErrors[0]}` : '';
    console.log(
      `ok: ${BASE_URL}/graphiql ("${title}") ran the Browse tab offline (${bytes} chars of data) and MyOrders signed in as the demo shopper, screenshot ${SCREENSHOT}${warn}`,
    );
    return 0;
  } catch (error) {
    const leaked = external.length && !error.message.includes('left the machine')
      ? `requests left the machine: ${external.join(', ')}; `
      : '';
    const extra = consoleErrors.length ? ` (console errors: ${consoleErrors.join(' | ')})` : '';
    console.error(`FAIL: ${leaked}${error.message}${extra}`);
    return 1;
  } finally {
    if (context) await withTimeout(context.close(), 10_000).catch(() => {});
    await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
  }
}

process.exit(await main());
