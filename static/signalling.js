// One WebRTC session with the avatar server: a peer connection plus the /ws signalling socket.
//
// Protocol (docs/protocol.md): after ICE gathering completes (non-trickle) the client sends
// {"type":"offer","sdp","avatar"?}; the server replies {"type":"answer","sdp","session"}, errors
// arrive as {"type":"error","message"}, and {"type":"stats",...} events about once per second.

const ICE_GATHERING_TIMEOUT_MS = 5000;
const SOCKET_OPEN_TIMEOUT_MS = 5000;
const ANSWER_TIMEOUT_MS = 30000;
const ICE_SERVERS_TIMEOUT_MS = 5000;

export const SERVER_UNREACHABLE =
  "Cannot reach the avatar server — check that run_server.py is running, then press Start again";
export const CONNECTION_LOST = "The connection to the avatar server was lost — press Start to reconnect";
export const MEDIA_FAILED =
  "The media connection failed (no network path between browser and server) — press Start to retry";

/** ws:// or wss:// URL of the signalling socket, matching the page's own protocol and host; a
 * `?token=` in the page's own URL is passed on (server.auth_token). */
export function signallingUrl(location = window.location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const token = new URLSearchParams(location.search || "").get("token");
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `${scheme}//${location.host}/ws${query}`;
}

/** The video size a page's own URL asks for (`?size=256`: the picture's side in px, 0 for the server's
 * default); the server refuses sizes its engine does not render with a one-line error. */
export function pageVideoSize(location = window.location) {
  const size = Number(new URLSearchParams(location.search || "").get("size"));
  return Number.isInteger(size) && size > 0 ? size : 0;
}

/** The server's STUN/TURN servers (server.ice_servers) from `GET /ice-servers` on the signalling
 * socket's host (with its `?token=`); [] (host candidates only) when they cannot be fetched. */
export async function fetchIceServers(wsUrl = signallingUrl(), timeoutMs = ICE_SERVERS_TIMEOUT_MS) {
  const url = new URL(wsUrl);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  url.pathname = "/ice-servers";
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    const response = await fetch(url, { signal: abort.signal, cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    return Array.isArray(body?.iceServers) ? body.iceServers : [];
  } catch (error) {
    console.warn(`no ICE servers from ${url.pathname} (${error.message}); using host candidates only`);
    return [];
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves when ICE gathering is complete, or after `timeoutMs` with the candidates found so far. */
function iceGatheringComplete(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", onChange);
      resolve();
    };
    const onChange = () => {
      if (pc.iceGatheringState === "complete") finish();
    };
    const timer = setTimeout(finish, timeoutMs);
    pc.addEventListener("icegatheringstatechange", onChange);
  });
}

/** Opens a WebSocket; rejects with SERVER_UNREACHABLE if it errors, closes or times out first. Until the
 * caller takes over, what arrives is kept: `ws.early` = {messages: [MessageEvent], closed: CloseEvent|null}
 * (a server that refuses the page's origin accepts, sends one error and closes: see earlyRefusal). */
function openSocket(url, timeoutMs) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const timer = setTimeout(() => {
      ws.close();
      reject(new Error(SERVER_UNREACHABLE));
    }, timeoutMs);
    ws.onopen = () => {
      clearTimeout(timer);
      const early = { messages: [], closed: null };
      ws.early = early;
      ws.onopen = ws.onerror = null;
      ws.onmessage = (event) => early.messages.push(event);
      ws.onclose = (event) => {
        early.closed = event;
      };
      resolve(ws);
    };
    ws.onerror = ws.onclose = () => {
      clearTimeout(timer);
      reject(new Error(SERVER_UNREACHABLE));
    };
  });
}

/** The server's reason when it refused the socket right after opening it (an error message, or the
 * close reason), else null. */
function earlyRefusal(early) {
  for (const event of early?.messages ?? []) {
    try {
      const message = JSON.parse(event.data);
      if (message?.type === "error") return String(message.message || "The server refused the connection");
    } catch {
      // not JSON: not a refusal
    }
  }
  if (early?.closed) return early.closed.reason || CONNECTION_LOST;
  return null;
}

/**
 * A talking-avatar session.
 *
 * handlers: onVideo(MediaStream), onAudio(MediaStream), onStats(object), onConnectionState(string),
 * onFailure(message) — called at most once, after start() resolved, when the session dies on its own;
 * onError(message) — optional: errors after start() (e.g. a refused "say") go here instead of ending the
 * session; onEvent(object) — other server events (queued, interrupted, speaking_started, ...).
 *
 * mode: "mirror" (the face speaks the microphone) or "speak" (it speaks "say"/"audio" messages and the
 * microphone only interrupts it). Without a microphone stream an audio transceiver is still offered
 * (`audioDirection`, default "recvonly") so the avatar's voice can come back; with "sendrecv" a
 * microphone can be attached later with setMicrophone() without renegotiating.
 *
 * size: the video's side in px (256, 384 or 512 up to the server's engine.size; default the page URL's
 * `?size=`, else the server's): a smaller picture costs the server less CPU per session.
 */
export class AvatarSession {
  constructor({
    micStream = null, avatarId = "", iceServers = null, url = signallingUrl(), handlers = {}, mode = "",
    audioDirection = "recvonly", channel = "", channelKey = "", iceTransportPolicy = "all", size = pageVideoSize(),
  }) {
    this.micStream = micStream;
    this.size = size; // the video's side in px (offer "size"); 0: the server's engine.size
    this.mode = mode;
    this.channel = channel;
    this.channelKey = channelKey;
    this.audioDirection = audioDirection;
    this.audioTransceiver = null;
    this.avatarId = avatarId;
    this.iceServers = iceServers; // null: ask the server (GET /ice-servers)
    this.iceTransportPolicy = iceTransportPolicy; // "relay": TURN only, the browser's addresses stay hidden
    this.url = url;
    this.handlers = handlers;
    this.pc = null;
    this.ws = null;
    this.sessionId = null;
    this.stopped = false;
    this.started = false;
    this.pendingAnswer = null;
  }

