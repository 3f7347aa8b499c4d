// Receiver-side statistics: displayed fps, latency estimate and frame counts, once per second.

/**
 * @typedef {object} ReceiverStats
 * @property {number|null} fps          frames shown per second (requestVideoFrameCallback) or decoded fps
 * @property {number|null} rttMs        network round trip in ms (ICE candidate pair or RTCP)
 * @property {number|null} jitterMs     video jitter buffer delay in ms over the last interval
 * @property {number|null} latencyMs    rttMs + jitterMs: voice out and face back, excluding the engine
 * @property {number|null} framesReceived  video frames received since the session started
 * @property {number|null} width        decoded frame width in pixels
 * @property {number|null} height       decoded frame height in pixels
 */

/**
 * @typedef {object} ServerFrameStats
 * @property {number|null} sentFps      frames the server sent per second (repeats included)
 * @property {number|null} freshFps     new pictures from the engine per second
 * @property {number|null} repeated     ticks that re-sent the last picture, since the offer
 * @property {number|null} repeatShare  share of frames sent that were not fresh (0..1), since the offer
 * @property {number|null} firstFrameS  seconds from the offer to the first frame (the still portrait)
 * @property {number|null} firstAnimatedS  seconds from the offer to the first engine-generated frame
 */

const numberOrNull = (value) => (typeof value === "number" && Number.isFinite(value) ? value : null);

/** The frame counters of a server `stats` event (docs/protocol.md) as ServerFrameStats. */
export function serverFrameStats(event) {
  return {
    sentFps: numberOrNull(event.fps),
    freshFps: numberOrNull(event.fresh_fps),
    repeated: numberOrNull(event.frames_repeated),
    repeatShare: numberOrNull(event.repeat_share),
    firstFrameS: numberOrNull(event.first_frame_s),
    firstAnimatedS: numberOrNull(event.first_animated_s),
  };
}

/** Counts frames presented by a <video> element, via requestVideoFrameCallback where supported. */
class PresentedFrameCounter {
  constructor(video) {
    this.video = video;
    this.supported = typeof video.requestVideoFrameCallback === "function";
    this.count = 0;
    this.handle = null;
    if (this.supported) this.schedule();
  }

  schedule() {
    this.handle = this.video.requestVideoFrameCallback(() => {
      this.count += 1;
      this.schedule();
    });
  }

  /** Frames presented since the last call. */
  take() {
    const n = this.count;
    this.count = 0;
    return n;
  }

  stop() {
    if (this.supported && this.handle !== null) this.video.cancelVideoFrameCallback(this.handle);
    this.handle = null;
  }
}

function selectedCandidatePairRtt(report) {
  let pair = null;
  report.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
  });
  if (!pair) {
    report.forEach((s) => {
      if (s.type === "candidate-pair" && s.state === "succeeded" && (s.nominated || s.selected)) pair = s;
    });
  }
  return typeof pair?.currentRoundTripTime === "number" ? pair.currentRoundTripTime : null;
}

function rtcpRtt(report) {
  let rtt = null;
  report.forEach((s) => {
    if (s.type === "remote-inbound-rtp" && typeof s.roundTripTime === "number") rtt = s.roundTripTime;
  });
  return rtt;
}

function inboundVideo(report) {
  let video = null;
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && (s.kind ?? s.mediaType) === "video") video = s;
  });
  return video;
}

/** Polls a peer connection once per `intervalMs` and reports ReceiverStats to `onUpdate`. */
export class StatsMonitor {
  constructor(pc, video, onUpdate, intervalMs = 1000) {
    this.pc = pc;
    this.onUpdate = onUpdate;
    this.intervalMs = intervalMs;
    this.frames = new PresentedFrameCounter(video);
    this.previous = null;
    this.lastTick = performance.now();
    this.timer = setInterval(() => this.poll(), intervalMs);
  }

  async poll() {
    let report;
    try {
      report = await this.pc.getStats();
    } catch {
      return; // connection closed between ticks
    }
    if (this.timer === null) return;
    const now = performance.now();
    const seconds = (now - this.lastTick) / 1000;
    this.lastTick = now;
    const presented = this.frames.take();

    const video = inboundVideo(report);
    const prev = this.previous;
    this.previous = video;

    let fps = null;
    if (this.frames.supported && presented > 0) fps = presented / seconds;
    else if (typeof video?.framesPerSecond === "number") fps = video.framesPerSecond;
    else if (video && prev && typeof video.framesDecoded === "number") {
      fps = (video.framesDecoded - prev.framesDecoded) / seconds;
    }

    let jitterMs = null;
    if (video && typeof video.jitterBufferDelay === "number" && video.jitterBufferEmittedCount > 0) {
      const emitted = video.jitterBufferEmittedCount - (prev?.jitterBufferEmittedCount ?? 0);
      const delay = video.jitterBufferDelay - (prev?.jitterBufferDelay ?? 0);
      jitterMs = emitted > 0 ? (1000 * delay) / emitted : null;
    }

    const rtt = selectedCandidatePairRtt(report) ?? rtcpRtt(report);
    const rttMs = rtt === null ? null : 1000 * rtt;
    const latencyMs = rttMs === null && jitterMs === null ? null : (rttMs ?? 0) + (jitterMs ?? 0);

    this.onUpdate({
      fps,
      rttMs,
      jitterMs,
      latencyMs,
      framesReceived: video?.framesReceived ?? video?.framesDecoded ?? null,
      width: video?.frameWidth ?? null,
      height: video?.frameHeight ?? null,
    });
  }

  /** Stops polling and frame counting; idempotent. */
  stop() {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.frames.stop();
  }
}
