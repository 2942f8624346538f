// Benchmark baseline: the same KV binding calls as the gateway for the
// routes the benchmark uses, with no auth, no validation and no envelope
// checks. Never deploy this.
const ok = (result) =>
  new Response(JSON.stringify({ success: true, errors: [], messages: [], result }), {
    headers: { "content-type": "application/json" },
  });

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const m = /^\/client\/v4\/accounts\/[^/]+\/storage\/kv\/namespaces\/[^/]+\/(.*)$/.exec(url.pathname);
    const rest = m ? m[1] : "";
    if (rest.startsWith("values/")) {
      const key = decodeURIComponent(rest.slice(7));
      if (request.method === "GET") {
        const stream = await env.KV.get(key, "stream");
        if (stream === null) return new Response("{}", { status: 404 });
        return new Response(stream, { headers: { "content-type": "application/octet-stream" } });
      }
      if (request.method === "PUT") {
        await env.KV.put(key, new Uint8Array(await request.arrayBuffer()));
        return ok(null);
      }
      if (request.method === "DELETE") {
        await env.KV.delete(key);
        return ok(null);
      }
    }
    if (rest === "bulk/get" && request.method === "POST") {
      const body = await request.json();
      const found = await env.KV.get(body.keys, body.type || "text");
      return ok({ values: Object.fromEntries(body.keys.map((k) => [k, found.get(k) ?? null])) });
    }
    if (rest === "keys") {
      const page = await env.KV.list({ prefix: url.searchParams.get("prefix") || undefined });
      return ok(page.keys);
    }
    return new Response("not found", { status: 404 });
  },
};
