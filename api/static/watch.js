// The watch and job pages of atproto-video (api/pages.py). Plain JavaScript, no framework.
// The player is hls.js (static/vendor/hls.min.js, from npm at build time) on a <video>; the
// job page polls app.bsky.video.getJobStatus as the Bluesky app does (every 1.5 s) and turns
// into the player when the job completes. window.atprotoVideo exposes the player for tests.
"use strict";

(function () {
  const POLL_MS = 1500;
  const LABELS = {
    JOB_STATE_CREATED: "Queued",
    JOB_STATE_ENCODING: "Encoding",
    JOB_STATE_ENCODED: "Encoded",
    JOB_STATE_SCANNING: "Checking",
    JOB_STATE_SCANNED: "Checked",
    JOB_STATE_UPLOADING: "Uploading to the PDS",
    JOB_STATE_UPLOADED: "Uploaded to the PDS",
    JOB_STATE_COMPLETED: "Ready",
    JOB_STATE_FAILED: "Failed",
  };

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function bitrate(bps) {
    if (!bps) return "";
    return bps >= 1e6 ? (bps / 1e6).toFixed(2) + " Mb/s" : Math.round(bps / 1e3) + " kb/s";
  }

  function watchBase(did, cid) {
    return "/watch/" + encodeURIComponent(did) + "/" + encodeURIComponent(cid) + "/";
  }

  // The master playlist's variants, for browsers that play HLS natively (no MSE, no hls.js).
  function parseMaster(text) {
    const levels = [];
    for (const line of text.split("\n")) {
      if (!line.startsWith("#EXT-X-STREAM-INF:")) continue;
      const bw = /(?:^|[:,])BANDWIDTH=(\d+)/.exec(line);
      const res = /RESOLUTION=(\d+)x(\d+)/.exec(line);
      levels.push({
        bitrate: bw ? Number(bw[1]) : 0,
        width: res ? Number(res[1]) : 0,
        height: res ? Number(res[2]) : 0,
      });
    }
    return levels;
  }

  function mountPlayer(container, base) {
    container.replaceChildren();
    const video = el("video", {
      id: "video", controls: "", muted: "", playsinline: "", preload: "auto",
      poster: base + "thumbnail.jpg",
    });
    video.muted = true; // autoplay policies allow muted playback only
    const list = el("ul", { id: "renditions" });
    const links = el("p", { class: "links" });
    links.append(el("a", { href: base + "playlist.m3u8" }, "HLS playlist"), " · ",
                 el("a", { href: base + "video.mp4" }, "MP4"), " · ",
                 el("a", { href: base }, "link to this video"));
    container.append(video, el("h2", {}, "Renditions"), list, links);
    const state = { video: video, hls: null, levels: [], base: base };
    window.atprotoVideo = state;

    function showLevels(levels, select) {
      state.levels = levels;
      list.replaceChildren();
      const items = [];
      if (select) {
        const auto = el("button", { type: "button", "data-level": "-1" }, "Auto");
        auto.addEventListener("click", () => select(-1));
        const li = el("li", { class: "auto" });
        li.append(auto);
        list.append(li);
        items.push(li);
      }
      levels.forEach((lv, i) => {
        const li = el("li", { "data-level": String(i) });
        const label = lv.width + "×" + lv.height + " · " + bitrate(lv.bitrate) +
          (lv.codecs ? " · " + lv.codecs : "");
        if (select) {
          const b = el("button", { type: "button", "data-level": String(i) }, label);
          b.addEventListener("click", () => select(i));
          li.append(b);
        } else {
          li.textContent = label;
        }
        list.append(li);
        items.push(li);
      });
    }

    function markCurrent(level, auto) {
      for (const li of list.querySelectorAll("li")) {
        const n = li.classList.contains("auto") ? -1 : Number(li.getAttribute("data-level"));
        li.classList.toggle("current", n === level);
        li.classList.toggle("selected", auto ? n === -1 : n === level);
      }
    }

    if (window.Hls && window.Hls.isSupported()) {
      const hls = new window.Hls();
      state.hls = hls;
      hls.on(window.Hls.Events.MANIFEST_PARSED, (_e, data) => {
        const levels = data.levels.map((lv) => ({
          width: lv.width, height: lv.height, bitrate: lv.bitrate,
          codecs: [lv.videoCodec, lv.audioCodec].filter(Boolean).join(", "),
        }));
        showLevels(levels, (i) => { hls.currentLevel = i; markCurrent(hls.currentLevel, i < 0); });
        markCurrent(hls.currentLevel, true);
        video.play().catch(() => {}); // muted autoplay; the controls remain if it is refused
      });
      hls.on(window.Hls.Events.LEVEL_SWITCHED, (_e, data) => {
        markCurrent(data.level, hls.autoLevelEnabled);
        container.setAttribute("data-level", String(data.level));
      });
      hls.on(window.Hls.Events.ERROR, (_e, data) => {
        if (data.fatal) {
          container.setAttribute("data-error", data.details);
          container.append(el("p", { class: "error" }, "Playback failed: " + data.details));
        }
      });
      hls.loadSource(base + "playlist.m3u8");
      hls.attachMedia(video);
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = base + "playlist.m3u8"; // Safari: HLS without hls.js; no manual switching
      fetch(base + "playlist.m3u8").then((r) => r.text())
        .then((t) => showLevels(parseMaster(t), null));
    } else {
      video.src = base + "video.mp4";
      container.append(el("p", { class: "error" },
        "This browser cannot play HLS here (hls.js missing): playing the MP4."));
    }
    return state;
  }

  function followJob(app) {
    const jobId = app.getAttribute("data-job-id");
    const stateEl = document.getElementById("state");
    const percentEl = document.getElementById("percent");
    const bar = document.getElementById("progress");
    const msg = document.getElementById("message");
    const url = "/xrpc/app.bsky.video.getJobStatus?jobId=" + encodeURIComponent(jobId);

    async function poll() {
      let status;
      try {
        const resp = await fetch(url, { cache: "no-store" });
        const body = await resp.json();
        if (!resp.ok) {
          msg.hidden = false;
          msg.textContent = body.message || body.error || "HTTP " + resp.status;
          if (resp.status === 404) return; // no such job: stop polling
          setTimeout(poll, POLL_MS);
          return;
        }
        status = body.jobStatus;
      } catch (err) {
        setTimeout(poll, POLL_MS); // the service restarting: keep trying
        return;
      }
      const state = status.state;
      app.setAttribute("data-state", state);
      stateEl.textContent = LABELS[state] || state; // unknown states: in progress
      const pct = Math.max(0, Math.min(100, status.progress || 0));
      if (state === "JOB_STATE_COMPLETED") {
        if (!status.blob || !status.blob.ref) {
          msg.hidden = false;
          msg.textContent = "The job completed without a blob.";
          return;
        }
        bar.value = 100;
        percentEl.textContent = "";
        document.title = "Video";
        document.querySelector("h1").textContent = "Video";
        document.getElementById("job").hidden = true;
        const base = watchBase(status.did, status.blob.ref.$link);
        mountPlayer(document.getElementById("player"), base);
        return;
      }
      if (state === "JOB_STATE_FAILED") {
        msg.hidden = false;
        msg.textContent = (status.error || status.message || "processing failed") +
          (status.failureCode ? " (" + status.failureCode + ")" : "");
        bar.removeAttribute("value");
        bar.hidden = true;
        return;
      }
      bar.value = pct;
      percentEl.textContent = pct + "%";
      setTimeout(poll, POLL_MS);
    }
    poll();
  }

  const app = document.getElementById("app");
  if (!app) return;
  if (app.getAttribute("data-page") === "watch") {
    mountPlayer(document.getElementById("player"),
                watchBase(app.getAttribute("data-did"), app.getAttribute("data-cid")));
  } else if (app.getAttribute("data-page") === "job") {
    followJob(app);
  }
})();
