// Overlay page (OBS browser source): connects by itself in speak mode and shows only the avatar.
// Query parameters: avatar=ID (server avatar id), bg=transparent|green|RRGGBB (default transparent),
// channel=NAME&key=SECRET (controllers that know the key make it speak by sending say/audio/interrupt
// with that "channel" and "key"; the key is 16-128 letters, digits, '_' or '-').
// It reconnects on its own when the server goes away; its state is in document.body.dataset.state.

import { showAiBadgeIfConfigured } from "./badge.js";
import { AvatarSession } from "./signalling.js";

const RETRY_MS = 3000;
const AVATAR_ID = /^[A-Za-z0-9_-]{1,64}$/;
const COLOR = /^#?([0-9a-fA-F]{6})$/;
const CHANNEL_NAME = AVATAR_ID; // same rule on the server
const CHANNEL_KEY = /^[A-Za-z0-9_-]{16,128}$/;

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

/** One line over the overlay saying why it cannot work as asked (empty: hidden). */
function showNotice(text) {
  let line = document.getElementById("notice");
  if (!line) {
    line = document.createElement("p");
    line.id = "notice";
    line.style.cssText = "position:fixed;left:0;right:0;bottom:0;margin:0;padding:0.4em;font:14px sans-serif;" +
      "background:rgb(0 0 0 / 0.7);color:#fff;text-align:center";
    document.body.append(line);
  }
  line.textContent = text;
  line.hidden = !text;
  document.body.dataset.notice = text;
}

function play(element, stream) {
  element.srcObject = stream;
  element.play().catch(() => {}); // OBS and kiosk browsers allow autoplay; elsewhere video stays muted
}

async function connect(avatarId, channel, channelKey) {
  setState("connecting");
  const current = new AvatarSession({
    avatarId,
    channel,
    channelKey,
    mode: "speak",
    audioDirection: "recvonly",
    handlers: {
      onVideo: (stream) => play(video, stream),
      onAudio: (stream) => play(voice, stream),
      onError: (message) => console.warn("avatar server:", message),
      onFailure: () => retry(avatarId, channel, channelKey),
    },
  });
  session = current;
  try {
    await current.start();
  } catch (error) {
    if (session === current) {
      current.stop();
      if (error.refused) showNotice(`avatar server: ${error.message}`);
      retry(avatarId, channel, channelKey);
    }
  }
}

function retry(avatarId, channel, channelKey) {
  setState("retrying");
  video.srcObject = null;
  voice.srcObject = null;
  setTimeout(() => connect(avatarId, channel, channelKey), RETRY_MS);
}

const params = new URLSearchParams(window.location.search);
const avatar = params.get("avatar") ?? "";
let channel = params.get("channel") ?? "";
let channelKey = params.get("key") ?? "";
if (channel && !CHANNEL_NAME.test(channel)) {
  console.warn("overlay: ignoring invalid channel (use 1-64 letters, digits, '_' or '-'):", channel);
  channel = "";
}
if (channel && !CHANNEL_KEY.test(channelKey)) {
  showNotice(`overlay: channel ${channel} needs key=SECRET in the URL (16-128 letters, digits, '_' or '-'); ` +
    "joined no channel");
  channel = "";
}
if (!channel) channelKey = "";
document.body.dataset.channel = channel;
document.documentElement.style.background = backgroundFor(params.get("bg"));
document.body.style.background = backgroundFor(params.get("bg"));
video.addEventListener("playing", () => {
  setState("live");
  if (document.body.dataset.notice?.startsWith("avatar server:")) showNotice("");
});
window.addEventListener("pagehide", () => session?.stop());
connect(AVATAR_ID.test(avatar) ? avatar : "", channel, channelKey);
showAiBadgeIfConfigured();
