// django-cfkv Worker gateway.
//
// Serves the Cloudflare Workers KV REST API (the subset django-cfkv and the
// official `cloudflare` SDK use) over a KV binding, so that Django can set
// CFKV BASE_URL to https://<name>.<subdomain>.workers.dev/client/v4 and work
// unchanged, without the REST API's 1,200 calls / 5 min quota.
//
// One ES module, no imports, no build step.
//
// Environment contract:
//   env.KV                          the KV namespace binding served
//   env.CFKV_NAMESPACE_ID           (var) its id; other ids get 404 / 10013
//   env.CFKV_GATEWAY_TOKEN          (secret) bearer token: read + write
//   env.CFKV_GATEWAY_READ_TOKEN     (secret, optional) bearer token: reads only
//   env.CFKV_GATEWAY_TOKEN_PREVIOUS, env.CFKV_GATEWAY_READ_TOKEN_PREVIOUS
//                                   (secrets, optional) still accepted while a
//                                   token is being rotated; delete afterwards
//   env.SELF                        service binding to this same Worker, used
//                                   to fan bulk writes/deletes out across
//                                   invocations (1,000 KV ops per invocation)
//
// Nothing here logs: values, keys (session ids are credentials) and tokens
// never reach console output.

const SERVICE = "django-cfkv-gateway";
const VERSION = "0.1.0";

const MAX_KEY_BYTES = 512;
const MAX_VALUE_BYTES = 25 * 1024 * 1024; // 25 MiB
const MAX_METADATA_BYTES = 1024;
const MAX_BULK_ITEMS = 10000;
const MAX_BULK_BYTES = 100 * 1000 * 1000; // 100 MB request
const MAX_BULK_GET_KEYS = 100;
const MIN_TTL_SECONDS = 60;
const LIST_MIN = 10;
const LIST_MAX = 1000;

// Cloudflare allows at most 1,000 KV operations per Worker invocation. A bulk
// write/delete of more than CHUNK_OPS keys is split into chunks of CHUNK_OPS,
// each run in its own invocation of this Worker through env.SELF, so no
// invocation comes near the limit. The parent itself makes no KV operation.
const MAX_OPS_PER_INVOCATION = 1000;
const CHUNK_OPS = 500;
const FANOUT_CONCURRENCY = 6; // sub-invocations in flight at once
const KV_CONCURRENCY = 32; // KV operations in flight within one invocation

const HEALTH_PATH = "/__cfkv/health";
const INTERNAL_PATH = "/__cfkv/internal/bulk";
const API_PREFIX = "/client/v4/accounts/";

const encoder = new TextEncoder();

// ---------------------------------------------------------------- responses

class ApiError extends Error {
  constructor(status, code, message, headers) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

function baseHeaders(contentType) {
  return {
    "content-type": contentType,
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
  };
}

function json(status, body, extraHeaders) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...baseHeaders("application/json"), ...(extraHeaders || {}) },
  });
}

function ok(result, extra) {
  return json(200, { success: true, errors: [], messages: [], result, ...(extra || {}) });
}

function failure(status, code, message, headers) {
  return json(
    status,
    { success: false, errors: [{ code, message }], messages: [], result: null },
    headers,
  );
}

const noRoute = () => new ApiError(404, 7003, "No route for the URI");
const keyNotFound = () => new ApiError(404, 10009, "get: 'key not found'");
const badRequest = (message) => new ApiError(400, 10029, `invalid request: ${message}`);

// Map an exception thrown by the KV binding to an API error. Messages from
// the binding can name keys, so they are not passed through verbatim except
// for the validation class of errors that the caller caused.
function kvError(err) {
  if (err instanceof ApiError) return err;
  const text = String((err && err.message) || err);
  if (/\b429\b|too many requests/i.test(text)) {
    return new ApiError(429, 10022, "too many requests", { "retry-after": "1" });
  }
  if (/cursor/i.test(text)) return new ApiError(400, 10041, 'invalid "list keys" cursor');
  if (/expiration ?ttl/i.test(text)) return new ApiError(400, 10034, "invalid expiration ttl");
  if (/expiration/i.test(text)) return new ApiError(400, 10033, "invalid expiration");
  if (/metadata/i.test(text)) return new ApiError(413, 10047, "invalid metadata");
  if (/\b413\b|too large/i.test(text)) return new ApiError(413, 10024, "payload too large");
  return new ApiError(500, 10001, "service temporarily unavailable");
}

