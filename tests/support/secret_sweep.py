"""A guard on every test: no secret and no session id in logs, exception text or command output.

The promise (docs, security): secrets and session ids never appear in logs (at any level), exception text,
reprs or output. This plugin (``pytest_plugins`` in tests/conftest.py) checks it for each test:

* It knows each test's secrets. Strings of 20 characters or more from
  ``django.utils.crypto.get_random_string`` (session ids come from there, as do CSRF secrets and password
  salts) and the tokens ``issue_token``/``aissue_token`` return are registered for the test that made them
  (fixtures included); ``SECRET_KEY``, ``SECRET_KEY_FALLBACKS``, each ``CFKV`` alias' ``API_TOKEN``,
  ``CLOUDFLARE_API_TOKEN`` (8 characters or more) and the user index key derived from ``SECRET_KEY`` (what
  ``user_index_key()`` gives a Worker) are read from the settings in force whenever text is said.
* It hears everything said: each call to a logger's debug() ... log() (levels that are off included; the
  logger's own ``RedactKVURLs`` filter applied first, as logging applies it; the text of an exc_info
  exception and its causes too), the text (str and repr) of every ``KVError``, ``ImproperlyConfigured``
  and ``CommandError`` (when made, each time a ``KVError`` is shown, and at the test's end), and each
  ``OutputWrapper.write()`` of a management command.
* A test during which a secret was said fails at teardown, naming where it was said and what kind of secret
  it was, never the secret (a short SHA-256 fingerprint stands for it).

Nothing it does changes which records are emitted, their caller (the wrappers' frames count as logging's
own), logger levels or what caplog sees. ``@pytest.mark.says_secrets("reason")`` exempts one test that says a
secret on purpose; a test that xfails (a leak's reproducer) is not failed a second time at teardown.
Text said between tests (a server thread's logs) is checked against the settings' secrets and listed in
the terminal summary.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from django_cfkv.transport.logs import RedactKVURLs

GENERATED_MIN = 20  # get_random_string results at least this long are secrets (session ids have 32)
TOKEN_MIN = 16  # issued tokens shorter than this are not taken for secrets
SETTING_MIN = 8  # SECRET_KEY and API tokens shorter than this are placeholders ("t", "token")
MARKER = "says_secrets"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
           "exception": logging.ERROR, "critical": logging.CRITICAL, "fatal": logging.CRITICAL}

_local = threading.local()  # .busy: the sweep itself is talking (formatting, reading settings)
_lock = threading.Lock()
_stats = {"said": 0, "seconds": 0.0}


def fingerprint(secret: str) -> str:
    """A stand-in for a secret in messages: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()[:8]


