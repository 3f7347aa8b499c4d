// Kiosk page: the portrait as large as the screen allows, in speak mode. Type text and press Speak (the
// voice follows the text's language unless one is picked), Interrupt, a microphone toggle for barge-in,
// and (when the server allows it) the visitor's own portrait, dropped on the face or picked from a file.
// Connects (and reconnects) by itself. Its activity - connecting, ready, listening, thinking, speaking,
// preparing / preview (an uploaded portrait), offline - is in document.body.dataset.activity and in
// words in #state; after a while without anyone using it an invitation shows over the face (attract
// mode; ?attract=SECONDS sets the wait).

import { showAiBadgeIfConfigured } from "./badge.js";
import { openMicrophone } from "./devices.js";
import { AvatarSession } from "./signalling.js";
import { acceptPortraitFiles, uploadPortrait, uploadSettings } from "./upload.js";

const RETRY_MS = 3000;
const DETECT_DELAY_MS = 350;
const ATTRACT_AFTER_S = Number(new URLSearchParams(window.location.search).get("attract")) || 45;
const ACTIVITY_LABELS = {
  connecting: "Connecting", preparing: "Preparing your portrait", preview: "Preview", ready: "Ready",
  listening: "Listening", thinking: "Thinking", speaking: "Speaking", offline: "Offline",
};
const $ = (id) => document.getElementById(id);
const ui = {
  bar: $("bar"), text: $("text"), voiceSelect: $("voice-select"), speak: $("speak"), mic: $("mic"),
  interrupt: $("interrupt"), state: $("state"), message: $("message"), speaking: $("speaking"),
  video: $("avatar"), voice: $("voice"), detected: $("detected"), attract: $("attract"), stage: $("stage"),
  preview: $("preview"), upload: $("upload"), file: $("file"), choose: $("choose"), consent: $("consent"),
  consentRow: $("consent-row"), uploadActions: $("upload-actions"), previewActions: $("preview-actions"),
  usePortrait: $("use-portrait"), cancelPortrait: $("cancel-portrait"),
};

let session = null;
let micStream = null;
let avatarId = "";
let pendingPortrait = null;
let speakingNow = false;
let thinking = false;
let lastUse = performance.now();
let detectTimer = 0;
let detectedCode = null;
/** Times (performance.now ms) of the last portrait upload, for benchmarks/portrait_upload.py. */
window.portraitTimings = {};

function setState(state) {
  document.body.dataset.state = state;
  ui.speak.disabled = ui.interrupt.disabled = ui.mic.disabled = state !== "live";
  updateActivity();
}

function updateActivity() {
  const state = document.body.dataset.state;
  let activity = "ready";
  if (state === "connecting") activity = "connecting";
  else if (state === "preparing") activity = pendingPortrait ? "preview" : "preparing";
  else if (state === "error") activity = "offline";
  else if (speakingNow) activity = "speaking";
  else if (thinking) activity = "thinking";
  else if (micStream) activity = "listening";
  document.body.dataset.activity = activity;
  ui.state.dataset.state = activity;
  ui.state.textContent = ACTIVITY_LABELS[activity];
}

function showMessage(text, kind = "error") {
  ui.message.textContent = text;
  ui.message.dataset.kind = kind;
  ui.message.hidden = !text;
}

function play(element, stream) {
  element.srcObject = stream;
  element.play().catch(() => {}); // the voice may wait for the first click (Speak is one)
}

const languageName = (code) => ui.voiceSelect.querySelector(`option[value="${code}"]`)?.textContent ?? code;

function showDetected(voiceUsed = null) {
  const chosen = ui.voiceSelect.value;
  if (!ui.text.value.trim()) {
    ui.detected.textContent = chosen === "auto" ? "" : `Voice: ${languageName(chosen)}`;
    return;
  }
  const detected = detectedCode ? languageName(detectedCode) : "not sure";
  if (chosen === "auto") ui.detected.textContent = `Language: ${voiceUsed ? languageName(voiceUsed) : detected}`;
  else ui.detected.textContent = `Language: ${detected} · voice: ${languageName(chosen)} (your choice)`;
}

