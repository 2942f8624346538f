"""Check every internal link of the built HTML documentation: offline, in a second.

Usage: python docs/check_links.py docs/_build/html

Every relative ``href`` or ``src`` must name a file of the build, and every ``#fragment`` an ``id``
(or ``name``) on the page it points to. Links with a scheme (``https:``, ``mailto:``) go off the site
and are not followed: the build never touches the network. Exits 1 and lists the broken links.
"""

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()
        self.links = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("id", "name"):
            if attrs.get(name):
                self.ids.add(attrs[name])
        for name in ("href", "src"):
            if attrs.get(name) is not None and tag != "form":
                self.links.append((self.getpos()[0], attrs[name]))


def _parse(path):
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def broken_links(root):
    """Return ``(page, line, link, problem)`` for every internal link under ``root`` that points nowhere."""
    root = Path(root).resolve()
    pages = {path: _parse(path) for path in sorted(root.rglob("*.html"))}
    problems = []
    for path, page in pages.items():
        for line, link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith("//"):
                continue  # off the site
            target = path if not parts.path else (path.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_relative_to(root) or not target.exists():
                problems.append((path.relative_to(root), line, link, "no such file"))
                continue
            fragment = unquote(parts.fragment)
            if fragment and target.suffix == ".html" and fragment not in pages[target].ids:
                problems.append((path.relative_to(root), line, link, f"no #{fragment} on {target.relative_to(root)}"))
    return len(pages), problems


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__.strip().splitlines()[2])
    count, problems = broken_links(argv[1])
    if count == 0:
        sys.exit(f"No HTML pages under {argv[1]}: build the documentation first (make docs).")
    for page, line, link, problem in problems:
        print(f"{page}:{line}: {link}: {problem}", flush=True)
    if problems:
        sys.exit(f"{len(problems)} broken internal link(s) in {count} pages.")
    print(f"Internal links: all resolve ({count} pages).")


if __name__ == "__main__":
    main(sys.argv)
