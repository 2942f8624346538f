// A Worker with the seed's session store: sessions {userId, email, createdAt,
// expiresAt} (epoch ms) under a crypto.randomUUID() id, checked with
// `Date.now() > session.expiresAt` and slid by refresh(). Bound to the same KV
// namespace as Django (binding SESSIONS), it shows both directions of sharing.
// The KV key of an id is the one django-cfkv uses: sessionKey() below, as
// the docs show it (docs/reference/stored-formats.md; SESSION_CFKV_KEY_LAYOUT = "hashed", the default), or
// `session:<id>` when the var SESSION_KEY_LAYOUT is "plain". A session with
// `absoluteExpiresAt` (epoch ms; Django's issue_token(max_age=...)) ends then:
// getSession() refuses it after, and refresh() never slides past it.
// With the secret USER_INDEX_KEY (django_cfkv.sessions.user_index_key()), it
// keeps each session's entry in its user's index as Django does, and lists and
// revokes a user's sessions with the functions docs/howto/user-sessions.md shows.
//   POST   /sessions                        {userId, email, client?} -> {id}
//   GET    /session   Authorization: Bearer <id>  -> the session (refreshed), or null
//   DELETE /session   Authorization: Bearer <id>  -> {deleted: true}
// (the id travels in a header, as a cookie or a token does, never in a URL: URLs get logged)
//   GET    /users/<userId>/sessions         -> [{ref, via, created, seen, expires, device, where}]
//   DELETE /users/<userId>/sessions/<ref>   -> {revoked: true | false}
//   DELETE /users/<userId>/sessions         -> {revoked: <count>}

const SESSION_TTL = 7 * 24 * 3600; // seconds, = SESSION_COOKIE_AGE

// The KV key of a session id: "session:" + the lowercase hex SHA-256 of the id.
async function sessionKey(id) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(id));
  const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `session:${hex}`;
}

const keyOf = (env, id) => (env.SESSION_KEY_LAYOUT === "plain" ? `session:${id}` : sessionKey(id));

// The prefix of a user's index entries: "session:user:" + the first 32 hex digits of
// HMAC-SHA256(USER_INDEX_KEY, userId as text).
async function userPrefix(env, userId) {
  const raw = Uint8Array.from(env.USER_INDEX_KEY.match(/../g), (byte) => parseInt(byte, 16));
  const key = await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(String(userId)));
  const hex = [...new Uint8Array(mac)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `session:user:${hex.slice(0, 32)}:`;
}

// Write the session's entry in its user's index (before the session itself), with the session's expiry.
async function indexSession(env, key, session) {
  if (!env.USER_INDEX_KEY || env.SESSION_KEY_LAYOUT === "plain" || session.userId == null) return;
  const client = session.data?._cfkv_client ?? {};
  const metadata = {
    kind: "session", expires: session.expiresAt / 1000, created: Math.floor(session.createdAt / 1000),
    seen: Math.floor(Date.now() / 1000), via: client.via ?? "bearer",
    device: String(client.device ?? "").slice(0, 64), where: String(client.where ?? "").slice(0, 64),
  };
  const ttl = Math.max(60, Math.ceil((session.expiresAt - Date.now()) / 1000)); // KV's minimum is 60 s
  const ref = key.slice("session:".length);
  await env.SESSIONS.put((await userPrefix(env, session.userId)) + ref, "", { expirationTtl: ttl, metadata });
}

// A user's live sessions: every entry under their userId (user_sessions() also leaves out entries
// another user holds, with a user field other than pk: see "holder" in the stored formats).
export async function listSessions(env, userId) {
  const prefix = await userPrefix(env, userId);
  const sessions = [];
  let cursor;
  do {
    const page = await env.SESSIONS.list({ prefix, cursor });
    for (const { name, metadata } of page.keys) {
      if (metadata && metadata.expires * 1000 > Date.now()) sessions.push({ ref: name.slice(prefix.length), ...metadata });
    }
    cursor = page.list_complete ? null : page.cursor;
  } while (cursor);
  return sessions;
}