// ----------------------------------------------------------------- validation

function byteLength(s) {
  return encoder.encode(s).byteLength;
}

// Returns an ApiError for an invalid key name, or null.
function keyProblem(key) {
  if (typeof key !== "string" || key.length === 0) {
    // Also what "." and "%2E" become: URL parsing removes dot segments
    // before the Worker sees the path.
    return new ApiError(400, 10042, 'Illegal key name: a key cannot be empty, "." or "..".');
  }
  if (key === "." || key === "..") {
    return new ApiError(400, 10042, `Illegal key name "${key}". Please use a different name.`);
  }
  const n = byteLength(key);
  if (n > MAX_KEY_BYTES) {
    return new ApiError(
      414,
      10030,
      `key too long: UTF-8 encoded length of ${n} exceeds key length limit of ${MAX_KEY_BYTES}`,
    );
  }
  return null;
}

function checkKey(key) {
  const problem = keyProblem(key);
  if (problem) throw problem;
  return key;
}

// A key arrives percent-encoded as one path segment ("/" as %2F).
function keyFromSegment(segment) {
  let key;
  try {
    key = decodeURIComponent(segment);
  } catch {
    throw new ApiError(400, 10042, "Illegal key name: malformed percent-encoding");
  }
  return checkKey(key);
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

// Expiry options for env.KV.put from REST-style fields. "If both are set,
// expiration_ttl is used and expiration is ignored." Returns {} for no expiry.
function expiryOptions(expiration, expirationTtl) {
  const present = (v) => v !== undefined && v !== null && v !== "";
  if (present(expirationTtl)) {
    const ttl = Number(expirationTtl);
    if (!Number.isFinite(ttl) || Math.floor(ttl) < MIN_TTL_SECONDS) {
      throw new ApiError(
        400,
        10034,
        `Invalid expiration_ttl of ${String(expirationTtl).slice(0, 32)}. Expiration TTL must be at least ${MIN_TTL_SECONDS}.`,
      );
    }
    return { expirationTtl: Math.floor(ttl) };
  }
  if (present(expiration)) {
    const exp = Number(expiration);
    if (!Number.isFinite(exp) || Math.floor(exp) < nowSeconds() + MIN_TTL_SECONDS) {
      throw new ApiError(
        400,
        10033,
        `Invalid expiration of ${String(expiration).slice(0, 32)}. Expiration times must be at least ${MIN_TTL_SECONDS} seconds in the future.`,
      );
    }
    return { expiration: Math.floor(exp) };
  }
  return {};
}

// Metadata: any JSON value; null means none. Returns the value to store.
function checkMetadata(metadata) {
  if (metadata === undefined || metadata === null) return undefined;
  const serialized = JSON.stringify(metadata);
  const n = byteLength(serialized);
  if (n > MAX_METADATA_BYTES) {
    throw new ApiError(
      413,
      10047,
      `invalid metadata: serialized metadata is ${n} bytes, the limit is ${MAX_METADATA_BYTES}`,
    );
  }
  return metadata;
}

function tooLarge(what) {
  return new ApiError(413, 10024, `payload too large: ${what}`);
}

function checkContentLength(request, limit, what) {
  const declared = Number(request.headers.get("content-length"));
  if (Number.isFinite(declared) && declared > limit) throw tooLarge(what);
}

// The request body, refused (413) as soon as it passes `limit` bytes. A
// chunked body declares no length, and reading it whole before checking would
// let any token holder make the Worker buffer (and wait for) any amount.
async function readBody(request, limit, what) {
  checkContentLength(request, limit, what);
  if (request.body === null) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      reader.cancel().catch(() => {});
      throw tooLarge(what);
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0];
  const body = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    body.set(chunk, at);
    at += chunk.byteLength;
  }
  return body;
}