  /** Negotiates the session; resolves once the server's answer is applied, rejects with a user message. */
  async start() {
    const iceServers = this.iceServers ?? (await fetchIceServers(this.url));
    this.throwIfStopped();
    const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: this.iceTransportPolicy });
    this.pc = pc;
    // The microphone goes out on a sendrecv transceiver so the server may echo the voice back on the
    // same m-line; video comes back on a recvonly one.
    for (const track of this.micStream?.getAudioTracks() ?? []) {
      this.audioTransceiver = pc.addTransceiver(track, { direction: "sendrecv", streams: [this.micStream] });
    }
    if (!this.audioTransceiver) this.audioTransceiver = pc.addTransceiver("audio", { direction: this.audioDirection });
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (event) => this.onTrack(event);
    pc.onconnectionstatechange = () => this.onConnectionState(pc.connectionState);

    const socketReady = openSocket(this.url, SOCKET_OPEN_TIMEOUT_MS);
    socketReady.catch(() => {}); // handled below; avoid an unhandled rejection while ICE gathers
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringComplete(pc, ICE_GATHERING_TIMEOUT_MS);
    const ws = await socketReady;
    if (this.stopped) ws.close(1000, "client stop");
    this.throwIfStopped();
    const refusal = earlyRefusal(ws.early);
    if (refusal) {
      ws.onmessage = ws.onclose = null;
      ws.close();
      const error = new Error(refusal);
      error.refused = true; // the server refused this page (e.g. its origin), not a network failure
      throw error;
    }
    this.ws = ws;
    this.ws.onmessage = (event) => this.onMessage(event);
    this.ws.onclose = () => this.fail(CONNECTION_LOST);

    const answer = new Promise((resolve, reject) => {
      this.pendingAnswer = { resolve, reject };
    });
    const offer = { type: "offer", sdp: pc.localDescription.sdp };
    if (this.avatarId) offer.avatar = this.avatarId;
    if (this.mode) offer.mode = this.mode;
    if (this.size) offer.size = this.size;
    if (this.channel) {
      offer.channel = this.channel;
      offer.key = this.channelKey;
    }
    this.ws.send(JSON.stringify(offer));

    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Error("The server did not answer in time — press Start to retry")),
        ANSWER_TIMEOUT_MS,
      );
    });
    try {
      const sdp = await Promise.race([answer, timeout]);
      this.throwIfStopped();
      await pc.setRemoteDescription({ type: "answer", sdp });
      this.throwIfStopped();
      this.started = true;
    } finally {
      clearTimeout(timer);
      this.pendingAnswer = null;
    }
  }

  /** Sends one JSON message on the signalling socket; false when the socket is not open. */
  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  /** Sends `track` (or nothing, with null) on the audio transceiver offered as "sendrecv". */
  async setMicrophone(track) {
    if (!this.audioTransceiver) throw new Error("no audio transceiver to send the microphone on");
    await this.audioTransceiver.sender.replaceTrack(track);
  }

  throwIfStopped() {
    if (this.stopped) throw new Error("stopped");
  }

  onMessage(event) {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return; // not ours to judge: ignore malformed server events
    }
    if (!message || typeof message !== "object") return;
    if (message.type === "answer" && typeof message.sdp === "string") {
      this.sessionId = message.session ?? null;
      this.pendingAnswer?.resolve(message.sdp);
    } else if (message.type === "error") {
      const text = String(message.message || "The server reported an error");
      if (this.pendingAnswer) this.pendingAnswer.reject(new Error(text));
      else if (this.handlers.onError) this.handlers.onError(text);
      else this.fail(text);
    } else if (message.type === "stats") {
      this.handlers.onStats?.(message);
    } else if (message.type === "ended") {
      this.fail(String(message.reason || CONNECTION_LOST));
    } else {
      this.handlers.onEvent?.(message);
    }
  }

  onTrack(event) {
    const stream = event.streams[0] ?? new MediaStream([event.track]);
    if (event.track.kind === "video") this.handlers.onVideo?.(stream);
    else if (event.track.kind === "audio") this.handlers.onAudio?.(stream);
  }

  onConnectionState(state) {
    if (this.stopped) return;
    this.handlers.onConnectionState?.(state);
    if (state === "failed") {
      if (this.pendingAnswer) this.pendingAnswer.reject(new Error(MEDIA_FAILED));
      else this.fail(MEDIA_FAILED);
    }
  }

  /** The session died on its own (server error, socket closed, ICE failed): report once, then stop. */
  fail(message) {
    if (this.stopped) return;
    if (this.pendingAnswer) {
      this.pendingAnswer.reject(new Error(message));
      return;
    }
    const onFailure = this.handlers.onFailure;
    this.stop();
    onFailure?.(message);
  }

  /** Closes the socket and the peer connection; safe to call any number of times. */
  stop() {
    if (this.stopped) return;
    this.stopped = true;
    this.pendingAnswer?.reject(new Error("stopped"));
    if (this.ws) {
      this.ws.onmessage = this.ws.onclose = this.ws.onerror = null;
      if (this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, "client stop");
    }
    if (this.pc) {
      this.pc.ontrack = this.pc.onconnectionstatechange = null;
      this.pc.close();
    }
  }
}
