"""Every page of the Snakemake report in headless Chromium, at 1366 x 768 and 1920 x 1080.

The report of the extended tiny run (a CNN, a descriptors experiment and a prediction: a page of each
kind), made as `make report` makes it (profiles/workstation, which gives the report stylesheet). For
each page (the start page, the statistics, each category's list, each result) a screenshot is taken
and checked: the content panel can be scrolled to its top-left corner (Snakemake's centring hid the
top of anything taller than the window), nothing is wider than the window but the content panel's own
scrolling, every image has loaded, every table page has its frame. Set LOKIML_REPORT_SCREENSHOTS to a
folder to keep the screenshots and look at them.

Needs Debian's chromium and chromium-driver (.ci/run installs them); skipped without, except under CI.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from extended_tiny import CONFIG, extended_tiny_run
from project_copy import local_env
from webdriver import Browser, find_driver

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

SIZES = [(1366, 768), (1920, 1080)]


@pytest.fixture(scope="module")
def report(project_root, tmp_path_factory):
    wd = extended_tiny_run(project_root, tmp_path_factory)
    cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/workstation", "--cores", "2",
           *CONFIG, "--report", "report.html"]
    res = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, timeout=900, env=local_env())
    assert res.returncode == 0, res.stderr[-4000:]
    return wd / "report.html"


@pytest.fixture(scope="module")
def open_browser(tmp_path_factory):
    """Start a headless Chromium whose page is width x height pixels; all are closed at the end."""
    driver, chromium = find_driver()
    if not (driver and chromium):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but chromium/chromedriver are missing (.ci/run installs them)")
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    started = []

    def start(width=1366, height=768):
        b = Browser(driver, chromium, str(tmp_path_factory.mktemp("chrome")), width, height)
        started.append(b)
        return b

    yield start
    for b in started:
        b.close()


def _embedded(html: str, name: str):
    m = re.search(rf'<script id="{name}">\s*var {name} = (.*?);\s*</script>', html, re.S)
    assert m, name
    return json.loads(m.group(1))


PANEL = "document.querySelector('#app > div > div.grow')"

CHECK = f"""
const panel = {PANEL};
if (!panel) return {{error: 'no content panel'}};
panel.scrollTop = 0; panel.scrollLeft = 0;
const child = panel.firstElementChild;
const p = panel.getBoundingClientRect();
const c = child ? child.getBoundingClientRect() : p;
const imgs = Array.from(panel.querySelectorAll('img'));
const frames = Array.from(panel.querySelectorAll('iframe'));
const nav = document.querySelector('#app > div > div:first-child');
return {{
  top_hidden: Math.round(p.top - c.top), left_hidden: Math.round(p.left - c.left),
  page_wider: document.documentElement.scrollWidth - window.innerWidth,
  page_taller: document.documentElement.scrollHeight - window.innerHeight,
  images: imgs.map(i => [i.complete, i.naturalWidth]),
  frames: frames.map(f => [f.getBoundingClientRect().width, f.getBoundingClientRect().height]),
  panel_height: p.height, nav_width: nav ? nav.getBoundingClientRect().width : 0,
  text: panel.innerText.slice(0, 200),
}};
"""


def _settle(b):
    b.run("return new Promise(r => setTimeout(r, 0))")
    b.run("""return new Promise(r => {
        const imgs = Array.from(document.querySelectorAll('img'));
        let n = 0; const done = () => { if (++n >= imgs.length) r(true); };
        if (!imgs.length) return r(true);
        imgs.forEach(i => i.complete ? done() : (i.onload = i.onerror = done));
        setTimeout(() => r(false), 5000);
    })""")


def _pages(results, categories):
    """(name, JavaScript that shows the page) for every page of the report."""
    pages = [("start", "app.setView({content: 'rulegraph', navbarMode: 'menu'})"),
             ("statistics", "app.setView({content: 'stats', navbarMode: 'menu'})")]
    for cat in categories:
        pages.append((f"category {cat}", f"app.showCategory({json.dumps(cat)})"))
    category_of = {p: (cat, sub) for cat, subs in categories.items() for sub, paths in subs.items() for p in paths}
    for path, entry in results.items():
        mime = entry["mime_type"]
        if mime.startswith("image/"):
            kind = "img"
        elif mime == "text/html":
            kind = "html"
        else:
            continue  # a download (TSV, text): no page
        cat, sub = category_of[path]
        # as a click on the result's eye button in its category's list shows it
        pages.append((f"result {path}", f"app.setView({{navbarMode: 'subcategory', category: {json.dumps(cat)}, "
                                        f"subcategory: {json.dumps(sub)}, content: '{kind}', "
                                        f"contentPath: results[{json.dumps(path)}].data_uri, "
                                        f"resultPath: {json.dumps(path)}}})"))
    return pages


@pytest.mark.parametrize("width,height", SIZES)
def test_every_page_of_the_report(report, open_browser, width, height, tmp_path):
    html = report.read_text(encoding="utf-8")
    results, categories = _embedded(html, "results"), _embedded(html, "categories")
    shots = os.environ.get("LOKIML_REPORT_SCREENSHOTS")
    out = tmp_path / "shots"
    out.mkdir()
    browser = open_browser(width, height)
    browser.get(report.as_uri())
    assert browser.run("return typeof app !== 'undefined'"), "the report's app did not start"
    assert browser.set_viewport(width, height) == (width, height)
    problems = []
    pages = _pages(results, categories)
    assert len(pages) > 30
    for i, (name, script) in enumerate(pages):
        browser.run(script)
        _settle(browser)
        state = browser.run(CHECK)
        browser.screenshot(out / f"{i:03d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)[:80]}.png")
        if "error" in state:
            problems.append((name, state["error"]))
            continue
        if state["top_hidden"] > 1 or state["left_hidden"] > 1:
            problems.append((name, f"the top-left {state['left_hidden']} x {state['top_hidden']} px can't be "
                                   "scrolled to"))
        if state["page_wider"] > 0 or state["page_taller"] > 0:
            problems.append((name, f"the page overflows the window ({state['page_wider']}, {state['page_taller']})"))
        if any(not ok or w == 0 for ok, w in state["images"]):
            problems.append((name, f"an image did not load: {state['images']}"))
        if name.startswith("result") and results[name.split(" ", 1)[1]]["mime_type"] == "text/html":
            if not state["frames"] or min(min(f) for f in state["frames"]) < 200:
                problems.append((name, f"no table frame: {state['frames']}"))
        if name.startswith("result") and results[name.split(" ", 1)[1]]["mime_type"].startswith("image/"):
            if not state["images"]:
                problems.append((name, "no image"))
    if shots:
        dest = os.path.join(shots, f"{width}x{height}")
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(out, dest)
    assert not problems, problems


def test_menu_lists_the_leaderboard_first_then_data_predictions_and_the_experiments(report, open_browser):
    browser = open_browser()
    browser.get(report.as_uri())
    browser.run("app.setView({navbarMode: 'menu', content: 'rulegraph'})")
    # the menu's own list (the start page's description has lists of its own): the items beside its
    # "Results" heading
    items = browser.run("""const h = Array.from(document.querySelectorAll('#app li'))
                               .find(l => l.textContent.trim() === 'Results');
                           return h ? Array.from(h.parentElement.children).map(l => l.textContent.trim())
                                    : ['no Results heading']""")
    results = items[items.index("Results") + 1:]
    assert results[:3] == ["1. Leaderboard", "2. Data", "3. Predictions"], items
    assert set(results[3:]) == {"tiny", "tiny_descriptors"}, items


def test_the_start_page_scrolls_to_its_top_without_the_stylesheet(report, open_browser, tmp_path):
    """`snakemake --report` without the profile: the workflow description's own style fixes the start page."""
    wd = report.parent
    res = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", *CONFIG, "--report", "plain.html"],
                         cwd=wd, capture_output=True, text=True, timeout=900, env=local_env())
    assert res.returncode == 0, res.stderr[-3000:]
    browser = open_browser(1366, 500)
    browser.get((wd / "plain.html").as_uri())
    browser.set_viewport(1366, 500)  # lower than the start page
    browser.run("app.setView({content: 'rulegraph', navbarMode: 'menu'})")
    _settle(browser)
    state = browser.run(CHECK)
    assert state["top_hidden"] <= 1 and state["left_hidden"] <= 1, state
