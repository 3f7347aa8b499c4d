// Microphone access: opening the selected input, listing inputs, and one-line messages for failures.

export const MIC_DENIED =
  "Microphone access was denied — allow it in the address bar and press Start again";
export const MIC_MISSING = "No microphone found — connect one (or pick another) and press Start again";
export const MIC_BUSY =
  "The microphone is in use by another application or cannot be opened — close it and press Start again";
export const MIC_INSECURE =
  "The microphone needs a secure page — open this page via https:// or http://localhost";

/** A user-facing one-line message for a getUserMedia failure. */
export function describeMicrophoneError(error) {
  switch (error?.name) {
    case "NotAllowedError":
    case "PermissionDeniedError":
    case "SecurityError":
      return MIC_DENIED;
    case "NotFoundError":
    case "DevicesNotFoundError":
    case "OverconstrainedError":
      return MIC_MISSING;
    case "NotReadableError":
    case "TrackStartError":
    case "AbortError":
      return MIC_BUSY;
    default:
      return `Could not open the microphone: ${error?.message || error}`;
  }
}

/** True when this page may use getUserMedia (secure context and a browser that has it). */
export function microphoneAvailable() {
  return Boolean(navigator.mediaDevices?.getUserMedia);
}

/**
 * Opens a microphone (the one with `deviceId`, else the default) with voice processing on.
 * Rejects with an Error whose message is ready to show.
 */
export async function openMicrophone(deviceId) {
  if (!microphoneAvailable()) throw new Error(MIC_INSECURE);
  const audio = {
    echoCancellation: true,
    noiseSuppression: true,
    autoGainControl: true,
    channelCount: 1,
  };
  if (deviceId) audio.deviceId = { exact: deviceId };
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio, video: false });
    if (stream.getAudioTracks().length === 0) throw Object.assign(new Error("no track"), { name: "NotFoundError" });
    return stream;
  } catch (error) {
    throw new Error(describeMicrophoneError(error));
  }
}

/** Audio inputs as [{deviceId, label}]; labels are empty until permission has been granted once. */
export async function listMicrophones() {
  if (!navigator.mediaDevices?.enumerateDevices) return [];
  const devices = await navigator.mediaDevices.enumerateDevices();
  return devices
    .filter((d) => d.kind === "audioinput" && d.deviceId !== "default" && d.deviceId !== "communications")
    .map((d, i) => ({ deviceId: d.deviceId, label: d.label || `Microphone ${i + 1}` }));
}

/** Refills a <select> with microphones, keeping the current choice when it still exists. */
export async function refreshMicrophonePicker(select) {
  let mics;
  try {
    mics = await listMicrophones();
  } catch {
    return;
  }
  const keep = select.value;
  select.replaceChildren(new Option("System default", ""));
  for (const mic of mics) {
    if (mic.deviceId) select.add(new Option(mic.label, mic.deviceId));
  }
  select.value = mics.some((m) => m.deviceId === keep) ? keep : "";
}
