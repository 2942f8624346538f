"""Text that others wrote, made safe to show: no character in it can drive a terminal or split a log line.

A key name, a value or a metadata field is whatever a namespace writer (a Worker, another
site, anyone with the namespace's token) stored; an error message or a header is whatever
the server answering said. Printed as they came, an escape sequence could rewrite an
operator's screen, set the clipboard (OSC 52) or hide a key, a carriage return or a bidi
override could make a line read as another, and a newline could forge a log line. So text
from outside is shown with every character that is not printable (control, format,
separator and unassigned characters, as :meth:`str.isprintable` has them; the space is
kept) written as its escape, ``\\x1b`` or ``\\u202e``, as Python's repr writes it. Only
what is shown changes: values, keys and ``--json`` output still carry every character.

No I/O, nothing Django.
"""

from collections.abc import Callable

_JSON_KEPT = "\n "  # json.dumps' own layout (indent): never inside a string, where it is escaped


def one_line(text: str) -> str:
    """Return ``text`` as one line that shows every character: each one not printable, newlines
    included, written as its escape (``\\x1b``, ``\\n``, ``\\u202e``)."""
    return _shown(text, "", _escaped)


def multiline(text: str) -> str:
    """Return ``text`` (a value, which may run over several lines) with its newlines and tabs kept and
    every other character that is not printable written as its escape."""
    return _shown(text, "\n\t", _escaped)


def json_text(dumped: str) -> str:
    """Return JSON text (``json.dumps(..., ensure_ascii=False)``) with every character that is not
    printable inside its strings written as a JSON escape, so it reads the same and decodes to the same."""
    return _shown(dumped, _JSON_KEPT, _json_escaped)


def _shown(text: str, kept: str, escaped: Callable[[str], str]) -> str:
    """Return ``text`` with each character that is neither printable nor in ``kept`` as ``escaped`` writes it."""
    if text.isprintable():  # the common case: nothing to escape
        return text
    return "".join(char if char.isprintable() or char in kept else escaped(char) for char in text)


def _escaped(char: str) -> str:
    return repr(char)[1:-1]  # as repr writes it: \n, \x1b, \u202e


def _json_escaped(char: str) -> str:
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # past the BMP: JSON writes a UTF-16 surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
