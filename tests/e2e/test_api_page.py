"""The JSON API page's curl commands, pasted into a shell as a reader would, against the running site."""

import html
import os
import re
import shutil
import subprocess
import time

import pytest
import requests

pytestmark = pytest.mark.slow


def test_the_api_page_commands_work_as_pasted(emulator_site):
    if not shutil.which("curl"):
        if os.environ.get("CI"):
            pytest.fail("curl is missing: apt-get install -y curl", pytrace=False)
        pytest.skip("curl is missing (apt-get install -y curl); in CI this fails instead of skipping")
    page = requests.get(emulator_site.url("/api/"), timeout=10).text
    steps = [html.unescape(block) for block in re.findall(r'<pre class="shell">(.*?)</pre>', page, re.S)]
    assert len(steps) == 5 and steps[0] == f"BASE={emulator_site.base_url}"

    started = time.time()
    shell = subprocess.run(["bash", "-eu", "-c", "\n".join(steps)], capture_output=True,
                           text=True, timeout=60)
    ended = time.time()
    assert shell.returncode == 0, shell.stderr
    lines = shell.stdout.splitlines()
    assert '"username": "demo"' in lines[0]  # 2: the token's user
    assert lines[1] == "204" and lines[3] == "401"  # 3: revoked, then refused
    codes = lines[4].split()
    assert len(codes) == 11 and set(codes) <= {"200", "429"}
    if started // 60 == ended // 60:  # one clock minute: 10 pings pass, the eleventh and the next are refused
        assert codes == ["200"] * 10 + ["429"], codes
        assert lines[5].startswith("HTTP/1.1 429") and any(
            line.startswith("RateLimit-Policy: ") for line in lines[6:]), shell.stdout
