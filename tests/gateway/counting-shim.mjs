// Test-only wrapper around the gateway (never deployed).
//
// Every invocation gets an env whose KV binding counts operations: each
// get/put/delete/list/getWithMetadata is 1, a bulk get (array of <= 100 keys)
// is 1, as on Cloudflare. Past 1,000 operations in one invocation the binding
// throws and the invocation fails (500), so a test can never pass by
// exceeding the platform limit. The count is reported in `x-test-kv-ops`.
// SELF is bound to this shim (see serve.mjs), so each fan-out
// sub-invocation is counted on its own.
//
// Test routes (no auth, loopback only):
//   GET  /__cfkv_test/stats   per-invocation op counts since the last reset
//   POST /__cfkv_test/reset
//   GET  /__cfkv_test/loop?n=N  N single gets in one invocation (proves the
//                               counter fails past 1,000)
//
// env.TEST_FAIL_KEY_PREFIX (optional): put/delete of keys with this prefix
// throw, to provoke partial failures.
// env.TEST_FAIL_CHUNK_MARKER (optional): an internal fan-out chunk whose body
// contains this string fails as a whole (a crashed sub-invocation).
//
// A request carrying `x-test-count-body: 1` reaches the gateway with its body
// behind a counter; the response's `x-test-body-read` says how many body
// bytes the gateway pulled.

import gateway from "./worker.js";

const LIMIT = 1000;
const BULK_GET_MAX = 100;
let invocations = [];

class OpLimitExceeded extends Error {}

function countingKV(kv, counter, failPrefix) {
  const count = (n = 1) => {
    counter.ops += n;
    if (counter.ops > LIMIT) {
      counter.exceeded = true;
      throw new OpLimitExceeded(
        `Too many API requests by single worker invocation (${counter.ops} KV operations > ${LIMIT})`,
      );
    }
  };
  const checkFail = (key) => {
    if (failPrefix && typeof key === "string" && key.startsWith(failPrefix)) {
      throw new Error("injected KV failure");
    }
  };
  const countRead = (key) => {
    if (Array.isArray(key) && key.length > BULK_GET_MAX) {
      throw new Error(`bulk get of ${key.length} keys exceeds ${BULK_GET_MAX}`);
    }
    count(1);
  };
  return {
    get(key, ...rest) {
      countRead(key);
      return kv.get(key, ...rest);
    },
    getWithMetadata(key, ...rest) {
      countRead(key);
      return kv.getWithMetadata(key, ...rest);
    },
    put(key, ...rest) {
      count(1);
      checkFail(key);
      return kv.put(key, ...rest);
    },
    delete(key) {
      count(1);
      checkFail(key);
      return kv.delete(key);
    },
    list(options) {
      count(1);
      return kv.list(options);
    },
  };
}

// The request with its body behind a counter of the bytes the gateway pulls.
// The counter pulls one chunk per read of the gateway (high-water mark 0),
// so it never reads ahead of it.
function countingBody(request, counter) {
  const reader = request.body.getReader();
  const body = new ReadableStream(
    {
      async pull(controller) {
        const { done, value } = await reader.read();
        if (done) {
          controller.close();
        } else {
          counter.bodyRead += value.byteLength;
          controller.enqueue(value);
        }
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
  return new Request(request, { body });
}

function json(body, status = 200) {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

async function testRoute(request, env, path) {
  if (path === "/__cfkv_test/stats") {
    const maxOps = invocations.reduce((m, i) => Math.max(m, i.ops), 0);
    return json({ invocations, max_ops: maxOps, exceeded: invocations.some((i) => i.exceeded) });
  }
  if (path === "/__cfkv_test/reset" && request.method === "POST") {
    invocations = [];
    return json({ ok: true });
  }
  if (path === "/__cfkv_test/loop") {
    const n = Number(new URL(request.url).searchParams.get("n") || "0");
    const counter = { ops: 0, exceeded: false };
    const kv = countingKV(env.KV, counter, null);
    let error = null;
    try {
      for (let i = 0; i < n; i++) await kv.get(`__cfkv_test_loop_${i}`);
    } catch (err) {
      error = String(err.message || err);
    }
    invocations.push({ path, method: request.method, ops: counter.ops, exceeded: counter.exceeded });
    return json({ ops: counter.ops, exceeded: counter.exceeded, error }, error ? 500 : 200);
  }
  return json({ error: "unknown test route" }, 404);
}

export default {
  async fetch(request, env, ctx) {
    const path = new URL(request.url).pathname;
    if (path.startsWith("/__cfkv_test/")) return testRoute(request, env, path);

    if (env.TEST_FAIL_CHUNK_MARKER && path === "/__cfkv/internal/bulk") {
      const text = await request.clone().text();
      if (text.includes(env.TEST_FAIL_CHUNK_MARKER)) {
        invocations.push({ path, method: request.method, ops: 0, exceeded: false, injected: true });
        return new Response("injected sub-invocation failure", { status: 500 });
      }
    }

    const counter = { ops: 0, exceeded: false, bodyRead: 0 };
    const countBody = request.headers.get("x-test-count-body") === "1" && request.body;
    if (countBody) request = countingBody(request, counter);
    const countedEnv = { ...env, KV: countingKV(env.KV, counter, env.TEST_FAIL_KEY_PREFIX) };
    let response;
    let crash = null;
    try {
      response = await gateway.fetch(request, countedEnv, ctx);
    } catch (err) {
      crash = err;
    }
    invocations.push({ path, method: request.method, ops: counter.ops, exceeded: counter.exceeded });
    if (counter.exceeded || crash) {
      // The platform would fail the invocation: make it impossible to miss.
      return new Response(
        `invocation failed: ${counter.exceeded ? `${counter.ops} KV operations > ${LIMIT}` : String(crash)}`,
        { status: 500, headers: { "x-test-kv-ops": String(counter.ops), "x-test-kv-limit-exceeded": String(counter.exceeded) } },
      );
    }
    const out = new Response(response.body, response);
    out.headers.set("x-test-kv-ops", String(counter.ops));
    if (countBody) out.headers.set("x-test-body-read", String(counter.bodyRead));
    return out;
  },
};