async function readJson(request, limit, what) {
  const body = await readBody(request, limit, what);
  try {
    return JSON.parse(new TextDecoder().decode(body));
  } catch {
    throw badRequest("the body is not valid JSON");
  }
}

// The decoded size of base64 text, after the same shape check base64ToBytes makes.
function base64Size(text) {
  const clean = text.replace(/[\r\n\s]/g, "");
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(clean)) throw new Error("bad base64");
  const padding = clean.endsWith("==") ? 2 : clean.endsWith("=") ? 1 : 0;
  return Math.floor((clean.length * 3) / 4) - padding;
}

function base64ToBytes(text) {
  const clean = text.replace(/[\r\n\s]/g, "");
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(clean)) throw new Error("bad base64");
  const bin = atob(clean.replace(/-/g, "+").replace(/_/g, "/"));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// ----------------------------------------------------------------------- auth

async function sha256(text) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
}

// The configured secrets' digests, computed once per isolate rather than per request.
const secretDigests = new Map();
async function secretDigest(secret) {
  let digest = secretDigests.get(secret);
  if (!digest) {
    digest = await sha256(secret);
    secretDigests.set(secret, digest);
  }
  return digest;
}

function sameBytes(a, b) {
  if (crypto.subtle.timingSafeEqual) return crypto.subtle.timingSafeEqual(a, b);
  let diff = a.length ^ b.length;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

// A refusal names the gateway in an RFC 6750 challenge, so a client can tell
// its user to fix the gateway's token secrets, not a Cloudflare API token.
// `problem`: "invalid_token" (a wrong token), "insufficient_scope" (the read
// token writing), or none (no bearer token at all).
function authError(status, problem) {
  const challenge = `Bearer realm="${SERVICE}"` + (problem ? `, error="${problem}"` : "");
  return new ApiError(status, 10000, "Authentication error", { "www-authenticate": challenge });
}

// Returns "write" or "read". Throws 401 (no bearer token) or 403 (wrong one).
// Hashing both sides first gives equal-length inputs, and every configured
// token is compared on every request, so timing reveals neither length nor
// which token matched.
async function authenticate(request, env) {
  if (!env.CFKV_GATEWAY_TOKEN) {
    throw new ApiError(500, 10001, "gateway not configured: the CFKV_GATEWAY_TOKEN secret is not set");
  }
  const header = request.headers.get("authorization") || "";
  const match = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
  if (!match) throw authError(401);
  const presented = await sha256(match[1]);
  const candidates = [
    ["write", env.CFKV_GATEWAY_TOKEN],
    ["write", env.CFKV_GATEWAY_TOKEN_PREVIOUS],
    ["read", env.CFKV_GATEWAY_READ_TOKEN],
    ["read", env.CFKV_GATEWAY_READ_TOKEN_PREVIOUS],
  ];
  let role = null;
  for (const [candidateRole, secret] of candidates) {
    if (typeof secret !== "string" || secret.length === 0) continue;
    const equal = sameBytes(presented, await secretDigest(secret));
    if (equal && role !== "write") role = candidateRole;
  }
  if (!role) throw authError(403, "invalid_token");
  return role;
}

function requireWrite(role) {
  if (role !== "write") throw authError(403, "insufficient_scope");
}

// --------------------------------------------------------------- concurrency

async function mapPool(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i], i);
    }
  };
  const runners = [];
  for (let i = 0; i < Math.min(limit, items.length); i++) runners.push(worker());
  await Promise.all(runners);
  return results;
}

// ------------------------------------------------------------ single values

