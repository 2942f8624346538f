"""What log records and error messages say of a call: never its key.

urllib3 logs each request line at DEBUG, and a KV URL's path holds the key (which
may be a session id). A filter on urllib3's loggers, and on aiohttp's client loggers
(which log no request line today, but may name a URL), replaces keys, cursors and
prefixes in KV URLs with placeholders; the records stay. Messages of our own name
a call by its host and endpoint only.
"""

import logging
import re
from urllib.parse import urlsplit

_KEY_IN_PATH = re.compile(r"(/storage/kv/namespaces/[^/\s'\"?#]+/(?:values|metadata)/)[^\s'\"?#]+")
_SECRET_PARAM = re.compile(r"([?&](?:cursor|prefix)=)[^&\s'\"#]*")

# Every urllib3 and aiohttp client logger that can print a URL. A logger's filters
# see only the records made on it, so each gets one.
URL_LOGGERS = ("urllib3", "urllib3.connectionpool", "urllib3.connection", "urllib3.poolmanager",
               "urllib3.response", "urllib3.util.retry", "urllib3.http2.connection",
               "aiohttp", "aiohttp.client", "aiohttp.internal")


def where(method: str, endpoint: str, url: str) -> str:
    """Name a call for messages by its host and endpoint: the URL's path holds the key."""
    return f"{method} {endpoint} on {urlsplit(url).netloc}"


class RedactKVURLs(logging.Filter):
    """Replace the key, cursor and prefix in KV API URLs of a log record with placeholders."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot be formatted is left to logging's own handling
            return True
        redacted = _SECRET_PARAM.sub(r"\1<redacted>", _KEY_IN_PATH.sub(r"\1<key>", message))
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install_filter(names: tuple[str, ...] = URL_LOGGERS) -> None:
    """Give each named logger one RedactKVURLs filter."""
    for name in names:
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactKVURLs) for f in target.filters):
            target.addFilter(RedactKVURLs())
