// Page controller: Start/Stop, pickers, connection state, messages and live statistics.

import { microphoneAvailable, MIC_INSECURE, openMicrophone, refreshMicrophonePicker } from "./devices.js";
import { AvatarSession, pageVideoSize, SERVER_UNREACHABLE } from "./signalling.js";
import { showAiBadgeIfConfigured } from "./badge.js";
import { acceptPortraitFiles, uploadPortrait, uploadSettings } from "./upload.js";
import { serverFrameStats, StatsMonitor } from "./stats.js";

const HEALTH_TIMEOUT_MS = 4000;

const $ = (id) => document.getElementById(id);
const ui = {
  start: $("start"),
  state: $("state"),
  message: $("message"),
  video: $("avatar"),
  voice: $("voice"),
  placeholder: $("placeholder"),
  speaking: $("speaking"),
  avatarSelect: $("avatar-select"),
  micSelect: $("mic-select"),
  sizeSelect: $("size-select"),
  fps: $("stat-fps"),
  latency: $("stat-latency"),
  frames: $("stat-frames"),
  serverFps: $("stat-server-fps"),
  freshFps: $("stat-fresh-fps"),
  firstFrame: $("stat-first-frame"),
  engineMs: $("stat-engine-ms"),
  repeated: $("stat-repeated"),
};

/** Everything one Start press owns; `stop()` releases it all, once. */
let current = null;

function setState(state) {
  ui.state.dataset.state = state;
  ui.state.textContent = state;
  document.body.dataset.state = state;
  const busy = state === "connecting" || state === "live";
  ui.start.textContent = busy ? "Stop" : "Start";
  ui.start.classList.toggle("danger", busy);
  ui.avatarSelect.disabled = busy;
  ui.micSelect.disabled = busy;
  ui.sizeSelect.disabled = busy;
}

function showMessage(text, kind = "error") {
  ui.message.textContent = text;
  ui.message.dataset.kind = kind;
  ui.message.hidden = false;
}

function clearMessage() {
  ui.message.hidden = true;
  ui.message.textContent = "";
}

const formatNumber = (value, digits = 0) =>
  typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "–";

function resetStats() {
  for (const el of [ui.fps, ui.latency, ui.frames, ui.serverFps, ui.freshFps, ui.engineMs, ui.repeated,
    ui.firstFrame]) el.textContent = "–";
  ui.speaking.hidden = true;
}

function showReceiverStats(stats) {
  ui.fps.textContent = formatNumber(stats.fps, 1);
  ui.latency.textContent = stats.latencyMs === null ? "–" : `${formatNumber(stats.latencyMs)} ms`;
  ui.latency.title =
    `round trip ${formatNumber(stats.rttMs)} ms + jitter buffer ${formatNumber(stats.jitterMs)} ms`;
  ui.frames.textContent = formatNumber(stats.framesReceived);
}

/** First present numeric field among `names` in a server stats event. */
function pick(event, names) {
  for (const name of names) if (typeof event[name] === "number") return event[name];
  return null;
}

function showServerStats(event) {
  ui.serverFps.textContent = formatNumber(pick(event, ["fps", "fps_sent", "sent_fps"]), 1);
  ui.engineMs.textContent = formatNumber(pick(event, ["engine_ms", "engine_ms_per_frame", "engine_ms_frame"]), 1);
  ui.repeated.textContent = formatNumber(pick(event, ["repeated", "frames_repeated", "repeated_frames"]));
  const frames = serverFrameStats(event);
  ui.freshFps.textContent = formatNumber(frames.freshFps, 1);
  if (frames.repeatShare !== null) ui.repeated.textContent += ` (${formatNumber(100 * frames.repeatShare)}%)`;
  ui.firstFrame.textContent = frames.firstFrameS === null ? "–"
    : `${formatNumber(frames.firstFrameS, 2)} s / ${frames.firstAnimatedS === null ? "–"
      : `${formatNumber(frames.firstAnimatedS, 2)} s`}`;
  if (typeof event.speaking === "boolean") ui.speaking.hidden = !event.speaking;
}

/** Rejects with SERVER_UNREACHABLE unless GET /health answers with status ok in time. */
async function checkServer() {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), HEALTH_TIMEOUT_MS);
  try {
    const response = await fetch("health", { cache: "no-store", signal: abort.signal });
    const body = await response.json();
    if (!response.ok || body?.status !== "ok") throw new Error("unhealthy");
    return body;
  } catch {
    throw new Error(SERVER_UNREACHABLE);
  } finally {
    clearTimeout(timer);
  }
}

async function loadAvatars() {
  let avatars;
  try {
    const response = await fetch("avatars", { cache: "no-store" });
    if (!response.ok) return;
    avatars = await response.json();
  } catch {
    showMessage(SERVER_UNREACHABLE);
    return;
  }
  if (!Array.isArray(avatars)) return;
  const valid = avatars.filter((a) => a && typeof a.id === "string");
  const keep = ui.avatarSelect.value;
  const options = valid.map((a) => new Option(a.name || a.id, a.id, false, Boolean(a.default)));
  // Without a server-marked default, an empty choice lets the server pick its own.
  if (!valid.some((a) => a.default)) options.unshift(new Option("Default avatar", ""));
  ui.avatarSelect.replaceChildren(...options);
  if (keep && valid.some((a) => a.id === keep)) ui.avatarSelect.value = keep;
}