async function getValue(env, key) {
  // The binding cannot return a key's expiration on get (only list() can, at
  // the cost of a list operation, billed like a write and ~10x a read, plus
  // latency on every read). The gateway therefore does NOT send the
  // `expiration` response header; django-cfkv keeps its own expiry with the
  // value and does not need it. Use GET /keys?prefix=<key> when you do.
  const stream = await env.KV.get(key, "stream");
  if (stream === null) throw keyNotFound();
  return new Response(stream, { status: 200, headers: baseHeaders("application/octet-stream") });
}

// multipart/form-data -> Map(name -> Uint8Array). Parsed by hand on bytes:
// request.formData() decodes parts sent without a filename as UTF-8 text,
// which would corrupt binary values.
function parseMultipart(contentType, body) {
  const m = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  if (!m) throw badRequest("multipart/form-data without a boundary");
  const delimiter = encoder.encode("--" + (m[1] || m[2]));
  const parts = new Map();
  const indexOf = (needle, from) => {
    outer: for (let i = from; i <= body.length - needle.length; i++) {
      for (let j = 0; j < needle.length; j++) if (body[i + j] !== needle[j]) continue outer;
      return i;
    }
    return -1;
  };
  let pos = indexOf(delimiter, 0);
  if (pos < 0) throw badRequest("malformed multipart/form-data body");
  const headerEnd = encoder.encode("\r\n\r\n");
  const nextDelimiter = encoder.encode("\r\n--" + (m[1] || m[2]));
  while (true) {
    pos += delimiter.length;
    if (body[pos] === 45 && body[pos + 1] === 45) break; // "--": closing delimiter
    const headersAt = pos + 2; // skip CRLF
    const split = indexOf(headerEnd, headersAt);
    if (split < 0) throw badRequest("malformed multipart/form-data body");
    const headers = new TextDecoder().decode(body.subarray(headersAt, split));
    const end = indexOf(nextDelimiter, split + 4);
    if (end < 0) throw badRequest("malformed multipart/form-data body");
    const name = /content-disposition:[^\r\n]*?\bname="([^"]*)"/i.exec(headers);
    if (name && !parts.has(name[1])) parts.set(name[1], body.slice(split + 4, end));
    pos = end + 2; // at the next delimiter
  }
  return parts;
}

async function putValue(request, env, key, query) {
  const expiry = expiryOptions(query.get("expiration"), query.get("expiration_ttl"));
  const contentType = (request.headers.get("content-type") || "").toLowerCase();
  const multipart = contentType.startsWith("multipart/form-data");
  // A multipart body carries the value plus the metadata part and boundaries.
  const limit = multipart ? MAX_VALUE_BYTES + 64 * 1024 : MAX_VALUE_BYTES;
  const body = await readBody(request, limit, "values are limited to 25 MiB");
  let value;
  let metadata;
  if (multipart) {
    const form = parseMultipart(contentType, body);
    const part = form.get("value");
    if (part === undefined) {
      throw new ApiError(400, 10012, "multipart put request does not contain required form field 'value'");
    }
    value = part;
    const meta = form.get("metadata");
    if (meta !== undefined) {
      let parsed;
      try {
        parsed = JSON.parse(new TextDecoder().decode(meta));
      } catch {
        throw new ApiError(400, 10047, "invalid metadata: the metadata part is not valid JSON");
      }
      metadata = checkMetadata(parsed);
    }
  } else {
    value = body;
  }
  if (value.byteLength > MAX_VALUE_BYTES) throw tooLarge("values are limited to 25 MiB");
  const options = { ...expiry };
  if (metadata !== undefined) options.metadata = metadata;
  try {
    await env.KV.put(key, value, options);
  } catch (err) {
    throw kvError(err);
  }
  return ok(null);
}

async function deleteValue(env, key) {
  try {
    await env.KV.delete(key);
  } catch (err) {
    throw kvError(err);
  }
  return ok(null);
}

async function getMetadata(env, key) {
  let found;
  try {
    found = await env.KV.getWithMetadata(key, "stream");
  } catch (err) {
    throw kvError(err);
  }
  if (found.value === null) throw keyNotFound();
  // Only the metadata is wanted: release the value without reading it.
  try {
    await found.value.cancel();
  } catch {
    // already closed
  }
  return ok(found.metadata ?? null);
}

