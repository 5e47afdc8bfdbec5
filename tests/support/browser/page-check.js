// Drives Debian's chromium with playwright-core through the watch or job page of a running
// service (tests/support/browser.py runs it). One JSON argument:
//   {url, executable, outDir, timeoutMs}
// Prints one JSON line: what the page showed and did. Assertions live in the Python tests.
"use strict";
const path = require("path");
const { chromium } = require("playwright-core");

async function main() {
  const spec = JSON.parse(process.argv[2]);
  const out = { console: [], errors: [] };
  const browser = await chromium.launch({
    executablePath: spec.executable,
    headless: true,
    // Servers have no GPU, and containers often a small /dev/shm.
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
           "--autoplay-policy=no-user-gesture-required", "--mute-audio"],
  });
  const timeout = spec.timeoutMs || 300000;
  try {
    out.browserVersion = browser.version();
    const page = await browser.newPage({ viewport: { width: 1000, height: 820 } });
    page.setDefaultTimeout(timeout);
    page.on("console", (m) => out.console.push(m.type() + ": " + m.text()));
    page.on("pageerror", (e) => out.errors.push(String(e)));
    const resp = await page.goto(spec.url);
    out.status = resp.status();
    out.page = await page.getAttribute("#app", "data-page");

    if (out.page === "job") {
      await page.waitForSelector("#app[data-state]");
      out.firstState = await page.getAttribute("#app", "data-state");
      out.firstStateLabel = await page.textContent("#state");
      out.firstProgressShown = await page.isVisible("#progress");
      if (out.firstState !== "JOB_STATE_COMPLETED") {
        out.inProgressShot = path.join(spec.outDir, "job-in-progress.png");
        await page.screenshot({ path: out.inProgressShot, fullPage: true });
      }
      await page.waitForFunction(() => {
        const s = document.getElementById("app").getAttribute("data-state");
        return s === "JOB_STATE_FAILED" || document.getElementById("video") !== null;
      });
      out.finalState = await page.getAttribute("#app", "data-state");
      if (out.finalState === "JOB_STATE_FAILED") {
        out.message = await page.textContent("#message");
        return out;
      }
      out.jobSectionHidden = await page.isHidden("#job");
    }

    out.codecs = await page.evaluate(() => ({
      mse: typeof MediaSource !== "undefined",
      h264: typeof MediaSource !== "undefined" &&
        MediaSource.isTypeSupported('video/mp4; codecs="avc1.640028"'),
      aac: typeof MediaSource !== "undefined" &&
        MediaSource.isTypeSupported('audio/mp4; codecs="mp4a.40.2"'),
      nativeHls: document.createElement("video").canPlayType("application/vnd.apple.mpegurl"),
    }));
    out.hlsJs = await page.evaluate(() => (window.Hls ? window.Hls.version : null));
    await page.waitForFunction(() => window.atprotoVideo && window.atprotoVideo.levels.length > 0);
    out.poster = await page.evaluate(() => window.atprotoVideo.video.poster);
    out.posterFetch = await page.evaluate(async () => {
      const r = await fetch(window.atprotoVideo.video.poster);
      return { status: r.status, type: r.headers.get("content-type"),
               bytes: (await r.arrayBuffer()).byteLength };
    });
    out.levels = await page.evaluate(() => window.atprotoVideo.levels);
    out.renditionList = await page.$$eval("#renditions li", (lis) => lis.map((li) => li.textContent));

    // Plays: currentTime advances.
    await page.waitForFunction(() => window.atprotoVideo.video.currentTime > 0.3);
    const t1 = await page.evaluate(() => window.atprotoVideo.video.currentTime);
    await page.waitForFunction((t) => window.atprotoVideo.video.currentTime > t + 0.5, t1);
    const t2 = await page.evaluate(() => window.atprotoVideo.video.currentTime);
    out.played = [t1, t2];

    // Every rendition can be selected, and plays once selected.
    out.switches = [];
    for (let i = 0; i < out.levels.length; i++) {
      await page.evaluate(() => {
        const v = window.atprotoVideo.video;
        if (v.ended || v.currentTime > v.duration - 2.5) v.currentTime = 0;
        if (v.paused) v.play();
      });
      await page.click(`#renditions button[data-level="${i}"]`);
      await page.waitForFunction((n) => window.atprotoVideo.hls.currentLevel === n &&
        document.getElementById("player").getAttribute("data-level") === String(n), i);
      // Its frames are on screen (the decoder's size is the rendition's) and time goes on.
      await page.waitForFunction((n) => {
        const v = window.atprotoVideo.video;
        if (v.ended) { v.currentTime = 0; v.play(); }
        return v.videoHeight === window.atprotoVideo.levels[n].height;
      }, i);
      const before = await page.evaluate(() => window.atprotoVideo.video.currentTime);
      await page.waitForFunction((t) => {
        const v = window.atprotoVideo.video;
        if (v.ended) { v.currentTime = 0; v.play(); return false; }
        return v.currentTime > Math.min(t + 0.3, v.duration - 0.5) && !v.paused;
      }, before);
      out.switches.push(await page.evaluate(() => ({
        currentLevel: window.atprotoVideo.hls.currentLevel,
        videoHeight: window.atprotoVideo.video.videoHeight,
        selected: document.querySelector("#renditions li.selected").getAttribute("data-level"),
        currentTime: window.atprotoVideo.video.currentTime,
      })));
    }
    // Hold the last rendition's frame for the screenshot.
    await page.evaluate(() => window.atprotoVideo.video.pause());
    await page.waitForFunction(() => window.atprotoVideo.video.readyState >= 2);
    // The frame on screen is a picture, not black: count its colours on a canvas.
    out.frameColours = await page.evaluate(() => {
      const v = window.atprotoVideo.video;
      const c = document.createElement("canvas");
      c.width = 64; c.height = 36;
      const g = c.getContext("2d");
      g.drawImage(v, 0, 0, 64, 36);
      const px = g.getImageData(0, 0, 64, 36).data;
      const seen = new Set();
      for (let i = 0; i < px.length; i += 4) seen.add((px[i] >> 3) << 10 | (px[i + 1] >> 3) << 5 | px[i + 2] >> 3);
      return seen.size;
    });
    out.playerShot = path.join(spec.outDir, "player.png");
    await page.screenshot({ path: out.playerShot, fullPage: true });
    out.playerError = await page.getAttribute("#player", "data-error");
    return out;
  } finally {
    await browser.close();
  }
}

main().then(
  (out) => { process.stdout.write(JSON.stringify(out) + "\n"); },
  (err) => { process.stdout.write(JSON.stringify({ fatal: String(err && err.stack || err) }) + "\n"); process.exitCode = 1; },
);
