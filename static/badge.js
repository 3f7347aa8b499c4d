// Optional visible disclosure: an "AI-generated" label over the avatar video.
// Shown when the server's GET /health answers {"badge": true} (config provenance.badge).

/** Adds the label to every `.frame` on the page when the server asks for it; silent on any error. */
export async function showAiBadgeIfConfigured() {
  let body;
  try {
    const response = await fetch("health", { cache: "no-store" });
    body = await response.json();
  } catch {
    return;
  }
  if (body?.badge !== true) return;
  for (const frame of document.querySelectorAll(".frame")) {
    if (frame.querySelector(".ai-badge")) continue;
    const label = document.createElement("div");
    label.className = "ai-badge";
    label.textContent = "AI-generated";
    label.setAttribute("role", "note");
    frame.append(label);
  }
}