async function listKeys(env, query) {
  let limit = LIST_MAX;
  const rawLimit = query.get("limit");
  if (rawLimit !== null && rawLimit !== "") {
    limit = Number(rawLimit);
    if (!Number.isInteger(limit) || limit < LIST_MIN || limit > LIST_MAX) {
      throw new ApiError(
        400,
        10028,
        `Invalid key limit: ${rawLimit.slice(0, 32)}. Please specify an integer value between ${LIST_MIN} and ${LIST_MAX}.`,
      );
    }
  }
  const options = { limit };
  const prefix = query.get("prefix");
  if (prefix) options.prefix = prefix;
  const cursor = query.get("cursor");
  if (cursor) options.cursor = cursor;
  let page;
  try {
    page = await env.KV.list(options);
  } catch (err) {
    throw kvError(err);
  }
  const keys = page.keys.map((k) => {
    const item = { name: k.name };
    if (k.expiration !== undefined && k.expiration !== null) item.expiration = k.expiration;
    if (k.metadata !== undefined && k.metadata !== null) item.metadata = k.metadata;
    return item;
  });
  const next = page.list_complete ? "" : page.cursor || "";
  return ok(keys, { result_info: { count: keys.length, cursor: next } });
}

// --------------------------------------------------------------------- bulk

async function bulkGet(request, env) {
  const body = await readJson(request, 1024 * 1024, "bulk get bodies are limited to 1 MiB");
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw badRequest("the body must be a JSON object with a `keys` array");
  }
  const { keys } = body;
  const type = body.type === undefined || body.type === null ? "text" : body.type;
  const withMetadata = body.withMetadata === true;
  if (!Array.isArray(keys)) throw badRequest("`keys` must be an array of key names");
  if (keys.length > MAX_BULK_GET_KEYS) {
    throw badRequest(`a bulk get takes at most ${MAX_BULK_GET_KEYS} keys, got ${keys.length}`);
  }
  if (type !== "text" && type !== "json") throw badRequest('`type` must be "text" or "json"');
  if (body.withMetadata !== undefined && typeof body.withMetadata !== "boolean") {
    throw badRequest("`withMetadata` must be a boolean");
  }
  for (const key of keys) checkKey(key);
  const unique = [...new Set(keys)];
  const values = {};
  if (unique.length === 0) return ok({ values });
  let found;
  try {
    // One KV operation for up to 100 keys.
    found = withMetadata
      ? await env.KV.getWithMetadata(unique, type)
      : await env.KV.get(unique, type);
  } catch (err) {
    const text = String((err && err.message) || err);
    if (/json|parse/i.test(text)) throw badRequest('a value is not valid JSON for type "json"');
    throw kvError(err);
  }
  if (type === "text") await refuseBinary(env, unique, found, withMetadata);
  for (const key of unique) {
    const entry = found.get(key);
    if (entry === undefined || entry === null) {
      values[key] = null;
    } else if (withMetadata) {
      if (entry.value === null || entry.value === undefined) values[key] = null;
      else values[key] = { value: entry.value, metadata: entry.metadata ?? null };
    } else {
      values[key] = entry;
    }
  }
  return ok({ values });
}

// The binding decodes binary values as text with U+FFFD in place of bad bytes;
// the REST API refuses them instead. A value holding U+FFFD is re-read raw (one
// operation each, rare) and refused if it is not UTF-8, so no client receives a
// silently altered value.
async function refuseBinary(env, keys, found, withMetadata) {
  const strict = new TextDecoder("utf-8", { fatal: true });
  for (const key of keys) {
    const entry = found.get(key);
    const text = withMetadata ? entry && entry.value : entry;
    if (typeof text !== "string" || !text.includes("\uFFFD")) continue;
    const raw = await env.KV.get(key, "arrayBuffer");
    if (raw === null) continue;
    try {
      strict.decode(raw);
    } catch {
      throw new ApiError(400, 10012, `malformed value: ${JSON.stringify(key)} is not text; read it alone`);
    }
  }
}

