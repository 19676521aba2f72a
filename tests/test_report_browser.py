"""The HTML report in a real browser (headless chromium): it renders fully and offline.

Skipped only where chromium is not installed (CI installs it). Every run maps all
host names to NOTFOUND and records a NetLog, so a page that tried to load anything
from the network is caught twice: its requests show up in the log, and they fail.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from matplotlib import image as mpimg
from report_payloads import with_payloads

from promptaudit.report import render_html

CHROMIUM = shutil.which("chromium")
FIXTURE = Path(__file__).parent / "fixtures" / "sample_result.json"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed"),
]


def _chromium(url: str, workdir: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Run headless chromium offline on ``url``; return the process and its NetLog path."""
    workdir.mkdir(parents=True, exist_ok=True)
    net_log = workdir / "netlog.json"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-extensions", "--disable-default-apps", "--no-pings",
        "--hide-scrollbars", f"--user-data-dir={workdir / 'profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND", f"--log-net-log={net_log}",
        *args, url,
    ]
    process = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert process.returncode == 0, process.stderr[-2000:]
    return process, net_log


def _page_requests(net_log: Path) -> list[str]:
    """URLs the page itself asked for (not chromium's own background requests)."""
    text = net_log.read_text(encoding="utf-8")
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # log cut short: close the event list
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    names = {value: key for key, value in log["constants"]["logEventTypes"].items()}
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if names.get(event["type"]) != "URL_REQUEST_START_JOB" or "url" not in params:
            continue
        from_page = params.get("initiator") == "null" or "file://" in str(
            params.get("site_for_cookies", ""))
        if from_page and not params["url"].startswith(("file:", "data:")):
            urls.append(params["url"])
    return urls


@pytest.fixture(scope="module")
def result() -> dict:
    """The real sample result with injection payloads planted where user text goes."""
    return with_payloads(json.loads(FIXTURE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def report_file(tmp_path_factory, result) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    path = folder / "report.html"
    path.write_text(render_html(result), encoding="utf-8")
    return path


def test_static_html_has_no_external_reference(report_file):
    page = report_file.read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    tags = re.findall(r"<[a-zA-Z][^>]*>", page)  # escaped text holds no raw "<"
    assert len(tags) > 500
    for tag in tags:
        for attr, value in re.findall(
            r"""\b(src|href|srcset|action|poster|data)\s*=\s*["']?([^"'\s>]*)""", tag, re.I
        ):
            assert value.startswith(("#", "data:image/png;base64,")), (attr, value)
    assert re.search(r"url\(\s*['\"]?(?!data:)|@import|<link\b", page, re.IGNORECASE) is None


def test_dom_has_summary_gates_and_figures(report_file, result, tmp_path):
    process, net_log = _chromium(report_file.as_uri(), tmp_path, "--dump-dom")
    dom = process.stdout
    assert '<section id="bias-audit"' in dom and "Bias audit summary" in dom
    assert '<section id="summary"' in dom and "Largest gaps" in dom
    # The largest selection-rate gap, from the fixture's own numbers.
    feature = result["fairness"]["worst_feature"]["demographic_parity_ratio"]
    groups = result["fairness"]["by_feature"][feature]["by_group"]
    (low_v, low_g), *_, (high_v, high_g) = sorted(
        (g["selection_rate"], name) for name, g in groups.items())
    assert (f"{feature}: selection rate (share predicted 'accept') for group '{low_g}' is "
            f"{low_v:.2f} vs {high_v:.2f} for '{high_g}'" in html.unescape(dom))
    assert '<table class="gates">' in dom
    statuses = [g["status"] for g in result["gates"]]
    assert dom.count("FAIL</td>") == statuses.count("fail")
    assert dom.count("pass</td>") == statuses.count("pass")
    assert dom.count('<td class="result inconclusive">') == statuses.count("inconclusive")
    # 3 selection-rate charts + 2 attribution figures (no per-group chart: the sample's
    # groups are all under min_group_size), as tests/test_report.py counts in the source
    assert len(re.findall(r'<img src="data:image/png;base64,', dom)) == 5
    # The payloads stayed text: the parsed DOM holds no injected element.
    assert "<script" not in dom and re.search(r"<img[^>]*onerror", dom) is None
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "&lt;img src=x onerror=alert(1)&gt;" in dom
    assert _page_requests(net_log) == []


def test_screenshot_renders_offline(report_file, tmp_path):
    shot = tmp_path / "shot.png"
    _, net_log = _chromium(report_file.as_uri(), tmp_path, f"--screenshot={shot}",
                           "--window-size=1280,2000")
    assert shot.exists() and shot.stat().st_size > 10_000
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    gray = pixels[..., :3].mean(axis=2)
    assert gray.var() > 0.005  # text, tables and colours, not a blank page
    # The verdict badge (red on pink) made it to the top of the page.
    top = pixels[:300, :, :3]
    reddish = (top[..., 0] > 0.5) & (top[..., 1] < 0.3) & (top[..., 2] < 0.3)
    assert reddish.sum() > 100
    assert _page_requests(net_log) == []


def test_network_check_catches_an_external_reference(tmp_path):
    """The NetLog check is not vacuous: a page with external resources is caught."""
    page = tmp_path / "external.html"
    page.write_text('<html><body><img src="http://example.invalid/x.png">'
                    '<link rel="stylesheet" href="https://cdn.example.invalid/a.css">'
                    "hello</body></html>", encoding="utf-8")
    _, net_log = _chromium(page.as_uri(), tmp_path / "run", "--dump-dom")
    assert sorted(_page_requests(net_log)) == [
        "http://example.invalid/x.png", "https://cdn.example.invalid/a.css"]