function onEvent(event) {
  if (event.type === "speaking_started") {
    speakingNow = true;
    thinking = false;
    ui.speaking.hidden = false;
  }
  if (event.type === "speaking_finished") {
    speakingNow = false;
    ui.speaking.hidden = true;
    if (event.reason === "barge_in") showMessage("Listening…", "info");
  }
  if (event.type === "queued") {
    showMessage("");
    if (event.request === "say" && event.voice) showDetected(event.voice);
  }
  if (event.type === "language") {
    detectedCode = event.language ?? null;
    showDetected();
  }
  if (event.type === "interrupted") thinking = false;
  updateActivity();
  if (speakingNow) noteUse();
}

function onServerError(message) {
  thinking = false;
  updateActivity();
  showMessage(message);
}

async function connect() {
  setState("connecting");
  const current = new AvatarSession({
    mode: "speak",
    avatarId,
    audioDirection: "sendrecv", // the microphone can be attached later without renegotiating
    handlers: {
      onVideo: (stream) => play(ui.video, stream),
      onAudio: (stream) => play(ui.voice, stream),
      onError: onServerError,
      onEvent,
      onFailure: (message) => retry(message),
    },
  });
  session = current;
  try {
    await current.start();
    if (window.portraitTimings.use && !window.portraitTimings.answered) window.portraitTimings.answered = performance.now();
    if (micStream) await current.setMicrophone(micStream.getAudioTracks()[0] ?? null);
  } catch (error) {
    if (session === current) {
      current.stop();
      if (avatarId && /uploaded portrait is gone/.test(error.message)) avatarId = ""; // fall back
      retry(error.message);
    }
  }
}

function retry(message) {
  speakingNow = thinking = false;
  setState("error");
  showMessage(`${message} — reconnecting…`);
  ui.speaking.hidden = true;
  setTimeout(connect, RETRY_MS);
}

/** Ends the running session (the video keeps its last frame). */
function hangUp() {
  const old = session;
  session = null;
  old?.stop();
  speakingNow = thinking = false;
  ui.speaking.hidden = true;
}

function reconnect() {
  hangUp();
  connect();
}

// ------------------------------------------------------------------------------ speaking
ui.bar.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.text.value.trim();
  if (!text) {
    showMessage("Type something for the portrait to say");
    return;
  }
  ui.voice.play().catch(() => {}); // this click lets the browser play the portrait's voice
  if (!session?.send({ type: "say", text, voice: ui.voiceSelect.value })) {
    showMessage("Not connected yet");
    return;
  }
  thinking = true;
  updateActivity();
});

ui.text.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) ui.bar.requestSubmit();
});

ui.text.addEventListener("input", () => {
  clearTimeout(detectTimer);
  const text = ui.text.value.trim();
  if (!text) {
    detectedCode = null;
    showDetected();
    return;
  }
  detectTimer = setTimeout(() => session?.send({ type: "detect_language", text }), DETECT_DELAY_MS);
});
ui.voiceSelect.addEventListener("change", () => showDetected());

ui.interrupt.addEventListener("click", () => session?.send({ type: "interrupt" }));

ui.mic.addEventListener("click", async () => {
  if (micStream) {
    for (const track of micStream.getTracks()) track.stop();
    micStream = null;
    ui.mic.setAttribute("aria-pressed", "false");
    updateActivity();
    await session?.setMicrophone(null).catch(() => {});
    return;
  }
  try {
    micStream = await openMicrophone("");
    ui.mic.setAttribute("aria-pressed", "true");
    await session?.setMicrophone(micStream.getAudioTracks()[0]);
    showMessage("Listening: talk to interrupt the portrait", "info");
  } catch (error) {
    micStream = null;
    showMessage(error.message);
  }
  updateActivity();
});