class Sweep:
    """What one test (or one guarded block) made and said: its secrets and where any of them showed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.secrets: dict[str, str] = {}  # secret -> what kind of secret it is
        self._by_length: dict[int, set[str]] = {}
        self.findings: dict[tuple[str, str, str], None] = {}  # (where, kind, fingerprint), in order
        self.errors: list[Any] = []  # weak references to the exceptions made, read again at the end

    def register(self, secret: str, kind: str, *, minimum: int = GENERATED_MIN) -> None:
        if not isinstance(secret, str) or len(secret) < minimum:
            return
        with _lock:
            if secret not in self.secrets or kind.startswith("bearer token"):
                self.secrets[secret] = kind
            self._by_length.setdefault(len(secret), set()).add(secret)

    def hits(self, text: str) -> Iterator[str]:
        """Yield each registered secret found in ``text``."""
        size = len(text)
        for length, group in list(self._by_length.items()):
            if size < length:
                continue
            if len(group) <= 24:
                yield from (secret for secret in list(group) if secret in text)
            else:  # many secrets (a load test): look each window of the text up instead
                found = {text[i:i + length] for i in range(size - length + 1)} & group
                yield from found

    def check(self, text: str, where: str) -> None:
        for secret, kind in _settings_secrets():
            self.register(secret, kind, minimum=SETTING_MIN)
        for secret in self.hits(text):
            self.findings[(where, self.secrets.get(secret, "secret"), fingerprint(secret))] = None

    def report(self) -> str:
        lines = [f"a secret was said during {self.name} (the secret is shown by its SHA-256 prefix only):"]
        lines += [f"  - {kind} [sha256 {fp}] in {where}" for where, kind, fp in self.findings]
        return "\n".join(lines)


_current: Sweep | None = None
_strays: dict[tuple[str, str, str], None] = {}  # said outside any test


@contextmanager
def _busy() -> Iterator[bool]:
    """Yield True if the sweep was already busy on this thread (then say nothing), marking it busy meanwhile."""
    was = getattr(_local, "busy", False)
    _local.busy = True
    try:
        yield was
    finally:
        _local.busy = was


@contextmanager
def sweeping(name: str) -> Iterator[Sweep]:
    """Make a fresh Sweep the current one for a block (the current test's is put back after)."""
    global _current
    outer, _current = _current, Sweep(name)
    try:
        yield _current
    finally:
        _current = outer


_index_keys: dict[str, str] = {}


def _index_key_of(secret_key: str) -> str:
    """The user index key a Worker is given (django_cfkv.sessions.user_index_key()) for a SECRET_KEY."""
    if secret_key not in _index_keys:
        from django_cfkv.sessions.index import _index_key

        _index_keys[secret_key] = _index_key(secret_key).hex()
    return _index_keys[secret_key]


def _settings_secrets() -> list[tuple[str, str]]:
    """The secrets in the settings in force now: SECRET_KEY and its fallbacks, every alias' API_TOKEN."""
    found: list[tuple[str, str]] = []
    try:
        from django.conf import settings

        if not settings.configured:
            return found
        key = getattr(settings, "SECRET_KEY", None)
        if isinstance(key, str):
            found.append((key, "SECRET_KEY"))
            found.append((_index_key_of(key), "user index key (user_index_key(), from SECRET_KEY)"))
        for old in getattr(settings, "SECRET_KEY_FALLBACKS", None) or ():
            if isinstance(old, str):
                found.append((old, "SECRET_KEY_FALLBACKS entry"))
                found.append((_index_key_of(old), "user index key from a SECRET_KEY_FALLBACKS entry"))
        config = getattr(settings, "CFKV", None)
        if isinstance(config, dict):
            for alias, options in config.items():
                token = options.get("API_TOKEN") if isinstance(options, dict) else None
                if isinstance(token, str):
                    found.append((token.strip(), f"API_TOKEN of CFKV[{alias!r}]"))
    except Exception:  # settings being changed or broken on purpose: nothing to read now
        pass
    env = os.environ.get("CLOUDFLARE_API_TOKEN")
    if env:
        found.append((env.strip(), "CLOUDFLARE_API_TOKEN"))
    return found


def say(text: Any, where: str) -> None:
    """Check one text said somewhere against the current test's secrets (or, between tests, the settings')."""
    if getattr(_local, "busy", False):
        return
    started = time.perf_counter()
    with _busy():
        try:
            text = text if isinstance(text, str) else str(text)
        except Exception:
            return
        sweep = _current
        if sweep is not None:
            sweep.check(text, where)
        else:
            for secret, kind in _settings_secrets():
                if len(secret) >= SETTING_MIN and secret in text:
                    _strays[(where, kind, fingerprint(secret))] = None
    _stats["said"] += 1
    _stats["seconds"] += time.perf_counter() - started


def register(secret: str, kind: str, minimum: int = GENERATED_MIN) -> None:
    sweep = _current
    if sweep is not None:
        sweep.register(secret, kind, minimum=minimum)


# --- where secrets are born -------------------------------------------------------------------------------

def _wrap_random(original: Any) -> Any:
    def get_random_string(*args: Any, **kwargs: Any) -> str:
        value = original(*args, **kwargs)
        if len(value) >= GENERATED_MIN:
            caller = sys._getframe(1).f_globals.get("__name__", "?")
            kind = "session id" if caller == "django_cfkv.sessions.keys" else f"random string made by {caller}"
            register(value, kind)
        return value

    get_random_string.__wrapped__ = original  # type: ignore[attr-defined]
    return get_random_string


def _wrap_token(original: Any, asynchronous: bool) -> Any:
    def note(token: Any) -> Any:
        register(token, "bearer token", TOKEN_MIN)
        return token

    if asynchronous:
        async def aissue_token(*args: Any, **kwargs: Any) -> Any:
            return note(await original(*args, **kwargs))
        wrapper = aissue_token
    else:
        def issue_token(*args: Any, **kwargs: Any) -> Any:
            return note(original(*args, **kwargs))
        wrapper = issue_token
    wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    wrapper.__doc__ = original.__doc__
    return wrapper


# --- what is said -----------------------------------------------------------------------------------------

# Compiled as if in logging's own file, so that findCaller() skips the wrappers' frames like logging's own
# and each record keeps the caller's file, line and function, as without the sweep.
_LOGGING_WRAPPERS = '''
def _wrap_log_method(original, level, heard):
    def method(self, msg, *args, **kwargs):
        heard(self, level, msg, args, kwargs)
        return original(self, msg, *args, **kwargs)
    return method

def _wrap_log(original, heard):
    def log(self, level, msg, *args, **kwargs):
        heard(self, level, msg, args, kwargs)
        return original(self, level, msg, *args, **kwargs)
    return log
'''
_logging_namespace: dict[str, Any] = {}
exec(compile(_LOGGING_WRAPPERS, logging._srcfile or logging.__file__, "exec"), _logging_namespace)  # noqa: S102


def _exception_texts(exc_info: Any) -> Iterator[tuple[str, BaseException]]:
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, tuple):
        exc_info = exc_info[1]
    seen = 0
    while isinstance(exc_info, BaseException) and seen < 8:
        yield str(exc_info), exc_info
        exc_info, seen = exc_info.__cause__ or exc_info.__context__, seen + 1