/** The picture sizes the server renders (GET /health "sizes"): a picker when there is a choice, the
 * largest (the server's engine.size) first selected unless the page URL asks for another (`?size=`). */
async function loadSizes() {
  let sizes;
  try {
    const response = await fetch("health", { cache: "no-store" });
    sizes = (await response.json())?.sizes;
  } catch {
    return;
  }
  if (!Array.isArray(sizes)) return;
  sizes = sizes.filter((s) => Number.isInteger(s) && s > 0).sort((a, b) => b - a);
  if (sizes.length < 2) return;
  const wanted = sizes.includes(pageVideoSize()) ? pageVideoSize() : sizes[0];
  ui.sizeSelect.replaceChildren(...sizes.map((s) => new Option(`${s} × ${s}`, String(s), false, s === wanted)));
  $("size-row").hidden = false;
}

function attachVideo(stream) {
  ui.video.srcObject = stream;
  ui.video.play().catch(() => {}); // autoplay of a muted video is allowed; ignore interrupted plays
}

function attachVoice(stream) {
  ui.voice.srcObject = stream;
  ui.voice.play().catch(() => {}); // may need a gesture in some browsers; Start was one
}

/** Releases the microphone, the session and the stats poller; safe to call repeatedly. */
function stop() {
  const run = current;
  current = null;
  if (run) {
    run.stopped = true;
    run.monitor?.stop();
    run.session?.stop();
    for (const track of run.micStream?.getTracks() ?? []) track.stop();
  }
  ui.video.srcObject = null;
  ui.voice.srcObject = null;
  ui.placeholder.hidden = false;
  resetStats();
  setState("idle");
}

function fail(message) {
  stop();
  setState("error");
  showMessage(message);
}

async function start() {
  stop();
  clearMessage();
  const run = { stopped: false, session: null, micStream: null, monitor: null };
  current = run;
  setState("connecting");
  try {
    if (!microphoneAvailable()) throw new Error(MIC_INSECURE);
    await checkServer();
    if (run.stopped) return;
    run.micStream = await openMicrophone(ui.micSelect.value);
    if (run.stopped) {
      for (const track of run.micStream.getTracks()) track.stop();
      return;
    }
    refreshMicrophonePicker(ui.micSelect); // labels become visible once permission is granted

    run.session = new AvatarSession({
      micStream: run.micStream,
      avatarId: ui.avatarSelect.value,
      size: Number(ui.sizeSelect.value) || pageVideoSize(),
      handlers: {
        onVideo: attachVideo,
        onAudio: attachVoice,
        onStats: showServerStats,
        onFailure: (message) => {
          if (current === run) fail(message);
        },
        onConnectionState: (state) => {
          if (current === run && state === "disconnected") showMessage("Connection unstable — reconnecting…", "info");
          if (current === run && state === "connected") clearMessage();
        },
      },
    });
    await run.session.start();
    if (run.stopped) return;
    run.monitor = new StatsMonitor(run.session.pc, ui.video, showReceiverStats);
  } catch (error) {
    if (current === run) fail(error.message);
  }
}

ui.start.addEventListener("click", () => {
  if (current) stop();
  else start();
});

ui.video.addEventListener("playing", () => {
  if (current) {
    ui.placeholder.hidden = true;
    $("preview").hidden = true;
    setState("live");
  }
});

/** The visitor's own portrait: uploaded, shown framed as it will stream, then picked in the avatar list
 * (a running session restarts with it). */
async function usePortraitFile(file) {
  const consent = $("consent");
  if (!$("consent-row").hidden && !consent.checked) {
    showMessage("Tick the box to confirm the person in the photo agreed, then try again");
    consent.focus();
    return;
  }
  $("choose").disabled = true;
  showMessage("Sending your portrait…", "info");
  try {
    const portrait = await uploadPortrait(file, {
      consent: consent.checked,
      onProgress: (share, phase) => showMessage(phase === "preparing" ? "Finding the face…"
        : `Sending your portrait… ${Math.round(100 * share)}%`, "info"),
    });
    const preview = $("preview");
    preview.src = portrait.preview;
    preview.hidden = false;
    ui.placeholder.hidden = true;
    let option = ui.avatarSelect.querySelector("option[data-upload]");
    if (!option) {
      option = new Option("Your portrait", portrait.avatar);
      option.dataset.upload = "true";
      ui.avatarSelect.append(option);
    }
    option.value = portrait.avatar;
    ui.avatarSelect.value = portrait.avatar;
    const warnings = (portrait.warnings ?? []).join("; ");
    const next = current ? "Restarting with it…" : "Press Start to animate it.";
    showMessage(`This is how your portrait will look. ${next}${warnings ? ` Note: ${warnings}` : ""}`, "info");
    if (current) start();
  } catch (error) {
    showMessage(error.message);
  } finally {
    $("choose").disabled = false;
  }
}

uploadSettings().then(({ upload, consent }) => {
  $("upload").hidden = !upload;
  $("consent-row").hidden = !consent;
  if (!upload) return;
  acceptPortraitFiles(document.querySelector(".stage"), $("file"), usePortraitFile);
  $("choose").addEventListener("click", () => $("file").click());
});

navigator.mediaDevices?.addEventListener?.("devicechange", () => refreshMicrophonePicker(ui.micSelect));
window.addEventListener("pagehide", stop);

setState("idle");
refreshMicrophonePicker(ui.micSelect);
loadAvatars();
loadSizes();
showAiBadgeIfConfigured();
