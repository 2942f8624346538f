// Preloaded into Node tools the tests run (wrangler): refuses every TCP
// connection that is not to loopback, and says so on stderr, so a test can
// neither reach the internet nor miss that a tool tried to (an update check,
// telemetry). Every outgoing socket, net.connect() and tls.connect() alike,
// goes through net.Socket.prototype.connect.
//
//   NODE_OPTIONS="--require tests/gateway/loopback-only.cjs"

"use strict";

const net = require("node:net");

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);
const connect = net.Socket.prototype.connect;

net.Socket.prototype.connect = function (...args) {
  // Node passes its own normalized [options, callback] array; callers pass
  // (options), (port, host) or (path).
  const first = Array.isArray(args[0]) ? args[0][0] : args[0];
  let host;
  if (first !== null && typeof first === "object") {
    if (first.path) return connect.apply(this, args); // a Unix socket
    host = first.host;
  } else if (typeof first === "number" || /^\d+$/.test(String(first))) {
    host = args[1];
  } else {
    return connect.apply(this, args); // a Unix socket path
  }
  host = host || "localhost";
  if (LOOPBACK.has(host)) return connect.apply(this, args);
  process.stderr.write(`cfkv-test: blocked a connection to ${host}\n`);
  process.nextTick(() => this.destroy(new Error(`cfkv-test: blocked a connection to ${host}`)));
  return this;
};