// Validate one bulk-write item; returns {key, value, options} or throws.
// With decode false (a parent that fans the item out) base64 is only checked,
// not decoded: the sub-invocation decodes it, so no value is decoded twice.
function prepareWrite(item, decode = true) {
  checkKey(item.key);
  if (typeof item.value !== "string") throw badRequest("`value` must be a string");
  let value = item.value;
  if (item.base64 === true) {
    let size;
    try {
      if (decode) {
        value = base64ToBytes(value);
        size = value.byteLength;
      } else {
        size = base64Size(value);
      }
    } catch {
      throw new ApiError(400, 10012, "malformed value: invalid base64");
    }
    if (size > MAX_VALUE_BYTES) throw tooLarge("values are limited to 25 MiB");
  } else if (value.length > MAX_VALUE_BYTES / 3 && byteLength(value) > MAX_VALUE_BYTES) {
    throw tooLarge("values are limited to 25 MiB");
  }
  const options = expiryOptions(item.expiration, item.expiration_ttl);
  const metadata = checkMetadata(item.metadata);
  if (metadata !== undefined) options.metadata = metadata;
  return { key: item.key, value, options };
}

// Run one chunk (<= CHUNK_OPS keys) of writes or deletes in this invocation.
// Each failure is reported by key, never dropped.
// `ready`: the items are prepareWrite() results already (the inline path).
async function runChunk(env, op, items, ready = false) {
  if (items.length > MAX_OPS_PER_INVOCATION) {
    throw badRequest(`an internal chunk takes at most ${MAX_OPS_PER_INVOCATION} keys`);
  }
  const unsuccessful = [];
  let successful = 0;
  await mapPool(items, KV_CONCURRENCY, async (item) => {
    const key = op === "put" ? item.key : item;
    try {
      if (op === "put") {
        const prepared = ready ? item : prepareWrite(item);
        await env.KV.put(prepared.key, prepared.value, prepared.options);
      } else {
        checkKey(item);
        await env.KV.delete(item);
      }
      successful++;
    } catch {
      unsuccessful.push(key);
    }
  });
  return { successful_key_count: successful, unsuccessful_keys: unsuccessful };
}

// Send one chunk to a fresh invocation of this Worker. A failed sub-invocation
// (crash, limit, network) marks every key of its chunk unsuccessful.
async function runRemoteChunk(request, env, op, items) {
  const keys = op === "put" ? items.map((i) => i.key) : items;
  try {
    const response = await env.SELF.fetch("https://cfkv-gateway.internal" + INTERNAL_PATH, {
      method: "POST",
      headers: {
        authorization: request.headers.get("authorization"),
        "content-type": "application/json",
      },
      body: JSON.stringify({ op, items }),
    });
    const body = await response.json().catch(() => null);
    if (!response.ok || !body || !body.success || !body.result) {
      return { successful_key_count: 0, unsuccessful_keys: keys };
    }
    const result = body.result;
    const failed = Array.isArray(result.unsuccessful_keys) ? result.unsuccessful_keys : [];
    return { successful_key_count: Number(result.successful_key_count) || 0, unsuccessful_keys: failed };
  } catch {
    return { successful_key_count: 0, unsuccessful_keys: keys };
  }
}

