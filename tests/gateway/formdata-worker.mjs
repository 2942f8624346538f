// A Worker that takes KV's multipart write the way the web platform parses
// form data: request.formData(). A part without a filename comes back as a
// string (decoded as UTF-8), a part with one as a File (its bytes). It stores
// what it got in the namespace bound as KV, shared with the gateway, so a test
// can read it back there.
//   PUT .../values/<key>  multipart/form-data {value, metadata}  -> the envelope
export default {
  async fetch(request, env) {
    const match = /\/values\/([^/]+)$/.exec(new URL(request.url).pathname);
    if (!match || request.method !== "PUT") return new Response("not found", { status: 404 });
    const form = await request.formData();
    const part = form.get("value");
    const value = typeof part === "string" ? part : await part.arrayBuffer();
    const metadata = JSON.parse(form.get("metadata"));
    await env.KV.put(decodeURIComponent(match[1]), value, { metadata });
    return Response.json({ success: true, errors: [], messages: [], result: null });
  },
};
