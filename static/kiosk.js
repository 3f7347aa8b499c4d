// Kiosk page: full-screen avatar in speak mode; type text, pick a voice, Speak; Interrupt; and a
// microphone toggle for barge-in (talking into it stops the avatar). Connects (and reconnects) by itself.

import { showAiBadgeIfConfigured } from "./badge.js";
import { openMicrophone } from "./devices.js";
import { AvatarSession } from "./signalling.js";

const RETRY_MS = 3000;
const $ = (id) => document.getElementById(id);
const ui = {
  bar: $("bar"), text: $("text"), voiceSelect: $("voice-select"), speak: $("speak"), mic: $("mic"),
  interrupt: $("interrupt"), state: $("state"), message: $("message"), speaking: $("speaking"),
  video: $("avatar"), voice: $("voice"),
};

let session = null;
let micStream = null;

function setState(state) {
  ui.state.dataset.state = state;
  ui.state.textContent = state;
  document.body.dataset.state = state;
  ui.speak.disabled = ui.interrupt.disabled = ui.mic.disabled = state !== "live";
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

function onEvent(event) {
  if (event.type === "speaking_started") ui.speaking.hidden = false;
  if (event.type === "speaking_finished") ui.speaking.hidden = true;
  if (event.type === "speaking_finished" && event.reason === "barge_in") showMessage("Listening…", "info");
  if (event.type === "queued") showMessage("");
}

async function connect() {
  setState("connecting");
  const current = new AvatarSession({
    mode: "speak",
    audioDirection: "sendrecv", // the microphone can be attached later without renegotiating
    handlers: {
      onVideo: (stream) => play(ui.video, stream),
      onAudio: (stream) => play(ui.voice, stream),
      onError: (message) => showMessage(message),
      onEvent,
      onFailure: (message) => retry(message),
    },
  });
  session = current;
  try {
    await current.start();
    if (micStream) await current.setMicrophone(micStream.getAudioTracks()[0] ?? null);
  } catch (error) {
    if (session === current) {
      current.stop();
      retry(error.message);
    }
  }
}

function retry(message) {
  setState("error");
  showMessage(`${message} — reconnecting…`);
  ui.speaking.hidden = true;
  setTimeout(connect, RETRY_MS);
}

ui.bar.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.text.value.trim();
  if (!text) {
    showMessage("Type something for the avatar to say");
    return;
  }
  ui.voice.play().catch(() => {}); // this click lets the browser play the avatar's voice
  if (!session?.send({ type: "say", text, voice: ui.voiceSelect.value })) showMessage("Not connected yet");
});

ui.interrupt.addEventListener("click", () => session?.send({ type: "interrupt" }));

ui.mic.addEventListener("click", async () => {
  if (micStream) {
    for (const track of micStream.getTracks()) track.stop();
    micStream = null;
    ui.mic.setAttribute("aria-pressed", "false");
    await session?.setMicrophone(null).catch(() => {});
    return;
  }
  try {
    micStream = await openMicrophone("");
    ui.mic.setAttribute("aria-pressed", "true");
    await session?.setMicrophone(micStream.getAudioTracks()[0]);
    showMessage("Listening: talk to interrupt the avatar", "info");
  } catch (error) {
    micStream = null;
    showMessage(error.message);
  }
});

ui.video.addEventListener("playing", () => {
  setState("live");
  showMessage("");
});
window.addEventListener("pagehide", () => session?.stop());
connect();
showAiBadgeIfConfigured();
