"""Each KV operation as a plan: the calls it makes, in order, and what it makes of their answers.

No I/O. An operation of one call is a :class:`Call`: its request, and what its answer makes. One of
several calls (a value and its metadata, bulk runs, pages of namespaces, a bulk read halved when its
answer is too large) is a generator that yields a :class:`~django_cfkv.client.request.KVRequest`, is
sent back its answer (a status under 300), or has the KVError the call failed with thrown in, and
returns the operation's result; it sends a Call with ``yield from call.plan()``. :func:`steps` turns
either into the transport's steps (each call's attempts, then its status checked), which
:class:`~django_cfkv.client.KVClient` follows blocking (``get``) or awaited (``aget``). So every
operation is written once for both.
"""

from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any, NamedTuple, TypeVar

from .. import limits
from ..exceptions import KVError
from ..transport.exchange import BaseTransport, Finish, ResponseTooLargeError, Steps
from ..types import ValueWithMetadata
from . import answer, bulk, errors, request
from .answer import Answer
from .request import KVRequest

R = TypeVar("R")
Plan = Generator[KVRequest, Answer, R]


class Call(NamedTuple):
    """An operation of one call: its request, what its answer makes, and whether a key miss is None.

    Not a generator: the client hands the transport this request's own steps and makes the result of
    their answer (:meth:`answered`), with no plan between them. Each layer a call does not pass
    through is CPU it does not spend, and most operations are of one call.
    """

    request: KVRequest
    result: Callable[[Answer, KVRequest], Any]
    miss_is_none: bool = False  # a key miss (404, code 10009) is None, not an error

    def answered(self, response: Answer) -> Any:
        """Return the result of the call's final answer, or raise the KVError of a status of 300 or more."""
        if response.status_code >= 300:
            error = errors.error_for(response, self.request)
            if not (self.miss_is_none and errors.is_key_miss(error)):
                raise error
            return None
        return self.result(response, self.request)

    def plan(self) -> Plan[Any]:
        """The call as a step of a plan of several calls, which sends it with ``yield from``."""
        try:
            response = yield self.request
        except KVError as exc:
            if self.miss_is_none and errors.is_key_miss(exc):
                return None
            raise
        return self.result(response, self.request)


def steps(operation: "Plan[Any] | Call", transport: BaseTransport, namespace_url: str,
          account_url: str) -> tuple[Steps[Any], Finish]:
    """Return the transport's steps for ``operation``, and what makes its result of their end (None: the end
    is its result). An answer of status 300 or more is raised as the KVError it maps to (a key miss included)."""
    if isinstance(operation, Call):  # most operations: their one call's steps, with nothing between
        return _sent(operation.request, transport, namespace_url, account_url), operation.answered
    return _followed(operation, transport, namespace_url, account_url), None


def _sent(call: KVRequest, transport: BaseTransport, namespace_url: str, account_url: str) -> Steps[Answer]:
    """The transport's steps for one call: its attempts, sent and retried; they end with its final answer."""
    return transport.exchange(call.method, (account_url if call.account else namespace_url) + call.path,
                              endpoint=call.endpoint, idempotent=call.idempotent, max_bytes=call.max_bytes,
                              params=call.params, data=call.body, headers=call.headers)


def _followed(plan: Plan[R], transport: BaseTransport, namespace_url: str, account_url: str) -> Steps[R]:
    """The steps of a plan of several calls: each call sent in turn, and its answer sent back to the plan, or
    its error (an answer of status 300 or more included) thrown in."""
    try:
        call = next(plan)
        while True:
            try:
                response = yield from _sent(call, transport, namespace_url, account_url)
                if response.status_code >= 300:
                    raise errors.error_for(response, call)
            except KVError as exc:  # the plan may mend it (a key miss, an answer too large) or name it (bulk runs)
                call = plan.throw(exc)
            else:
                call = plan.send(response)
    except StopIteration as done:
        return done.value


def _content(response: Answer, call: KVRequest) -> bytes:
    return response.content


def _answer(response: Answer, call: KVRequest) -> Answer:
    return response


# Reads

def get(key: str) -> Call:
    """The value's bytes, or None. One call."""
    return Call(request.get_value(key), _content, miss_is_none=True)


def get_with_metadata(key: str) -> Plan[ValueWithMetadata | None]:
    """The value with its metadata and expiry, or None. Two calls (the REST API has no single call
    that returns a binary value with its metadata); a missing value costs one."""
    response = yield from Call(request.get_value(key), _answer, miss_is_none=True).plan()
    if response is None:
        return None
    expiration = answer.value_expiration(response)
    return ValueWithMetadata(response.content, (yield from get_metadata(key).plan()), expiration)


def get_metadata(key: str) -> Call:
    """The key's metadata (None when it has none or is missing). One call."""
    return Call(request.get_metadata(key), answer.metadata, miss_is_none=True)


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
            value = yield from get(keys[0]).plan()
            return {} if value is None else {keys[0]: value}
        half = len(keys) // 2
        return {**(yield from _bulk_get(keys[:half])), **(yield from _bulk_get(keys[half:]))}
    return answer.bulk_values(response, call)


def list_keys(prefix: str | None, limit: int, cursor: str | None) -> Call:
    """One page of keys. One call."""
    return Call(request.list_keys(prefix, limit, cursor), answer.key_page)


# Writes

def put(key: str, value: bytes | str, *, expiration: float | None = None, expiration_ttl: float | None = None,
        metadata: Any = None) -> Call:
    """Write one value. One call."""
    # The envelope is read (a 200 without success: true is not an acknowledged write); the client drops it.
    return Call(request.put(key, value, expiration=expiration, expiration_ttl=expiration_ttl, metadata=metadata),
                answer.envelope)


def delete(key: str) -> Call:
    """Delete one key; a missing key is not an error. One call."""
    return Call(request.delete(key), answer.envelope, miss_is_none=True)  # a 200 without success: true did not delete


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


def create_namespace(title: str) -> Call:
    """Create a namespace; not retried (not idempotent)."""
    return Call(request.create_namespace(title), answer.new_namespace)