def _heard(logger: logging.Logger, level: Any, msg: Any, args: tuple, kwargs: dict) -> None:
    if getattr(_local, "busy", False):
        return
    with _busy():
        try:
            record = logging.LogRecord(logger.name, level if isinstance(level, int) else 0, "", 0, msg, args, None)
            for one in logger.filters:  # the package's redaction, as Logger.handle() applies it
                if isinstance(one, RedactKVURLs):
                    one.filter(record)
            text = record.getMessage()
        except Exception:  # a record logging cannot format either: it says nothing readable
            return
        try:
            enabled = "" if logger.isEnabledFor(level) else ", level off"
        except Exception:
            enabled = ""
        where = f"a log record on logger {logger.name!r} at {logging.getLevelName(level)}{enabled}"
        exc_info = kwargs.get("exc_info")
        texts = [(text, where)]
        if exc_info:
            try:
                texts += [(t, f"{where}, its exc_info {type(e).__name__}") for t, e in _exception_texts(exc_info)]
            except Exception:
                pass
    for text, place in texts:
        say(text, place)


def _heard_exception_method(logger: logging.Logger, level: Any, msg: Any, args: tuple, kwargs: dict) -> None:
    _heard(logger, level, msg, args, {"exc_info": True, **kwargs})


def _error_text(exc: BaseException, how: str = "") -> None:
    if getattr(_local, "busy", False):
        return
    with _busy():
        try:
            texts = [(str(exc), "str"), (repr(exc), "repr")]
        except Exception:
            return
    for text, form in texts:
        say(text, f"the {form}() of {type(exc).__name__}{how}")


