// Overlay page (OBS browser source): connects by itself in speak mode and shows only the avatar.
// Query parameters: avatar=ID (server avatar id), bg=transparent|green|RRGGBB (default transparent),
// channel=NAME (controllers make it speak by sending say/audio/interrupt with that "channel").
// It reconnects on its own when the server goes away; its state is in document.body.dataset.state.

import { showAiBadgeIfConfigured } from "./badge.js";
import { AvatarSession } from "./signalling.js";

const RETRY_MS = 3000;
const AVATAR_ID = /^[A-Za-z0-9_-]{1,64}$/;
const COLOR = /^#?([0-9a-fA-F]{6})$/;
const CHANNEL_NAME = AVATAR_ID; // same rule on the server

const video = document.getElementById("avatar");
const voice = document.getElementById("voice");
let session = null;

/** The CSS background for `bg` (transparent, green or a hex colour); transparent for anything else. */
export function backgroundFor(bg) {
  if (bg === "green") return "#00ff00";
  const hex = COLOR.exec(bg ?? "");
  return hex ? `#${hex[1]}` : "transparent";
}

function setState(state) {
  document.body.dataset.state = state;
}

function play(element, stream) {
  element.srcObject = stream;
  element.play().catch(() => {}); // OBS and kiosk browsers allow autoplay; elsewhere video stays muted
}

async function connect(avatarId, channel) {
  setState("connecting");
  const current = new AvatarSession({
    avatarId,
    channel,
    mode: "speak",
    audioDirection: "recvonly",
    handlers: {
      onVideo: (stream) => play(video, stream),
      onAudio: (stream) => play(voice, stream),
      onError: (message) => console.warn("avatar server:", message),
      onFailure: () => retry(avatarId, channel),
    },
  });
  session = current;
  try {
    await current.start();
  } catch (error) {
    if (session === current) {
      current.stop();
      retry(avatarId, channel);
    }
  }
}

function retry(avatarId, channel) {
  setState("retrying");
  video.srcObject = null;
  voice.srcObject = null;
  setTimeout(() => connect(avatarId, channel), RETRY_MS);
}

const params = new URLSearchParams(window.location.search);
const avatar = params.get("avatar") ?? "";
let channel = params.get("channel") ?? "";
if (channel && !CHANNEL_NAME.test(channel)) {
  console.warn("overlay: ignoring invalid channel (use 1-64 letters, digits, '_' or '-'):", channel);
  channel = "";
}
document.body.dataset.channel = channel;
document.documentElement.style.background = backgroundFor(params.get("bg"));
document.body.style.background = backgroundFor(params.get("bg"));
video.addEventListener("playing", () => setState("live"));
window.addEventListener("pagehide", () => session?.stop());
connect(AVATAR_ID.test(avatar) ? avatar : "", channel);
showAiBadgeIfConfigured();
