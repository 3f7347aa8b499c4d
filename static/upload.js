// Upload a visitor's own portrait over its own /ws socket (docs/protocol.md, Uploading a portrait):
// {"type":"upload","name","bytes","mime","consent"} -> "upload_ready"; the file as binary frames ->
// "upload_progress" ... then "portrait" {avatar, preview, width, height, face_px, warnings} or "error".
// The avatar id it returns works in an offer from this browser's address only, until it is idle a while.

import { signallingUrl } from "./signalling.js";

const UPLOAD_TIMEOUT_MS = 60000;
export const ACCEPTED_TYPES = "image/jpeg,image/png,image/webp,.jpg,.jpeg,.png,.webp";

/** Sends `file`; resolves with the server's "portrait" message, rejects with a one-line Error. */
export function uploadPortrait(file, { consent = false, onProgress = () => {} } = {}) {
  return new Promise((resolve, reject) => {
    let ws;
    try {
      ws = new WebSocket(signallingUrl());
    } catch {
      reject(new Error("Cannot reach the avatar server"));
      return;
    }
    ws.binaryType = "arraybuffer";
    let done = false;
    let offset = 0;
    let chunk = 1024 * 1024;
    const timer = setTimeout(() => finish(new Error("The upload took too long — try a smaller photo")), UPLOAD_TIMEOUT_MS);
    const finish = (error, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      ws.onmessage = ws.onclose = ws.onerror = null;
      if (ws.readyState <= WebSocket.OPEN) ws.close(1000, "upload done");
      if (error) reject(error);
      else resolve(value);
    };
    const sendNext = async () => {
      const end = Math.min(offset + chunk, file.size);
      const buffer = await file.slice(offset, end).arrayBuffer();
      offset = end;
      ws.send(buffer);
      onProgress(offset / file.size, offset >= file.size ? "preparing" : "sending");
    };
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "upload", name: file.name || "portrait.jpg", bytes: file.size,
        mime: file.type || null, consent }));
    };
    ws.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === "upload_ready") {
        chunk = Math.max(1024, Number(message.max_chunk_bytes) || chunk);
        sendNext().catch(() => finish(new Error("Cannot read the file")));
      } else if (message.type === "upload_progress") {
        sendNext().catch(() => finish(new Error("Cannot read the file")));
      } else if (message.type === "portrait") {
        finish(null, message);
      } else if (message.type === "error") {
        finish(new Error(String(message.message || "The server refused the photo")));
      }
    };
    ws.onerror = ws.onclose = () => finish(new Error("Cannot reach the avatar server"));
  });
}

/**
 * Makes `zone` accept a dropped image file and `input` (a file <input>) pick one; calls `onFile(file)`.
 * While a file is dragged over the page, `document.body.dataset.dragging` is "true" (for a drop hint).
 */
export function acceptPortraitFiles(zone, input, onFile) {
  input.accept = ACCEPTED_TYPES;
  input.addEventListener("change", () => {
    const file = input.files?.[0];
    input.value = "";
    if (file) onFile(file);
  });
  let depth = 0;
  const dragging = (on) => {
    document.body.dataset.dragging = on ? "true" : "false";
  };
  zone.addEventListener("dragenter", (event) => {
    if (!event.dataTransfer?.types?.includes("Files")) return;
    event.preventDefault();
    depth += 1;
    dragging(true);
  });
  zone.addEventListener("dragover", (event) => {
    if (!event.dataTransfer?.types?.includes("Files")) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  zone.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) dragging(false);
  });
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    depth = 0;
    dragging(false);
    const file = event.dataTransfer?.files?.[0];
    if (file) onFile(file);
  });
}

/** GET /health's upload settings: {upload: bool, consent: bool} (false, false when unreachable). */
export async function uploadSettings() {
  try {
    const response = await fetch("health", { cache: "no-store" });
    const body = await response.json();
    return { upload: body?.upload === true, consent: body?.consent === true };
  } catch {
    return { upload: false, consent: false };
  }
}