def _wrap_init(cls: type, weak: bool) -> Any:
    original = cls.__init__

    def __init__(self: BaseException, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if getattr(_local, "busy", False):
            return
        _error_text(self, " (as made)")
        sweep = _current
        if sweep is not None and weak:
            import weakref

            try:
                sweep.errors.append(weakref.ref(self))
            except TypeError:
                pass

    return __init__


def _wrap_str(original: Any, form: str) -> Any:
    def shown(self: BaseException) -> str:
        text = original(self)
        if not getattr(_local, "busy", False):
            say(text, f"the {form}() of {type(self).__name__} (as shown)")
        return text

    return shown


def _wrap_write(original: Any) -> Any:
    def write(self: Any, msg: Any = "", style_func: Any = None, ending: Any = None) -> Any:
        if msg and not getattr(_local, "busy", False):
            command = sys._getframe(1).f_locals.get("self")
            name = type(command).__module__ if command is not None and command is not self else "?"
            say(msg, f"management command output (written by {name})")
        return original(self, msg, style_func, ending)

    return write


# --- installing and removing the wrappers -----------------------------------------------------------------

_undo: list[tuple[Any, str, Any, bool]] = []  # (owner, name, old value, owner had its own)


def _patch(owner: Any, name: str, value: Any) -> None:
    had = name in vars(owner)
    _undo.append((owner, name, vars(owner).get(name), had))
    setattr(owner, name, value)


def _rebind(original: Any, wrapper: Any, name: str) -> None:
    """Point every loaded module that imported ``original`` by name at ``wrapper``."""
    for module in list(sys.modules.values()):
        try:
            if module is not None and getattr(module, name, None) is original:
                _patch(module, name, wrapper)
        except Exception:  # lazy modules that cannot answer getattr
            continue


_originals: dict[str, Any] = {}
_WATCHED: tuple[type, ...] = ()  # the exception classes whose text is watched


def installed() -> bool:
    return bool(_originals)


def install() -> None:
    """Put the wrappers in place, for the test session."""
    if _originals:
        return
    import django.utils.crypto as crypto
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management.base import CommandError, OutputWrapper

    from django_cfkv.exceptions import KVError
    from django_cfkv.sessions import tokens

    _originals.update(random=crypto.get_random_string, issue=tokens.issue_token, aissue=tokens.aissue_token)
    wrappers = {"get_random_string": (crypto.get_random_string, _wrap_random(crypto.get_random_string)),
                "issue_token": (tokens.issue_token, _wrap_token(tokens.issue_token, False)),
                "aissue_token": (tokens.aissue_token, _wrap_token(tokens.aissue_token, True))}
    _originals["wrappers"] = wrappers
    rebind()

    wrap_method = _logging_namespace["_wrap_log_method"]
    for name, level in _LEVELS.items():
        heard = _heard_exception_method if name == "exception" else _heard
        _patch(logging.Logger, name, wrap_method(getattr(logging.Logger, name), level, heard))
    _patch(logging.Logger, "log", _logging_namespace["_wrap_log"](logging.Logger.log, _heard))

    global _WATCHED
    _WATCHED = (KVError, ImproperlyConfigured, CommandError)
    _patch(KVError, "__init__", _wrap_init(KVError, weak=True))
    _patch(KVError, "__str__", _wrap_str(KVError.__str__, "str"))
    _patch(KVError, "__repr__", _wrap_str(KVError.__repr__, "repr"))
    _patch(ImproperlyConfigured, "__init__", _wrap_init(ImproperlyConfigured, weak=False))
    _patch(CommandError, "__init__", _wrap_init(CommandError, weak=False))
    _patch(OutputWrapper, "write", _wrap_write(OutputWrapper.write))


def rebind() -> None:
    """Point modules loaded since install() that imported a wrapped function by name at its wrapper."""
    for name, (original, wrapper) in _originals.get("wrappers", {}).items():
        _rebind(original, wrapper, name)


def uninstall() -> None:
    while _undo:
        owner, name, old, had = _undo.pop()
        if had:
            setattr(owner, name, old)
        else:
            try:
                delattr(owner, name)
            except AttributeError:
                pass
    _originals.clear()


# --- the plugin -------------------------------------------------------------------------------------------

@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    install()


def pytest_collection_finish(session: pytest.Session) -> None:
    rebind()


def pytest_unconfigure(config: pytest.Config) -> None:
    uninstall()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    global _current
    _current = Sweep(item.nodeid)


_CALL = pytest.StashKey[pytest.TestReport]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    if call.when == "call":
        item.stash[_CALL] = report
        if call.excinfo is not None and _current is not None and isinstance(call.excinfo.value, _WATCHED):
            _error_text(call.excinfo.value, " (the test's outcome)")
    return report


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    global _current
    try:
        result = yield
    finally:
        sweep, _current = _current, None
    if sweep is None:
        return result
    for ref in sweep.errors:  # causes chained since they were made show in a KVError's text
        exc = ref()
        if exc is not None:
            _current = sweep
            try:
                _error_text(exc, " (at the test's end)")
            finally:
                _current = None
    if not sweep.findings:
        return result
    marker = item.get_closest_marker(MARKER)
    if marker is not None:
        if not (marker.args and isinstance(marker.args[0], str) and marker.args[0].strip()):
            pytest.fail(f"@pytest.mark.{MARKER} needs a reason", pytrace=False)
        return result
    call = item.stash.get(_CALL, None)
    if call is not None and hasattr(call, "wasxfail"):
        return result  # an expected failure (a leak's reproducer) says what it says
    pytest.fail(sweep.report(), pytrace=False)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    seconds, said = _stats["seconds"], _stats["said"]
    terminalreporter.write_line(f"secret sweep: {said} texts checked in {seconds:.2f} s")
    if _strays:
        terminalreporter.section("secret sweep: secrets said between tests")
        for where, kind, fp in _strays:
            terminalreporter.write_line(f"{kind} [sha256 {fp}] in {where}")
