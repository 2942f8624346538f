// A Worker with the seed's session store: sessions at `session:<crypto.randomUUID()>`
// holding {userId, email, createdAt, expiresAt} (epoch ms), checked with
// `Date.now() > session.expiresAt` and slid by refresh(). Bound to the same KV
// namespace as Django (binding SESSIONS), it shows both directions of sharing.
//   POST   /sessions        {userId, email} -> {id}
//   GET    /sessions/<id>   -> the session (refreshed), or null
//   DELETE /sessions/<id>   -> {deleted: true}

const SESSION_TTL = 60 * 60 * 24 * 7; // seconds
const REFRESH_AFTER = 60 * 1000; // slide at most once a minute (KV: one write per second per key)

export async function createSession(kv, user) {
  const id = crypto.randomUUID();
  const now = Date.now();
  const session = { userId: user.userId, email: user.email, createdAt: now, expiresAt: now + SESSION_TTL * 1000 };
  await kv.put(`session:${id}`, JSON.stringify(session), { expirationTtl: SESSION_TTL });
  return id;
}

export async function getSession(kv, id) {
  const session = await kv.get(`session:${id}`, "json");
  if (!session) return null;
  if (Date.now() > session.expiresAt) {
    await kv.delete(`session:${id}`);
    return null;
  }
  return session;
}

export async function refresh(kv, id, session) {
  const expiresAt = Date.now() + SESSION_TTL * 1000;
  if (expiresAt - session.expiresAt < REFRESH_AFTER) return session;
  // Keep every field (Django's `data` included): only the expiry moves.
  const next = { ...session, expiresAt };
  await kv.put(`session:${id}`, JSON.stringify(next), { expirationTtl: SESSION_TTL });
  return next;
}

export async function deleteSession(kv, id) {
  await kv.delete(`session:${id}`);
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/sessions" && request.method === "POST") {
      const id = await createSession(env.SESSIONS, await request.json());
      return Response.json({ id });
    }
    const m = /^\/sessions\/([^/]+)$/.exec(url.pathname);
    if (m) {
      const id = decodeURIComponent(m[1]);
      if (request.method === "GET") {
        const session = await getSession(env.SESSIONS, id);
        return Response.json(session && (await refresh(env.SESSIONS, id, session)));
      }
      if (request.method === "DELETE") {
        await deleteSession(env.SESSIONS, id);
        return Response.json({ deleted: true });
      }
    }
    return new Response("not found", { status: 404 });
  },
};