// ------------------------------------------------------------------------------ own portrait
function showPreview(portrait) {
  pendingPortrait = portrait;
  ui.preview.src = portrait.preview;
  ui.preview.hidden = false;
  ui.uploadActions.hidden = true;
  ui.previewActions.hidden = false;
  const warnings = (portrait.warnings ?? []).join("; ");
  showMessage(`This is how your portrait will look.${warnings ? ` Note: ${warnings}` : ""}`, "info");
  ui.usePortrait.focus();
  updateActivity();
}

function closePreview() {
  pendingPortrait = null;
  ui.preview.hidden = true;
  ui.preview.removeAttribute("src");
  ui.uploadActions.hidden = false;
  ui.previewActions.hidden = true;
}

async function sendPortrait(file) {
  noteUse();
  const timings = (window.portraitTimings = { file: performance.now() });
  if (!ui.consentRow.hidden && !ui.consent.checked) {
    showMessage("Tick the box to confirm the person in the photo agreed, then try again");
    ui.consent.focus();
    return;
  }
  closePreview();
  ui.choose.disabled = true;
  // The stream pauses while the photo is prepared: on a small CPU the live video (server encoding, browser
  // decoding) would otherwise slow the preparation several times over (docs/benchmarks.md).
  hangUp();
  setState("preparing");
  showMessage("Sending your portrait…", "info");
  try {
    const portrait = await uploadPortrait(file, {
      consent: ui.consent.checked,
      onProgress: (share, phase) => showMessage(phase === "preparing" ? "Finding the face…"
        : `Sending your portrait… ${Math.round(100 * share)}%`, "info"),
    });
    timings.ready = performance.now();
    timings.server = portrait.ms;
    showPreview(portrait);
  } catch (error) {
    showMessage(error.message);
    connect(); // back to the portrait that was streaming
  } finally {
    ui.choose.disabled = false;
  }
}

ui.usePortrait.addEventListener("click", () => {
  if (!pendingPortrait) return;
  avatarId = pendingPortrait.avatar;
  window.portraitTimings.use = performance.now();
  ui.previewActions.hidden = true;
  ui.uploadActions.hidden = false;
  showMessage("Animating your portrait…", "info");
  pendingPortrait = null;
  reconnect();
});
ui.cancelPortrait.addEventListener("click", () => {
  closePreview();
  showMessage("");
  if (!session) connect();
});
ui.choose.addEventListener("click", () => ui.file.click());

// ------------------------------------------------------------------------------ attract mode
function noteUse() {
  lastUse = performance.now();
  if (!ui.attract.hidden) ui.attract.hidden = true;
  document.body.dataset.attract = "false";
}

setInterval(() => {
  const idle = (performance.now() - lastUse) / 1000;
  const quiet = document.body.dataset.state === "live" && !speakingNow && !thinking && !pendingPortrait;
  const attract = quiet && idle >= ATTRACT_AFTER_S;
  if (attract !== !ui.attract.hidden) {
    ui.attract.hidden = !attract;
    document.body.dataset.attract = String(attract);
  }
}, 500);
for (const type of ["pointerdown", "keydown", "input", "dragenter"]) {
  window.addEventListener(type, noteUse, { capture: true, passive: true });
}

// ------------------------------------------------------------------------------ start
ui.video.addEventListener("playing", () => {
  setState("live");
  if (ui.message.dataset.kind === "error" || avatarId) showMessage("");
  if (window.portraitTimings.use && !window.portraitTimings.playing) {
    window.portraitTimings.playing = performance.now();
    closePreview();
  }
});
window.addEventListener("pagehide", () => session?.stop());

uploadSettings().then(({ upload, consent }) => {
  ui.upload.hidden = !upload;
  ui.consentRow.hidden = !consent;
  if (upload) acceptPortraitFiles(ui.stage, ui.file, sendPortrait);
});
connect();
showAiBadgeIfConfigured();
showDetected();