// Shared by bulk write and bulk delete. `entries` are write items (op "put")
// or key names (op "delete"); duplicates keep the last occurrence so chunks
// running concurrently can never race on one key.
async function runBulk(request, env, op, entries) {
  const keyOf = (entry) => (op === "put" ? entry.key : entry);
  const rejected = new Set();
  const messages = [];
  const inline = entries.length <= CHUNK_OPS;
  const prepared = new Map(); // key -> prepareWrite() result, on the inline path
  for (const entry of entries) {
    const key = keyOf(entry);
    try {
      if (op === "put") prepared.set(key, prepareWrite(entry, inline));
      else checkKey(entry);
    } catch (err) {
      // Invalid items are not written: they come back in unsuccessful_keys
      // (explained in messages) while the valid ones are written.
      rejected.add(key);
      if (messages.length < 20) {
        messages.push({
          code: err.code || 10029,
          message: `${JSON.stringify(String(key).slice(0, 64))}: ${err.message}`,
        });
      }
    }
  }
  const byKey = new Map();
  for (const entry of entries) {
    const key = keyOf(entry);
    if (rejected.has(key)) continue;
    byKey.delete(key); // keep the position of the last occurrence
    byKey.set(key, entry);
  }
  const work = [...byKey.values()];
  let results;
  if (work.length <= CHUNK_OPS) {
    const ready = inline && op === "put"; // decoded once, above
    const items = ready ? work.map((entry) => prepared.get(entry.key)) : work;
    results = [await runChunk(env, op, items, ready)];
  } else {
    if (!env.SELF || typeof env.SELF.fetch !== "function") {
      throw new ApiError(
        500,
        10001,
        `gateway not configured: bulk operations on more than ${CHUNK_OPS} keys need the SELF service binding`,
      );
    }
    const chunks = [];
    for (let i = 0; i < work.length; i += CHUNK_OPS) chunks.push(work.slice(i, i + CHUNK_OPS));
    results = await mapPool(chunks, FANOUT_CONCURRENCY, (chunk) => runRemoteChunk(request, env, op, chunk));
  }
  const failed = new Set(rejected);
  for (const r of results) for (const key of r.unsuccessful_keys) failed.add(key);
  // Every entry whose key did not fail counts as written (a duplicate was
  // written, then overwritten by its later occurrence).
  let successful = 0;
  for (const entry of entries) if (!failed.has(keyOf(entry))) successful++;
  return json(200, {
    success: true,
    errors: [],
    messages,
    result: { successful_key_count: successful, unsuccessful_keys: [...failed] },
  });
}

async function bulkWrite(request, env) {
  const body = await readJson(request, MAX_BULK_BYTES, "a bulk write is limited to 100 MB");
  if (!Array.isArray(body)) throw badRequest("the body must be a JSON array of key-value pairs");
  if (body.length > MAX_BULK_ITEMS) {
    throw new ApiError(413, 10024, `payload too large: a bulk write takes at most ${MAX_BULK_ITEMS} key-value pairs, got ${body.length}`);
  }
  for (const item of body) {
    if (item === null || typeof item !== "object" || Array.isArray(item) || typeof item.key !== "string") {
      throw badRequest("every item must be an object with a string `key`");
    }
  }
  return runBulk(request, env, "put", body);
}

async function bulkDelete(request, env) {
  const body = await readJson(request, MAX_BULK_BYTES, "a bulk delete is limited to 100 MB");
  if (!Array.isArray(body)) throw badRequest("the body must be a JSON array of key names");
  if (body.length > MAX_BULK_ITEMS) {
    throw new ApiError(413, 10024, `payload too large: a bulk delete takes at most ${MAX_BULK_ITEMS} keys, got ${body.length}`);
  }
  for (const key of body) {
    if (typeof key !== "string") throw badRequest("every item must be a key name string");
  }
  return runBulk(request, env, "delete", body);
}

async function internalChunk(request, env) {
  const body = await readJson(request, MAX_BULK_BYTES, "chunk too large");
  if (!body || (body.op !== "put" && body.op !== "delete") || !Array.isArray(body.items)) {
    throw badRequest("malformed internal chunk");
  }
  return ok(await runChunk(env, body.op, body.items));
}

// ------------------------------------------------------------------- router

function namespaceInfo(env) {
  return { id: env.CFKV_NAMESPACE_ID, title: SERVICE, supports_url_encoding: true };
}

// A whole number in [min, max] from the query, `fallback` when absent.
function pageArgument(query, name, fallback, max, code) {
  const raw = query.get(name);
  if (raw === null || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > max) {
    throw new ApiError(400, code, `malformed ${name} argument: ${raw.slice(0, 32)}`);
  }
  return n;
}

