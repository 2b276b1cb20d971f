// The operator's key in this browser (docs/dashboard.md, "Signing"): an Ed25519 key made
// here or imported from `ctl keys create`, kept non-extractable in IndexedDB, and the
// intents the console signs with it (docs/protocol.md 11.7). The server never sees it.

const DB = "monitoring-ws-operator";
const STORE = "keys";
const PREFIX = "monitoring-ws intent v1\n";
// PKCS#8 wrapping of a 32-byte Ed25519 seed (RFC 8410): what importKey takes.
const PKCS8_HEAD = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
const MARGIN_MS = 5 * 60_000;

function store(mode, act) {
  return new Promise((resolve, reject) => {
    const opening = indexedDB.open(DB, 1);
    opening.onupgradeneeded = () => opening.result.createObjectStore(STORE);
    opening.onerror = () => reject(opening.error);
    opening.onsuccess = () => {
      const tx = opening.result.transaction(STORE, mode);
      const request = act(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request?.result);
      tx.onerror = () => reject(tx.error);
    };
  });
}

const base64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)));
const unbase64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));

async function describe(privateKey, publicRaw) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", publicRaw));
  const keyId = [...digest.slice(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return { privateKey, keyId, publicKey: `ed25519:${base64(publicRaw)}` };
}

// The key this browser signs with, or null.
export async function operatorKey() {
  try {
    return (await store("readonly", (s) => s.get("default"))) || null;
  } catch {
    return null; // no IndexedDB (a private window): no signing
  }
}

// A new key, made here: its private half can never leave this browser.
export async function createOperatorKey() {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  const record = await describe(pair.privateKey, await crypto.subtle.exportKey("raw", pair.publicKey));
  await store("readwrite", (s) => s.put(record, "default"));
  return record;
}

// A key from `ctl keys create` (its file's "seed"), imported non-extractable.
export async function importOperatorKey(seedBase64) {
  const seed = unbase64(seedBase64.trim());
  if (seed.length !== 32) throw new Error("an operator key's seed is 32 bytes (base64)");
  const der = new Uint8Array([...PKCS8_HEAD, ...seed]);
  const privateKey = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, false, ["sign"]);
  // The public half: import it once more, extractable, only to read its public key.
  const pair = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, true, ["sign"]);
  const jwk = await crypto.subtle.exportKey("jwk", pair);
  const publicRaw = unbase64(jwk.x.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - jwk.x.length % 4) % 4));
  const record = await describe(privateKey, publicRaw);
  await store("readwrite", (s) => s.put(record, "default"));
  return record;
}

export async function forgetOperatorKey() {
  await store("readwrite", (s) => s.delete("default"));
}

// RFC 8785 for what intents hold (strings, integers, booleans, null, arrays, objects):
// keys sorted by UTF-16 code units, JSON.stringify's strings and numbers.
export function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

function nonce() {
  return base64(crypto.getRandomValues(new Uint8Array(18))).replace(/\+/g, "-").replace(/\//g, "_");
}

// ``command`` with ``args`` on ``agents``, signed: what the API's ``intent`` member takes.
export async function signIntent(key, command, args, agents, lifetimeMs) {
  const now = Date.now();
  const intent = {
    v: 1, command, args, agents: [...agents].sort(),
    notBefore: now, expires: now + lifetimeMs + MARGIN_MS, nonce: nonce(),
  };
  const bytes = new TextEncoder().encode(PREFIX + canonical(intent));
  const signature = await crypto.subtle.sign({ name: "Ed25519" }, key.privateKey, bytes);
  return { intent, signatures: [{ keyId: key.keyId, signature: base64(signature) }] };
}
