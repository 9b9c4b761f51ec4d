// One browser in one call, for relay/tests/browser_e2e.rs, which runs this driver inside the
// browser's client network namespace (`ip netns exec NS node driver.mjs CONFIG`), so that the
// browser and the connection that controls it both live there.
//
// CONFIG is one JSON argument:
//   browser     "chromium" (driven over CDP) or "firefox" (over WebDriver BiDi)
//   executable  the browser binary (Debian's /usr/bin/chromium, /usr/bin/firefox-esr)
//   role        "offerer" or "answerer"
//   iceServers  RTCPeerConnection iceServers
//   policy      iceTransportPolicy: "all" or "relay"
//   seconds     how long the call runs once its data channel is open
//   scratch     a fresh directory of this driver's: the profile and HOME go there
//   timeout     seconds after which the driver gives up (error) and exits
//
// Protocol: JSON lines. Out (stdout): {type: "browser", pid}, then what the page posts: offer,
// answer, candidate, state, result, error. In (stdin): offer, answer and candidate from the
// other end, and {type: "quit"} (or end of input) to close the browser and exit. Logs go to
// stderr. Nothing is downloaded: puppeteer-core only drives the given binary.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import puppeteer from 'puppeteer-core';

const config = JSON.parse(process.argv[2] ?? '{}');
const tag = `${config.browser}/${config.role}`;
const log = (text) => process.stderr.write(`[${tag}] ${text}\n`);
const emit = (message) => process.stdout.write(`${JSON.stringify(message)}\n`);

let browser = null;
let exiting = false;

/// Closes the browser (killing it if it does not close within 5 s) and exits with `code`.
async function shutdown(code) {
  if (exiting) return;
  exiting = true;
  const child = browser?.process();
  if (browser) {
    const closed = browser.close().catch((e) => log(`close: ${e}`));
    const timeout = new Promise((resolve) => setTimeout(resolve, 5000));
    await Promise.race([closed, timeout]);
  }
  if (child && child.exitCode === null && child.signalCode === null) {
    log(`browser ${child.pid} did not close; killing it`);
    child.kill('SIGKILL');
  }
  process.exit(code);
}

function fail(error) {
  log(`error: ${error?.stack ?? error}`);
  emit({ type: 'error', error: `${error}` });
  shutdown(1);
}

const watchdog = setTimeout(
  () => fail(new Error(`no result within ${config.timeout} s`)),
  config.timeout * 1000,
);
watchdog.unref();
process.on('SIGTERM', () => shutdown(143));
process.on('SIGINT', () => shutdown(130));

/// Serves page.html on 127.0.0.1 (a secure context) on a port the kernel picks.
async function serve() {
  const page = fs.readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), 'page.html'));
  const server = http.createServer((req, res) => {
    if (req.url === '/favicon.ico') {
      res.writeHead(204);
      res.end();
    } else if (req.url === '/' || req.url === '/index.html') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(page);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  server.unref();
  return `http://127.0.0.1:${server.address().port}/`;
}

async function launch() {
  const profile = path.join(config.scratch, 'profile');
  const home = path.join(config.scratch, 'home');
  fs.mkdirSync(profile, { recursive: true });
  fs.mkdirSync(home, { recursive: true });
  const env = { ...process.env, HOME: home };
  if (config.browser === 'chromium') {
    return puppeteer.launch({
      browser: 'chrome',
      executablePath: config.executable,
      headless: true,
      userDataDir: profile,
      env,
      args: [
        '--no-sandbox', // As root.
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  }
  if (config.browser === 'firefox') {
    return puppeteer.launch({
      browser: 'firefox',
      protocol: 'webDriverBiDi',
      executablePath: config.executable,
      headless: true,
      userDataDir: profile,
      env,
      extraPrefsFirefox: {
        // Muted autoplay of the remote video without a user gesture.
        'media.autoplay.default': 0,
        'media.autoplay.blocking_policy': 0,
      },
    });
  }
  throw new Error(`unknown browser ${config.browser}`);
}

async function main() {
  const url = await serve();
  browser = await launch();
  emit({ type: 'browser', pid: browser.process()?.pid ?? null, version: await browser.version() });
  log(`${await browser.version()} started, serving ${url}`);

  const page = await browser.newPage();
  page.on('console', (m) => log(`console: ${m.text()}`));
  page.on('pageerror', (e) => log(`page error: ${e}`));
  await page.goto(url);
  await page.evaluate(
    (c) => window.start(c),
    { role: config.role, iceServers: config.iceServers, policy: config.policy, seconds: config.seconds },
  );

  // From the other end, via the test: into the page, in order.
  let inbound = Promise.resolve();
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (!line.trim()) return;
    const message = JSON.parse(line);
    if (message.type === 'quit') {
      shutdown(0);
      return;
    }
    inbound = inbound.then(() => page.evaluate((m) => window.signal(m), message)).catch(fail);
  });
  lines.on('close', () => shutdown(0));

  // From the page: out to the test.
  while (!exiting) {
    const messages = await page.evaluate(() => window.drain());
    for (const message of messages) {
      emit(message);
      if (message.type === 'result') clearTimeout(watchdog);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

main().catch((e) => {
  if (!exiting) fail(e);
});
