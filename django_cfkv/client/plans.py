"""Each KV operation as a plan: the calls it makes, in order, and what it makes of their answers.

No I/O. A plan is a generator that yields a :class:`~django_cfkv.client.request.KVRequest`, is
sent back its answer (a status under 300), or has the KVError the call failed with thrown in, and
returns the operation's result. :func:`steps` turns a plan into the transport's steps (each call's
attempts, then its status checked), which :class:`~django_cfkv.client.KVClient` follows blocking
(``get``) or awaited (``aget``). So an operation of several calls (a value and its metadata, bulk
runs, pages of namespaces, a bulk read halved when its answer is too large) is written once for both.
"""

from collections.abc import Generator, Iterable, Mapping
from typing import Any, TypeVar

from .. import limits
from ..exceptions import KVError
from ..transport.exchange import BaseTransport, ResponseTooLargeError, Steps
from ..types import KeyPage, ValueWithMetadata
from . import answer, bulk, errors, request
from .answer import Answer
from .request import KVRequest

R = TypeVar("R")
Plan = Generator[KVRequest, Answer, R]


def steps(plan: Plan[R], transport: BaseTransport, namespace_url: str, account_url: str) -> Steps[R]:
    """Return the transport's steps for ``plan``: each call sent and retried by the transport, and an
    answer of status 300 or more raised as the KVError it maps to (a key miss included)."""
    try:
        call = next(plan)
        while True:
            url = (account_url if call.account else namespace_url) + call.path
            try:
                response = yield from transport.exchange(
                    call.method, url, endpoint=call.endpoint, idempotent=call.idempotent, max_bytes=call.max_bytes,
                    params=call.params, data=call.body, headers=call.headers)
                if response.status_code >= 300:
                    raise errors.error_for(response, call)
            except KVError as exc:  # the plan may mend it (a key miss, an answer too large) or name it (bulk runs)
                call = plan.throw(exc)
            else:
                call = plan.send(response)
    except StopIteration as done:
        return done.value


def _read(call: KVRequest) -> Plan[Answer | None]:
    """Send ``call``; a key miss (404, code 10009) is None, not an error."""
    try:
        return (yield call)
    except KVError as exc:
        if errors.is_key_miss(exc):
            return None
        raise


# Reads

def get(key: str) -> Plan[bytes | None]:
    """The value's bytes, or None. One call."""
    response = yield from _read(request.get_value(key))
    return None if response is None else response.content


def get_with_metadata(key: str) -> Plan[ValueWithMetadata | None]:
    """The value with its metadata and expiry, or None. Two calls (the REST API has no single call
    that returns a binary value with its metadata); a missing value costs one."""
    response = yield from _read(request.get_value(key))
    if response is None:
        return None
    expiration = answer.value_expiration(response)
    return ValueWithMetadata(response.content, (yield from get_metadata(key)), expiration)


def get_metadata(key: str) -> Plan[Any]:
    """The key's metadata (None when it has none or is missing). One call."""
    call = request.get_metadata(key)
    response = yield from _read(call)
    return None if response is None else answer.metadata(response, call)


def get_many(keys: Iterable[str]) -> Plan[dict[str, bytes]]:
    """{key: bytes} for the keys that exist, in ceil(n/100) bulk calls (text values only)."""
    found: dict[str, bytes] = {}
    for chunk in bulk.chunks(limits.validate_keys(keys), limits.BULK_GET_MAX_KEYS):
        found.update((yield from _bulk_get(chunk)))
    return found


def _bulk_get(keys: list[str]) -> Plan[dict[str, bytes]]:
    call = request.bulk_get(keys)
    try:
        response = yield call
    except ResponseTooLargeError:
        # KV limits one value to 25 MiB, not a bulk answer: ask for fewer
        # keys at a time, and read a value too large for an answer alone.
        if len(keys) == 1:
            value = yield from get(keys[0])
            return {} if value is None else {keys[0]: value}
        half = len(keys) // 2
        return {**(yield from _bulk_get(keys[:half])), **(yield from _bulk_get(keys[half:]))}
    return answer.bulk_values(response, call)


def list_keys(prefix: str | None, limit: int, cursor: str | None) -> Plan[KeyPage]:
    """One page of keys. One call."""
    call = request.list_keys(prefix, limit, cursor)
    return answer.key_page((yield call), call)


# Writes

def put(key: str, value: bytes | str, *, expiration: float | None = None, expiration_ttl: float | None = None,
        metadata: Any = None) -> Plan[None]:
    """Write one value. One call."""
    call = request.put(key, value, expiration=expiration, expiration_ttl=expiration_ttl, metadata=metadata)
    answer.envelope((yield call), call)  # a 200 without success: true is not an acknowledged write


def delete(key: str) -> Plan[None]:
    """Delete one key; a missing key is not an error. One call."""
    call = request.delete(key)
    response = yield from _read(call)
    if response is not None:
        answer.envelope(response, call)  # a 200 without success: true did not delete


def put_many(items: Iterable[Mapping[str, Any]]) -> Plan[None]:
    """Write many items, one bulk call per 10,000 pairs or 100 MB; KVBulkError names every key not written."""
    yield from _bulk("write", request.bulk_put(items))


def delete_many(keys: Iterable[str]) -> Plan[None]:
    """Delete keys, one bulk call per 10,000; KVBulkError names any left behind."""
    yield from _bulk("delete", request.bulk_delete(keys))


def _bulk(action: str, calls: list[KVRequest]) -> Plan[None]:
    """Send bulk calls in turn; raise KVBulkError naming every key not done (see bulk.BulkRun)."""
    run = bulk.BulkRun(action, calls)
    for index, call in enumerate(calls):
        try:
            run.answered(answer.unsuccessful((yield call), call))  # a 200 that is not an envelope fails
        except KVError as exc:
            raise run.stopped(index, exc) from exc
    run.finish()


# Namespaces

def list_namespaces() -> Plan[list[dict[str, Any]]]:
    """Every namespace of the account, page by page."""
    found: list[dict[str, Any]] = []
    page = 1
    while True:
        call = request.list_namespaces(page)
        batch, more = answer.namespace_page((yield call), call, page, len(found))
        found += batch
        if not more:
            return found
        page += 1


def create_namespace(title: str) -> Plan[dict[str, Any]]:
    """Create a namespace; not retried (not idempotent)."""
    call = request.create_namespace(title)
    return answer.new_namespace((yield call), call)
