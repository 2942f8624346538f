// A user Worker beside the gateway, bound to the same namespace as SESSIONS:
// it makes sessions in django-cfkv's Worker format (session:<uuid> ->
// {userId, email, createdAt, expiresAt}) so tests can read them from Django
// through the gateway.
//   POST /sessions {userId, email}  -> {id}
//   GET  /sessions/<id>             -> the session JSON, or 404
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/sessions" && request.method === "POST") {
      const body = await request.json();
      const id = crypto.randomUUID();
      const now = Date.now();  // milliseconds, as the Workers session seed stores them
      const session = { userId: body.userId, email: body.email, createdAt: now, expiresAt: now + 3600 * 1000 };
      await env.SESSIONS.put(`session:${id}`, JSON.stringify(session), { expirationTtl: 3600 });
      return Response.json({ id });
    }
    const m = /^\/sessions\/([^/]+)$/.exec(url.pathname);
    if (m && request.method === "GET") {
      const value = await env.SESSIONS.get(`session:${decodeURIComponent(m[1])}`);
      if (value === null) return new Response("not found", { status: 404 });
      return new Response(value, { headers: { "content-type": "application/json" } });
    }
    return new Response("not found", { status: 404 });
  },
};
