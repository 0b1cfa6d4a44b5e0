"""attnfit-serve as a real process: a loopback load test, and the explorer page in headless Chromium.

The browser test runs wherever chromium is installed (``make test`` installs it as root or with sudo); it skips
only when chromium is missing *and* the CI variable is unset, so CI can never skip it silently.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import time

import httpx
import pytest


def test_load_16_concurrent_clients(live_server):
    """16 clients, 320 requests in all over loopback: every one answered, none an error; latencies printed."""

    async def client(session: httpx.AsyncClient, worker: int, latencies: list[float], codes: list[int]) -> None:
        for i in range(20):
            start = time.perf_counter()
            response = await session.post("/v1/classify", json={"text": f"the dog {worker} runs {i} times ."})
            latencies.append(time.perf_counter() - start)
            codes.append(response.status_code)

    async def main() -> tuple[list[float], list[int]]:
        latencies, codes = [], []
        async with httpx.AsyncClient(base_url=live_server, timeout=30) as session:
            await asyncio.wait_for(asyncio.gather(*(client(session, w, latencies, codes) for w in range(16))), 180)
        return latencies, codes

    httpx.post(f"{live_server}/v1/classify", json={"text": "warm-up"}, timeout=30)  # first-call costs not timed
    start = time.perf_counter()
    latencies, codes = asyncio.run(main())
    wall = time.perf_counter() - start
    assert codes == [200] * 320
    q = statistics.quantiles(latencies, n=20)
    print(f"\nload test: 320 requests, 16 clients, {wall:.1f} s ({320 / wall:.0f} req/s); "
          f"p50 {1000 * statistics.median(latencies):.1f} ms, p95 {1000 * q[18]:.1f} ms")  # fmt: skip


def chromium_path() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        found = None
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but chromium (Debian's package) or playwright is missing: `make test` installs them")
        pytest.skip("chromium or playwright is not installed (make test installs them; CI never skips this)")
    return found


def test_explorer_page_draws_the_weights_the_api_returns(live_server, tmp_path):
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    text = "the small dogs that the cat sees run ."
    api = httpx.post(f"{live_server}/v1/classify", json={"text": text, "need_weights": True}).json()["results"][0]
    attention = api["attention"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(live_server + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('classification')")
            page.fill("#text", text)
            page.click("#submit")
            page.wait_for_selector('#heatmap[data-ready="true"]')
            assert api["label"] in page.inner_text("#prediction")

            # First map: the pooling weights, one row over the tokens.
            grid = page.locator("#heatmap")
            assert grid.get_attribute("data-map") == "pooling weights"
            values = page.eval_on_selector_all("#heatmap .cell", "cs => cs.map(c => +c.dataset.value)")
            assert values == attention["pooling"]
            labels = page.eval_on_selector_all("#heatmap .label.col", "ls => ls.map(l => l.textContent)")
            assert labels == attention["tokens"]

            # Self-attention: every layer and head selectable; each drawn cell is the API's weight.
            page.select_option("#map", label="self-attention")
            for layer in range(len(attention["layers"])):
                for head in range(len(attention["layers"][0])):
                    page.select_option("#layer", str(layer))
                    page.select_option("#head", str(head))
                    drawn = grid.get_attribute("data-layer"), grid.get_attribute("data-head")
                    assert drawn == (str(layer), str(head))
                    cells = page.eval_on_selector_all(
                        "#heatmap .cell", "cs => cs.map(c => [+c.dataset.row, +c.dataset.col, +c.dataset.value])"
                    )
                    n = len(attention["tokens"])
                    assert len(cells) == n * n
                    for r, c, v in cells:
                        assert v == attention["layers"][layer][head][r][c]

            # Hovering a token shows where it looks: its row, strongest first.
            page.hover('#heatmap .label.row[data-row="2"]')
            assert page.locator("#row").get_attribute("data-row") == "2"
            row = attention["layers"][-1][-1][2]
            top = page.inner_text("#row tr:first-child td:nth-child(2)")
            assert abs(float(top) - max(row)) < 1e-4
            page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
            assert (tmp_path / "explorer.png").stat().st_size > 10_000
            assert errors == []
        finally:
            browser.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [([], "checkpoint=PATH is required"), (["checkpoint=EXPORT", "port=70000"], "port=70000 must be a whole number")],
)
def test_serve_command_mistakes_are_one_line(exported_classifier, tmp_path, args, message):
    import subprocess
    import sys

    args = [a.replace("EXPORT", str(exported_classifier)) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "attnfit.cli.serve", *args], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
