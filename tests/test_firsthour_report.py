"""The HTML report: a 6-step chain's DAG fits the page; millisecond noise is not flagged."""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path

import pytest

from flowsh.report import DAG_MAX_W, dag_layout, generate, is_slow
from tests import report_browser as browser
from tests.monitor_helpers import make_run, write_workflow

CHAIN = "name: chain\nsteps:\n" + "".join(
    f"  - {{name: step_number_{i}, run: x}}\n" for i in range(1, 7))


def _report(tmp_path: Path, *, now: float, past: float) -> str:
    wf = write_workflow(tmp_path, CHAIN, "chain.yaml")
    names = [s.name for s in wf.steps]
    history = [make_run(wf, f"h{i}", start=1_700_000_000.0 + i * 86400,
                        steps={n: {"duration": past} for n in names}) for i in range(8)]
    history.reverse()
    run = make_run(wf, "20261125T020000-ab12cd34", start=1_700_000_000.0 + 9 * 86400,
                   steps={n: {"duration": now} for n in names})
    return generate(run, history)


def test_millisecond_noise_is_not_flagged_but_a_real_slowdown_is(tmp_path: Path) -> None:
    assert not is_slow(0.028, 0.017, 0.017)  # +67 %, 11 ms: noise
    assert not is_slow(0.4, 0.1, 0.12)  # 4x, but 0.3 s: still under the floor
    assert is_slow(2.0, 1.0, 1.1)  # +100 % and a second
    assert not is_slow(100.0, 95.0, 99.0)  # above p95 and 5 s, but only +5 %
    quiet = _report(tmp_path, now=0.028, past=0.017)
    assert 'class="slow"' not in quiet
    assert "+65%" in quiet or "+67%" in quiet  # the number is still shown, just not red
    (tmp_path / "loud").mkdir()
    loud = _report(tmp_path / "loud", now=3.0, past=1.0)
    assert len(re.findall(r'<tr class="slow">', loud)) == 6


def _chain(names: list[str]) -> dict[str, list[str]]:
    return {names[0]: [], **{b: [a] for a, b in pairwise(names)}}


def test_a_six_step_chain_fits_the_page_width() -> None:
    names = [f"s{i}" for i in range(6)]
    layout = dag_layout(names, _chain(names))
    assert layout["width"] <= DAG_MAX_W
    xs = sorted(n["x"] for n in layout["nodes"].values())
    assert all(b - a >= layout["node_w"] + 30 for a, b in pairwise(xs))
    long = [f"s{i}" for i in range(30)]
    wide = dag_layout(long, _chain(long))
    assert wide["node_w"] == 130 and wide["width"] > DAG_MAX_W  # scrolls in its box instead


MEASURE = """
<script>
addEventListener("load", () => {
  const box = document.getElementById("dag").parentElement;
  const svg = document.getElementById("dag").getBoundingClientRect();
  const out = document.createElement("pre");
  out.id = "measure";
  out.textContent = JSON.stringify({
    pageScroll: document.documentElement.scrollWidth, viewport: innerWidth,
    boxScroll: box.scrollWidth, boxClient: box.clientWidth, svgRight: svg.right,
    boxRight: box.getBoundingClientRect().right});
  document.body.appendChild(out);
});
</script>
"""


@pytest.mark.skipif(browser.CHROMIUM is None, reason=browser.SKIP_REASON)
def test_the_dag_does_not_overflow_in_chromium(tmp_path: Path) -> None:
    import json

    html = _report(tmp_path, now=0.028, past=0.017)
    page = tmp_path / "report.html"
    page.write_text(html.replace("</body>", MEASURE + "</body>"))
    res = browser._run("--dump-dom", "--window-size=1280,1600", "--virtual-time-budget=2000",
                       page.resolve().as_uri())
    m = re.search(r'<pre id="measure">(.*?)</pre>', res.stdout, re.S)
    assert m, res.stdout[-2000:] + res.stderr[-2000:]
    got = json.loads(m.group(1).replace("&quot;", '"'))
    assert got["viewport"] == 1280, got
    assert got["pageScroll"] <= got["viewport"], got  # the page never scrolls sideways
    assert got["boxScroll"] <= got["boxClient"], got  # the whole graph is in view
    assert got["svgRight"] <= got["boxRight"] + 0.5, got
    # Every node's (shortened) name is in the DOM.
    assert len(re.findall(r'<g class="dag-node ', res.stdout)) == 6
    assert res.stdout.count("step_numbe") >= 6
