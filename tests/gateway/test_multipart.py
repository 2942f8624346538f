"""A write with metadata keeps a binary value's bytes through a real web-platform form parser.

The value travels as a multipart/form-data part. A Worker parsing it with
``request.formData()`` (under Miniflare: workerd, Cloudflare's runtime) gets a
part without a filename as UTF-8 text, which alters bytes that are not UTF-8;
the client sends it as a file part so every parser keeps the bytes. The value
is read back through the gateway, from the namespace both Workers share.

Needs `npm ci --prefix tests/gateway`; a missing install fails, never skips.
"""

import pytest

from django_cfkv.client import KVClient
from tests.gateway.server import GATEWAY_DIR, GatewayServer

BINARY = bytes(range(256)) * 4  # every byte value; invalid UTF-8 from 0x80 on
METADATA = {"kind": "cache", "expires": 1900000000.5, "note": "é漢"}


@pytest.fixture(scope="module")
def gw():
    with GatewayServer(extra_worker=GATEWAY_DIR / "formdata-worker.mjs", extra_binding="KV") as server:
        yield server


@pytest.mark.parametrize("value", [BINARY, b"\xff\xfe\x00\x80", "héllo".encode(), b""],
                         ids=["all-bytes", "not-utf8", "utf8-text", "empty"])
def test_form_data_parser_stores_the_exact_bytes_of_a_write_with_metadata(gw, value):
    writer = KVClient(gw.account_id, gw.namespace_id, "unused", base_url=f"{gw.extra_url}/client/v4",
                      max_retries=0)
    reader = KVClient(gw.account_id, gw.namespace_id, gw.token, base_url=gw.base_url, max_retries=0)
    key = f"bin:{len(value)}:{value[:2].hex()}"
    writer.put(key, value, metadata=METADATA, expiration_ttl=300)
    entry = reader.get_with_metadata(key)
    assert entry.value == value
    assert entry.metadata == METADATA
    writer.close()
    reader.close()


def test_the_gateway_stores_the_exact_bytes_of_a_write_with_metadata(gw):
    client = KVClient(gw.account_id, gw.namespace_id, gw.token, base_url=gw.base_url, max_retries=0)
    client.put("bin:gateway", BINARY, metadata=METADATA)
    assert client.get("bin:gateway") == BINARY and client.get_metadata("bin:gateway") == METADATA
    client.close()
