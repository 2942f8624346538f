// A user Worker beside the gateway, bound to the same namespace as SESSIONS:
// it makes sessions in django-cfkv's Worker format ({userId, email, createdAt,
// expiresAt} under "session:" + the hex SHA-256 of a crypto.randomUUID() id,
// SESSION_CFKV_KEY_LAYOUT's default) so tests can read them from Django
// through the gateway.
//   POST /sessions {userId, email}  -> {id, key}
//   GET  /sessions/<id>             -> the session JSON, or 404

async function sessionKey(id) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(id));
  const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `session:${hex}`;
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/sessions" && request.method === "POST") {
      const body = await request.json();
      const id = crypto.randomUUID();
      const now = Date.now();  // milliseconds, as the Workers session seed stores them
      const session = { userId: body.userId, email: body.email, createdAt: now, expiresAt: now + 3600 * 1000 };
      const key = await sessionKey(id);
      await env.SESSIONS.put(key, JSON.stringify(session), { expirationTtl: 3600 });
      return Response.json({ id, key });
    }
    const m = /^\/sessions\/([^/]+)$/.exec(url.pathname);
    if (m && request.method === "GET") {
      const value = await env.SESSIONS.get(await sessionKey(decodeURIComponent(m[1])));
      if (value === null) return new Response("not found", { status: 404 });
      return new Response(value, { headers: { "content-type": "application/json" } });
    }
    return new Response("not found", { status: 404 });
  },
};
