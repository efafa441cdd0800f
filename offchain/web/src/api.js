// The page's own JSON API (relative to the page), for the bundle's modules.

/** GET a JSON API path; null for a 404 when `missingOk`; throws an Error with the server's reason otherwise. */
export async function getJson(path, missingOk = false) {
  const response = await fetch(path, { cache: "no-store" });
  if (missingOk && response.status === 404) return null;
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}