// Sign the user out of one session: only one in the user's own index.
export async function revokeSession(env, userId, ref) {
  const entry = (await userPrefix(env, userId)) + ref;
  if (!/^[0-9a-f]{64}$/.test(ref) || (await env.SESSIONS.get(entry)) === null) return false;
  await env.SESSIONS.delete(`session:${ref}`);
  await env.SESSIONS.delete(entry);
  return true;
}

// Sign the user out everywhere: two deletes a session, the listing having shown each entry (a Worker makes at
// most 1,000 KV calls a request: about 495 sessions; a user with more needs Django's revoke_all_sessions()).
export async function revokeAllSessions(env, userId) {
  const prefix = await userPrefix(env, userId);
  const sessions = (await listSessions(env, userId)).filter(({ ref }) => /^[0-9a-f]{64}$/.test(ref));
  for (const { ref } of sessions) {
    await env.SESSIONS.delete(`session:${ref}`);
    await env.SESSIONS.delete(prefix + ref);
  }
  return sessions.length;
}

// Sign one session out by its key (sessionKey(id)): the session, and its entry in its user's index.
export async function deleteSession(env, key) {
  const session = await env.SESSIONS.get(key, "json").catch(() => null); // a signed value is not JSON
  await env.SESSIONS.delete(key);
  if (session?.userId != null && env.USER_INDEX_KEY && env.SESSION_KEY_LAYOUT !== "plain") {
    await env.SESSIONS.delete((await userPrefix(env, session.userId)) + key.slice("session:".length));
  }
}

export async function createSession(env, user) {
  const id = crypto.randomUUID();
  const now = Date.now();
  const session = { userId: String(user.id), email: user.email, createdAt: now, expiresAt: now + SESSION_TTL * 1000 };
  if (user.client) session.data = { _cfkv_client: user.client }; // harness: a client record, as Django's
  const key = await keyOf(env, id);
  await indexSession(env, key, session); // its entry in the user's index, first
  await env.SESSIONS.put(key, JSON.stringify(session), { expirationTtl: SESSION_TTL });
  return id; // send it as a cookie or a bearer token: Django accepts it as either
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
  // Slide the expiry, never past absoluteExpiresAt (a token's absolute lifetime).
  const expiresAt = Math.min(Date.now() + SESSION_TTL * 1000, session.absoluteExpiresAt ?? Infinity);
  if (expiresAt - session.expiresAt < 60_000) return session; // one write a minute at most
  const next = { ...session, expiresAt };       // keep Django's `data` and every other field
  const ttl = Math.max(60, Math.ceil((expiresAt - Date.now()) / 1000)); // KV's minimum is 60 s
  const key = await keyOf(env, id);
  await indexSession(env, key, next);           // the user's index entry moves with the expiry
  await env.SESSIONS.put(key, JSON.stringify(next), { expirationTtl: ttl });
  return next;
}


async function users(request, env, url) {
  const m = /^\/users\/([^/]+)\/sessions(?:\/([^/]+))?$/.exec(url.pathname);
  if (!m) return null;
  const userId = decodeURIComponent(m[1]);
  if (request.method === "GET" && !m[2]) return Response.json(await listSessions(env, userId));
  if (request.method === "DELETE" && m[2]) return Response.json({ revoked: await revokeSession(env, userId, m[2]) });
  if (request.method === "DELETE") return Response.json({ revoked: await revokeAllSessions(env, userId) });
  return null;
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/sessions" && request.method === "POST") {
      const { userId, email, client } = await request.json();
      const id = await createSession(env, { id: userId, email, client });
      return Response.json({ id });
    }
    const bearer = /^Bearer (\S+)$/.exec(request.headers.get("Authorization") ?? "");
    if (url.pathname === "/session" && bearer) {
      const id = bearer[1];
      if (request.method === "GET") {
        const session = await getSession(env, id);
        return Response.json(session && (await refresh(env, id, session)));
      }
      if (request.method === "DELETE") {
        await deleteSession(env, await keyOf(env, id));
        return Response.json({ deleted: true });
      }
    }
    return (await users(request, env, url)) ?? new Response("not found", { status: 404 });
  },
};
