// A Worker with the seed's session store: sessions {userId, email, createdAt,
// expiresAt} (epoch ms) under a crypto.randomUUID() id, checked with
// `Date.now() > session.expiresAt` and slid by refresh(). Bound to the same KV
// namespace as Django (binding SESSIONS), it shows both directions of sharing.
// The KV key of an id is the one django-cfkv uses: sessionKey() below, as
// the docs show it (docs/reference/stored-formats.md; SESSION_CFKV_KEY_LAYOUT = "hashed", the default), or
// `session:<id>` when the var SESSION_KEY_LAYOUT is "plain". A session with
// `absoluteExpiresAt` (epoch ms; Django's issue_token(max_age=...)) ends then:
// getSession() refuses it after, and refresh() never slides past it.
//   POST   /sessions        {userId, email} -> {id}
//   GET    /sessions/<id>   -> the session (refreshed), or null
//   DELETE /sessions/<id>   -> {deleted: true}

const SESSION_TTL = 60 * 60 * 24 * 7; // seconds
const REFRESH_AFTER = 60 * 1000; // slide at most once a minute (KV: one write per second per key)

// The KV key of a session id: "session:" + the lowercase hex SHA-256 of the id.
async function sessionKey(id) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(id));
  const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `session:${hex}`;
}

const keyOf = (env, id) => (env.SESSION_KEY_LAYOUT === "plain" ? `session:${id}` : sessionKey(id));

export async function createSession(env, user) {
  const id = crypto.randomUUID();
  const now = Date.now();
  const session = { userId: user.userId, email: user.email, createdAt: now, expiresAt: now + SESSION_TTL * 1000 };
  await env.SESSIONS.put(await keyOf(env, id), JSON.stringify(session), { expirationTtl: SESSION_TTL });
  return id;
}

export async function getSession(env, id) {
  const session = await env.SESSIONS.get(await keyOf(env, id), "json");
  if (!session) return null;
  if (Date.now() > Math.min(session.expiresAt, session.absoluteExpiresAt ?? Infinity)) {
    await env.SESSIONS.delete(await keyOf(env, id));
    return null;
  }
  return session;
}

export async function refresh(env, id, session) {
  const expiresAt = Math.min(Date.now() + SESSION_TTL * 1000, session.absoluteExpiresAt ?? Infinity);
  if (expiresAt - session.expiresAt < REFRESH_AFTER) return session;
  // Keep every field (Django's `data` included): only the expiry moves.
  const next = { ...session, expiresAt };
  const ttl = Math.max(60, Math.ceil((expiresAt - Date.now()) / 1000)); // KV's minimum is 60 s
  await env.SESSIONS.put(await keyOf(env, id), JSON.stringify(next), { expirationTtl: ttl });
  return next;
}

export async function deleteSession(env, id) {
  await env.SESSIONS.delete(await keyOf(env, id));
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/sessions" && request.method === "POST") {
      const id = await createSession(env, await request.json());
      return Response.json({ id });
    }
    const m = /^\/sessions\/([^/]+)$/.exec(url.pathname);
    if (m) {
      const id = decodeURIComponent(m[1]);
      if (request.method === "GET") {
        const session = await getSession(env, id);
        return Response.json(session && (await refresh(env, id, session)));
      }
      if (request.method === "DELETE") {
        await deleteSession(env, id);
        return Response.json({ deleted: true });
      }
    }
    return new Response("not found", { status: 404 });
  },
};