// The one namespace served, paged as the API pages: clients ask for pages
// until an empty one (the official SDKs) or a short one (wrangler), so page 2
// and beyond must be empty, or each of them asks forever, one billed Worker
// request at a time.
function listNamespaces(env, query) {
  const page = pageArgument(query, "page", 1, Number.MAX_SAFE_INTEGER, 10007);
  const perPage = pageArgument(query, "per_page", 20, 1000, 10008);
  const order = query.get("order");
  if (order !== null && order !== "id" && order !== "title") throw new ApiError(400, 10043, "invalid order");
  const direction = query.get("direction");
  if (direction !== null && direction !== "asc" && direction !== "desc") {
    throw new ApiError(400, 10044, "invalid direction");
  }
  const result = page === 1 ? [namespaceInfo(env)] : [];
  return ok(result, { result_info: { count: result.length, page, per_page: perPage, total_count: 1 } });
}

async function route(request, env) {
  const url = new URL(request.url);
  const path = url.pathname;
  const method = request.method;

  const role = await authenticate(request, env);
  if (!env.CFKV_NAMESPACE_ID) {
    throw new ApiError(500, 10001, "gateway not configured: the CFKV_NAMESPACE_ID var is not set");
  }

  if (path === HEALTH_PATH && (method === "GET" || method === "HEAD")) {
    return ok({ service: SERVICE, version: VERSION, namespace_id: env.CFKV_NAMESPACE_ID });
  }
  if (path === INTERNAL_PATH && method === "POST") {
    requireWrite(role);
    return internalChunk(request, env);
  }
  if (!path.startsWith(API_PREFIX)) throw noRoute();

  // /client/v4/accounts/<account>/storage/kv/namespaces[/<ns>[/...]]
  const parts = path.slice(API_PREFIX.length).split("/");
  if (parts.length < 4 || !parts[0] || parts[1] !== "storage" || parts[2] !== "kv" || parts[3] !== "namespaces") {
    throw noRoute();
  }
  const rest = parts.slice(4);
  if (rest.length === 0 || (rest.length === 1 && rest[0] === "")) {
    if (method === "GET") return listNamespaces(env, url.searchParams);
    throw noRoute();
  }
  const namespace = rest[0];
  if (namespace !== env.CFKV_NAMESPACE_ID) throw new ApiError(404, 10013, "namespace not found");
  const sub = rest.slice(1);

  if (sub.length === 0) {
    if (method === "GET") return ok(namespaceInfo(env));
    throw noRoute();
  }
  const [kind, ...tail] = sub;
  if ((kind === "values" || kind === "metadata") && tail.length === 1) {
    const key = keyFromSegment(tail[0]);
    if (kind === "metadata") {
      if (method === "GET") return getMetadata(env, key);
      throw noRoute();
    }
    if (method === "GET") {
      try {
        return await getValue(env, key);
      } catch (err) {
        throw kvError(err);
      }
    }
    if (method === "PUT") {
      requireWrite(role);
      return putValue(request, env, key, url.searchParams);
    }
    if (method === "DELETE") {
      requireWrite(role);
      return deleteValue(env, key);
    }
    throw noRoute();
  }
  if (kind === "keys" && tail.length === 0 && method === "GET") return listKeys(env, url.searchParams);
  if (kind === "bulk") {
    if (tail.length === 0 && method === "PUT") {
      requireWrite(role);
      return bulkWrite(request, env);
    }
    if ((tail.length === 0 && method === "DELETE") || (tail.length === 1 && tail[0] === "delete" && method === "POST")) {
      requireWrite(role);
      return bulkDelete(request, env);
    }
    if (tail.length === 1 && tail[0] === "get" && method === "POST") return bulkGet(request, env);
  }
  throw noRoute();
}

export default {
  async fetch(request, env) {
    try {
      return await route(request, env);
    } catch (err) {
      if (err instanceof ApiError) return failure(err.status, err.code, err.message, err.headers);
      return failure(500, 10001, "service temporarily unavailable");
    }
  },
};
