"""Run the Worker gateway under Miniflare (serve.mjs, beside this file) for tests and benchmarks.

    with GatewayServer() as gw:
        requests.get(gw.base_url + "/accounts/x/storage/kv/namespaces/" + gw.namespace_id + "/keys",
                     headers={"Authorization": f"Bearer {gw.token}"})

Needs Node 20+ and ``npm ci --prefix tests/gateway``. A missing install is an
error, never a skip.
"""

import json
import os
import pathlib
import secrets
import shutil
import subprocess
import tempfile
import threading

import requests

GATEWAY_DIR = pathlib.Path(__file__).resolve().parent  # the Node harness: serve.mjs, package.json, node_modules
REPO = GATEWAY_DIR.parent.parent
SERVE = GATEWAY_DIR / "serve.mjs"
INSTALL_HINT = "run `npm ci --prefix tests/gateway` (Node 20+ and npm are needed)"


class GatewayNotInstalled(RuntimeError):
    """Node or the Miniflare test dependency is missing."""


def check_installed():
    if shutil.which("node") is None:
        raise GatewayNotInstalled(
            f"`node` is not on PATH: the gateway tests need Node 20+; then {INSTALL_HINT}."
        )
    if not (GATEWAY_DIR / "node_modules" / "miniflare" / "package.json").exists():
        raise GatewayNotInstalled(f"tests/gateway/node_modules is missing: {INSTALL_HINT}.")


class GatewayServer:
    """The gateway (or the bare benchmark Worker) on 127.0.0.1, in a node subprocess.

    ``counting`` runs the gateway through counting-shim.mjs, which
    counts KV operations per invocation (``x-test-kv-ops``) and fails any
    invocation past 1,000. ``extra_worker`` is a path to a user Worker script
    bound to the same KV namespace as ``extra_binding``; it gets its own URL,
    ``.extra_url``.
    """

    def __init__(self, extra_worker=None, *, extra_binding="SESSIONS", extra_vars=None, worker="gateway",
                 counting=True, self_binding=True, token=None, read_token=None, previous_token=None,
                 previous_read_token=None, namespace_id=None, account_id=None, fail_key_prefix=None,
                 fail_chunk_marker=None, persist_dir=None, startup_timeout=60.0):
        self.worker = worker
        # token="" runs a gateway without the CFKV_GATEWAY_TOKEN secret.
        self.token = secrets.token_urlsafe(24) if token is None else token
        self.read_token = secrets.token_urlsafe(24) if read_token is None else read_token
        # The secrets of a rotation: the token being replaced keeps working, with its old rights.
        self.previous_token = previous_token
        self.previous_read_token = previous_read_token
        self.namespace_id = namespace_id or secrets.token_hex(16)
        self.account_id = account_id or secrets.token_hex(16)
        self.startup_timeout = startup_timeout
        self.config = {
            "worker": worker,
            "counting": counting,
            "namespaceId": self.namespace_id,
            "token": self.token or None,
            "readToken": self.read_token or None,
            "previousToken": previous_token,
            "previousReadToken": previous_read_token,
            "self": self_binding,
            "failKeyPrefix": fail_key_prefix,
            "failChunkMarker": fail_chunk_marker,
            "persistDir": str(persist_dir) if persist_dir else None,
        }
        if extra_worker:
            self.config["extraWorker"] = {
                "scriptPath": str(pathlib.Path(extra_worker).resolve()),
                "binding": extra_binding,
                "vars": extra_vars or {},
            }
        self.url = None
        self.extra_url = None
        self._proc = None
        self._stderr = None

    # lifecycle

    def start(self):
        check_installed()
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            ["node", str(SERVE), json.dumps(self.config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, cwd=str(REPO),
        )
        first_line = {}
        ready = threading.Event()

        def pump():
            for raw in self._proc.stdout:  # keep draining so worker logs never block
                if not ready.is_set():
                    try:
                        first_line.update(json.loads(raw))
                    except ValueError:
                        continue
                    ready.set()
            ready.set()

        threading.Thread(target=pump, name="gateway-stdout", daemon=True).start()
        if not ready.wait(self.startup_timeout) or "url" not in first_line:
            output = self._stderr_tail()
            self.stop()
            raise RuntimeError(f"the gateway did not start (node tests/gateway/serve.mjs):\n{output}")
        self.url = first_line["url"].rstrip("/")
        self.extra_url = (first_line.get("extra_url") or "").rstrip("/") or None
        return self

    def stop(self):
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, OSError):
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._stderr:
            self._stderr.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _stderr_tail(self):
        if not self._stderr:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")[-4000:]

    # addresses

    @property
    def base_url(self):
        """What Django's CFKV BASE_URL would be: ``http://127.0.0.1:PORT/client/v4``."""
        return f"{self.url}/client/v4"

    @property
    def namespace_url(self):
        return f"{self.base_url}/accounts/{self.account_id}/storage/kv/namespaces/{self.namespace_id}"

    def headers(self, token=None):
        return {"Authorization": f"Bearer {token or self.token}"}

    def settings(self):
        """A CFKV alias pointing Django at this gateway."""
        return {"BACKEND": "cloudflare", "BASE_URL": self.base_url, "API_TOKEN": self.token,
                "ACCOUNT_ID": self.account_id, "NAMESPACE_ID": self.namespace_id}

    # counting shim (counting=True only)

    def reset_stats(self):
        requests.post(f"{self.url}/__cfkv_test/reset", timeout=10).raise_for_status()

    def stats(self):
        response = requests.get(f"{self.url}/__cfkv_test/stats", timeout=10)
        response.raise_for_status()
        return response.json()


WRANGLER = GATEWAY_DIR / "node_modules" / "wrangler" / "bin" / "wrangler.js"
LOOPBACK_ONLY = GATEWAY_DIR / "loopback-only.cjs"
BLOCKED = "cfkv-test: blocked a connection"


def wrangler(*args, base_url, token, account_id, home, cwd=None, timeout=120):
    """Run Cloudflare's CLI (the version pinned in tests/gateway/package.json) against ``base_url``.

    Returns the finished process (text stdout/stderr); a non-zero exit raises.
    Nothing leaves loopback: telemetry, error reports and the banner's update
    check are off, ``loopback-only.cjs`` refuses any other connection, and an
    attempt fails the call. ``home`` stands in for the user's home, so no real
    wrangler login or config is read.
    """
    if shutil.which("node") is None or not WRANGLER.exists():
        raise GatewayNotInstalled(f"wrangler is missing from tests/gateway/node_modules: {INSTALL_HINT}.")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(pathlib.Path(home) / ".config"),
        "CLOUDFLARE_API_BASE_URL": base_url,
        "CLOUDFLARE_API_TOKEN": token,
        "CLOUDFLARE_ACCOUNT_ID": account_id,
        "WRANGLER_SEND_METRICS": "false",
        "WRANGLER_SEND_ERROR_REPORTS": "false",
        "WRANGLER_HIDE_BANNER": "true",  # the banner checks npm for a newer wrangler
        "WRANGLER_LOG_PATH": str(pathlib.Path(home) / "wrangler-logs"),
        "NO_COLOR": "1",
        "NODE_OPTIONS": f"--require {LOOPBACK_ONLY}",
    }
    proc = subprocess.run(["node", str(WRANGLER), *args], cwd=str(cwd or home), env=env, text=True,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    if BLOCKED in proc.stderr:
        raise AssertionError(f"wrangler {' '.join(args)} tried to leave loopback:\n{proc.stderr}")
    if proc.returncode != 0:
        raise RuntimeError(f"wrangler {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def in_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
