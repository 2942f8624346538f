// Start Miniflare on 127.0.0.1 (free port) running the django-cfkv gateway,
// print one JSON line with its URL(s), and stay up until stdin closes or
// SIGTERM/SIGINT.
//
//   node tests/gateway/serve.mjs '<json config>'
//
// Config (all optional):
//   worker         "gateway" (default) or "bare" (benchmark baseline)
//   counting       true (default): run the gateway through counting-shim.mjs
//   namespaceId    the CFKV_NAMESPACE_ID var and the KV namespace id
//   token, readToken, previousToken, previousReadToken   the secrets
//   self           true (default): bind SELF to this Worker (fan-out)
//   failKeyPrefix  shim only: put/delete of such keys throw
//   failChunkMarker shim only: fan-out chunks containing it fail whole
//   extraWorker    {scriptPath, binding="SESSIONS", name="extra", vars={},
//                   compatibilityDate} a user Worker bound to the SAME KV
//                   namespace under `binding`, served on its own port
//   persistDir     keep KV data on disk there (default: in memory)
//   compatibilityDate
//   exitOnStdinClose  true (default)
//
// Output: {"url": "http://127.0.0.1:PORT/", "extra_url": ... | null,
//          "namespace_id": ..., "worker": ...}

import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "..", "..");
const gatewayPath = path.join(repoRoot, "django_cfkv", "gateway", "worker.js");

const config = JSON.parse(process.argv[2] || "{}");
const kind = config.worker || "gateway";
const namespaceId = config.namespaceId || "0123456789abcdef0123456789abcdef";
const compatibilityDate = config.compatibilityDate || "2026-04-01";
const counting = config.counting !== false;

function mainWorker() {
  const base = {
    name: "gateway",
    compatibilityDate,
    kvNamespaces: { KV: namespaceId },
  };
  if (kind === "bare") {
    return { ...base, modules: true, scriptPath: path.join(here, "bare-worker.mjs") };
  }
  if (kind !== "gateway") throw new Error(`unknown worker kind ${kind}`);
  const bindings = { CFKV_NAMESPACE_ID: namespaceId };
  if (config.token !== null) bindings.CFKV_GATEWAY_TOKEN = config.token ?? "test-token";
  if (config.readToken) bindings.CFKV_GATEWAY_READ_TOKEN = config.readToken;
  if (config.previousToken) bindings.CFKV_GATEWAY_TOKEN_PREVIOUS = config.previousToken;
  if (config.previousReadToken) bindings.CFKV_GATEWAY_READ_TOKEN_PREVIOUS = config.previousReadToken;
  if (counting && config.failKeyPrefix) bindings.TEST_FAIL_KEY_PREFIX = config.failKeyPrefix;
  if (counting && config.failChunkMarker) bindings.TEST_FAIL_CHUNK_MARKER = config.failChunkMarker;
  const gatewaySource = readFileSync(gatewayPath, "utf8");
  // Virtual module layout: the shim imports "./worker.js".
  const root = here;
  const modules = counting
    ? [
        { type: "ESModule", path: path.join(root, "counting-shim.mjs"), contents: readFileSync(path.join(here, "counting-shim.mjs"), "utf8") },
        { type: "ESModule", path: path.join(root, "worker.js"), contents: gatewaySource },
      ]
    : [{ type: "ESModule", path: path.join(root, "worker.js"), contents: gatewaySource }];
  const worker = { ...base, modules, modulesRoot: root, bindings };
  if (config.self !== false) worker.serviceBindings = { SELF: "gateway" };
  return worker;
}

const workers = [mainWorker()];
let extraName = null;
if (config.extraWorker) {
  const extra = config.extraWorker;
  extraName = extra.name || "extra";
  workers.push({
    name: extraName,
    compatibilityDate: extra.compatibilityDate || compatibilityDate,
    modules: true,
    scriptPath: path.resolve(extra.scriptPath),
    kvNamespaces: { [extra.binding || "SESSIONS"]: namespaceId },
    bindings: extra.vars || {},
    unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
  });
}

const options = { host: "127.0.0.1", port: 0, workers };
if (config.persistDir) options.kvPersist = config.persistDir;

const mf = new Miniflare(options);
const url = await mf.ready;
const extraUrl = extraName ? String(await mf.unsafeGetDirectURL(extraName)) : null;
process.stdout.write(
  JSON.stringify({ url: String(url), extra_url: extraUrl, namespace_id: namespaceId, worker: kind, counting: kind === "gateway" && counting }) + "\n",
);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  try {
    await mf.dispose();
  } finally {
    process.exit(0);
  }
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
if (config.exitOnStdinClose !== false) {
  process.stdin.on("end", stop);
  process.stdin.on("close", stop);
  process.stdin.resume();
}
