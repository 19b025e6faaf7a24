"""Lesson 04's reward explorer, used as a learner uses it: in JupyterLab, in a real browser.

JupyterLab runs on 127.0.0.1 (a free port, token auth) in a temporary copy of the solved
lesson 04; headless Chromium opens it, runs every cell, then works the explorer: moves α,
types a response, switches the prompt, and checks after each step that the rendered
tokens, the totals and the response boxes changed as they should; switches the prompt with
the arrow keys on its dropdown (JupyterLab must not move to another cell); clicks a token
(its numbers show, its table row is marked). A second test opens the stored solution
without running it, trusted and untrusted, and finds the explorer's static copy headed as a
snapshot and no widget error; a third opens the stored lessons 01, 06 and 09 trusted, with
their kernels, and finds their loading bars as finished text lines, no frozen ``0/N`` bar and
no widget error. The last needs no JupyterLab: ``jupyter nbconvert --to html`` of the stored
lesson 04, opened offline, shows the static copy, and its tokens answer hover, Tab and
click, and its table sorts by r̂.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them when run as
root) and selenium (the ``dev`` extra). Without them the test is skipped, except under
``CI=true``, where it fails. ``ENDORM_MINI_SCREENSHOTS=DIR`` saves the explorer at α = 0.5
and α = 2 as ``DIR/explorer-alpha-0.5.png`` and ``DIR/explorer-alpha-2.png``, and the stored
view, not run, as ``DIR/explorer-stored.png``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from nbformat.sign import NotebookNotary

ROOT = Path(__file__).resolve().parents[1]
LESSON = "04_endogenous_reward.ipynb"                # trusted in the server (signed)
UNTRUSTED = "untrusted-" + LESSON                     # the same file, not signed
# lessons whose stored outputs held transformers' "Loading weights" bar as a widget (signed)
BARS = ["01_generation_as_mdp.ipynb", "06_rmbench_rebuilt.ipynb",
        "09_math_self_improvement.ipynb"]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1400",
         # offline: only JupyterLab on 127.0.0.1 answers (a CDN script cannot rescue a view)
         "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]
WAIT_S = 90          # the longest wait for one step
RUN_ALL_S = 300      # running the whole lesson (with its real-model section: ~2 min on 2 cores)
LAB_SETTINGS = {
    # every cell attached to the page, so the explorer is in the DOM wherever it scrolls
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    # no news or update checks (there is no network) and no toast asking about them
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}


def _need(what: str, ok: bool):
    if ok:
        return
    reason = f"{what} is missing (apt-get install chromium chromium-driver; pip install selenium)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 over a copy of lesson 04: (url, token)."""
    _need("chromium", Path(CHROMIUM).exists())
    _need("chromedriver", Path(DRIVER).exists())
    _need("selenium", importlib.util.find_spec("selenium") is not None)
    work = tmp_path / "work"
    work.mkdir()
    # A trust database of its own: LESSON and BARS signed, as a notebook its user ran and
    # saved is (its outputs render as stored, widgets included); UNTRUSTED not, as a fresh
    # clone. Trust goes by content, so the untrusted copy differs in one unused metadata entry.
    data = tmp_path / "data"
    data.mkdir()
    for name in BARS:
        shutil.copy(ROOT / "solutions" / name, work / name)
        NotebookNotary(data_dir=str(data)).sign(nbformat.read(work / name, as_version=4))
    shutil.copy(ROOT / "solutions" / LESSON, work / LESSON)
    nb = nbformat.read(work / LESSON, as_version=4)
    NotebookNotary(data_dir=str(data)).sign(nb)
    nb.metadata["untrusted_copy"] = True
    nbformat.write(nb, work / UNTRUSTED)
    settings = tmp_path / "settings"
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    port = _free_port()
    token = secrets.token_hex(16)
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTER_DATA_DIR=str(data),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
           "--LabApp.expose_app_in_browser=True", "--LabApp.extension_manager=readonly",
           "--allow-root"]
    log = open(tmp_path / "lab.log", "w")
    server = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text())
                time.sleep(0.2)         # polling a socket: nothing to wait on instead
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture
def browser(tmp_path):
    _need("chromium", Path(CHROMIUM).exists())
    _need("chromedriver", Path(DRIVER).exists())
    _need("selenium", importlib.util.find_spec("selenium") is not None)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'chromium'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


# ---------------------------------------------------------------- reading the page
NOTEBOOK_JS = "const nb = window.jupyterapp.shell.currentWidget;"
ALL_RAN_JS = NOTEBOOK_JS + """
const cells = nb.content.widgets.filter(c => c.model.type === 'code');
return nb.sessionContext.session?.kernel?.status === 'idle'
    && cells.every(c => c.model.executionCount !== null);"""
ERRORS_JS = NOTEBOOK_JS + """
return nb.content.widgets.filter(c => c.model.type === 'code').flatMap(
    c => c.model.outputs.toJSON().filter(o => o.output_type === 'error').map(o => o.ename));"""


def _explorer(driver):
    from selenium.webdriver.common.by import By
    boxes = driver.find_elements(By.XPATH, "//div[contains(@class,'widget-vbox')]"
                                           "[.//div[contains(@class,'endorm-explorer')]]")
    return boxes[0] if len(boxes) == 1 else None


# One script, so every field comes from the same moment (the view redraws as a whole).
STATE_JS = """
const boxes = [...document.querySelectorAll('div.widget-vbox')]
    .filter(b => b.querySelector('.endorm-explorer'));
if (boxes.length !== 1) return null;
const box = boxes[0];
const num = t => parseFloat(t.replace('\u2212', '-'));
const cols = [...box.querySelectorAll('.endorm-response')];
const verdict = box.querySelector('.endorm-verdict');
return {
  prompt: box.querySelector('select').value,
  boxes: [...box.querySelectorAll('.widget-text input')].map(i => i.value),
  tokens: cols.map(c => [...c.querySelectorAll('.endorm-token')].map(t => t.textContent).join('')),
  totals: cols.map(c => num(c.querySelector('.endorm-total').textContent)),
  difference: verdict ? num(verdict.querySelector('.endorm-difference').textContent) : null,
  verdict: verdict ? verdict.textContent : '',
  head: box.querySelector('.endorm-explorer > div').textContent.replace(/\u00a0/g, ' '),
  readout: box.querySelector('.widget-readout').textContent.trim(),
};"""


def _state(driver) -> dict | None:
    """What the explorer shows now: the boxes, α, each response's tokens and total."""
    return driver.execute_script(STATE_JS)


def _wait_for(driver, what: str, test):
    """Wait until ``test(state)`` holds; on time-out say what was expected and what shows."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(d):
        state = _state(d)
        return state if state and test(state) else False

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(ready)
    except TimeoutException:
        pytest.fail(f"the explorer never showed {what}; it shows {_state(driver)}")


def _set_alpha(driver, value: float):
    """Type α into the slider's readout, as a learner can (Enter commits it)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    readout = _explorer(driver).find_element(By.CSS_SELECTOR, ".widget-readout")
    readout.click()
    readout.send_keys(Keys.CONTROL, "a")
    readout.send_keys(f"{value:g}", Keys.ENTER)


def _type(driver, index: int, text: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    box = _explorer(driver).find_elements(By.CSS_SELECTOR, ".widget-text input")[index]
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.BACKSPACE)
    box.send_keys(text)          # one keystroke at a time: the kernel rescores once, debounced


# What a token shows: the details shown under each response's strip, the table rows marked
# (their outline; only rows in the shown order), and the focused token's h.
TOKEN_JS = """
const root = arguments[0];
const shown = e => getComputedStyle(e).display !== 'none' && e.getClientRects().length > 0;
return [...root.querySelectorAll('.endorm-response')].map(r => ({
  details: [...r.querySelectorAll('.endorm-detail')].filter(shown).map(d => d.textContent),
  hint: shown(r.querySelector('.endorm-hint')),
  marked: [...r.querySelectorAll('tr[data-h]')].filter(
      t => shown(t) && getComputedStyle(t).outlineStyle === 'solid').map(t => +t.dataset.h),
  order: [...r.querySelectorAll('tr[data-h]')].filter(shown).map(t => +t.dataset.h),
  rewards: [...r.querySelectorAll('.endorm-token')].map(t => +t.dataset.reward),
  focused: r.contains(document.activeElement) ? +document.activeElement.dataset.h : null,
}));"""


def _work_tokens(driver, root):
    """Hover, click, Tab and the sort box on response B's tokens inside ``root``: each shows
    the token's numbers under the strip and marks its row; the sort box orders rows by r̂."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    tokens = root.find_elements("css selector", ".endorm-response")[1].find_elements(
        "css selector", ".endorm-token")
    assert len(tokens) >= 3
    before = driver.execute_script(TOKEN_JS, root)[1]
    assert before["hint"] and before["details"] == [] and before["marked"] == []
    away = root.find_element("css selector", ".endorm-telescoping")
    ActionChains(driver).move_to_element(tokens[2]).perform()                  # hover
    hovered = driver.execute_script(TOKEN_JS, root)[1]
    assert hovered["marked"] == [3] and len(hovered["details"]) == 1 and not hovered["hint"]
    assert hovered["details"][0].startswith("h = 3, token")
    for name in ("log π̂ =", "V(s3) =", "V(s4) =", "r̂ =", "Σ r̂ so far ="):
        assert name in hovered["details"][0], hovered
    ActionChains(driver).move_to_element(tokens[1]).click().move_to_element(away).perform()
    clicked = driver.execute_script(TOKEN_JS, root)[1]                         # click: focus
    assert clicked["focused"] == 2 and clicked["marked"] == [2], clicked
    assert clicked["details"][0].startswith("h = 2, token")
    ActionChains(driver).send_keys(Keys.TAB).perform()                         # keyboard
    tabbed = driver.execute_script(TOKEN_JS, root)[1]
    assert tabbed["focused"] == 3 and tabbed["marked"] == [3], tabbed
    assert tabbed["order"] == list(range(1, len(tokens) + 1))                 # every row, by h
    root.find_elements("css selector", ".endorm-sort")[1].click()
    by_reward = driver.execute_script(TOKEN_JS, root)[1]
    assert by_reward["order"] == sorted(range(1, len(tokens) + 1),
                                        key=lambda h: -by_reward["rewards"][h - 1])
    root.find_elements("css selector", ".endorm-sort")[1].click()


def _press_on_dropdown(driver, key):
    """Focus the prompt's dropdown (as Tab or a click would) and press ``key`` on it."""
    from selenium.webdriver.common.action_chains import ActionChains

    select = _explorer(driver).find_element("css selector", ".widget-dropdown select")
    driver.execute_script("arguments[0].focus();", select)
    assert driver.execute_script("return document.activeElement === arguments[0];", select)
    ActionChains(driver).send_keys(key).perform()


def _screenshot(driver, name: str):
    folder = os.environ.get("ENDORM_MINI_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        # the whole output (its padding keeps the colour bar's labels whole), no text cursor
        area = _explorer(driver).find_element(
            "xpath", "./ancestor::div[contains(@class,'jp-OutputArea-child')][1]")
        driver.execute_script("document.activeElement.blur(); arguments[0].scrollIntoView();",
                              area)
        area.screenshot(str(Path(folder) / name))


# ---------------------------------------------------------------- the test
def test_lesson_04_explorer_in_jupyterlab(lab, browser):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, token = lab
    browser.get(f"{url}/lab/tree/{LESSON}?token={token}")
    WebDriverWait(browser, WAIT_S).until(lambda d: d.execute_script(
        NOTEBOOK_JS + "return !!nb && !!nb.sessionContext && "
        "nb.sessionContext.session?.kernel?.status === 'idle';"))
    # clear the stored outputs (and execution counts), then run every cell of the lesson
    browser.execute_script("return window.jupyterapp.commands.execute("
                           "'notebook:clear-all-cell-outputs');")
    assert _explorer(browser) is None
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
    WebDriverWait(browser, RUN_ALL_S, poll_frequency=0.2).until(
        lambda d: d.execute_script(ALL_RAN_JS))
    assert browser.execute_script(ERRORS_JS) == []

    france, japan = "What is the capital of France?", "What is the capital of Japan?"
    start = _wait_for(browser, "the France pair at α = 1", lambda s: s["prompt"] == france
                      and s["tokens"] == ["Paris.</s>", "The capital of France is Paris.</s>"])
    assert start["boxes"] == ["Paris.", "The capital of France is Paris."]
    assert start["head"].endswith("α = 1") and "prefers A" in start["verdict"]
    _work_tokens(browser, _explorer(browser))
    assert start["difference"] == pytest.approx(start["totals"][0] - start["totals"][1], abs=2e-3)

    # α: the same tokens, new totals; the concise answer's lead grows with α (lesson 04's claim)
    _set_alpha(browser, 0.5)
    half = _wait_for(browser, "α = 0.5", lambda s: s["head"].endswith("α = 0.5"))
    assert half["tokens"] == start["tokens"] and half["totals"] != start["totals"]
    assert half["readout"] == "0.5"                     # α reads the same on the slider
    _screenshot(browser, "explorer-alpha-0.5.png")
    _set_alpha(browser, 2)
    two = _wait_for(browser, "α = 2", lambda s: s["head"].endswith("α = 2"))
    assert two["tokens"] == start["tokens"]
    assert two["difference"] > half["difference"] + 5
    _screenshot(browser, "explorer-alpha-2.png")

    # type a wrong capital into B: its tokens and total follow, and A is preferred by far
    _type(browser, 1, "Lyon.")
    lyon = _wait_for(browser, "B = 'Lyon.'", lambda s: s["tokens"][1] == "Lyon.</s>")
    assert lyon["boxes"] == ["Paris.", "Lyon."] and lyon["tokens"][0] == "Paris.</s>"
    assert lyon["totals"][0] == pytest.approx(two["totals"][0], abs=1e-3)
    assert lyon["totals"][1] < two["totals"][1] and "prefers A" in lyon["verdict"]

    # another prompt, chosen with ArrowDown on the dropdown (JupyterLab stays on this cell),
    # loads its own responses into the boxes and scores them
    cell_js = NOTEBOOK_JS + "return nb.content.activeCellIndex;"
    cell = browser.execute_script(NOTEBOOK_JS + "return nb.content.widgets.findIndex("
                                  "c => !!c.node.querySelector('.widget-vbox .endorm-explorer'));")
    _press_on_dropdown(browser, Keys.ARROW_DOWN)
    tokyo = _wait_for(browser, "the Japan pair", lambda s: s["prompt"] == japan
                      and s["tokens"] == ["Tokyo.</s>", "Kyoto.</s>"])
    assert browser.execute_script(cell_js) == cell
    assert browser.execute_script("return document.activeElement.tagName") == "SELECT"
    assert tokyo["boxes"] == ["Tokyo.", "Kyoto."] and "prefers A" in tokyo["verdict"]
    assert tokyo["head"].endswith("α = 2") and tokyo["totals"] != lyon["totals"]

    # back to France (ArrowUp): the edited response is still there
    _press_on_dropdown(browser, Keys.ARROW_UP)
    back = _wait_for(browser, "France with the edit", lambda s: s["prompt"] == france
                     and s["tokens"] == ["Paris.</s>", "Lyon.</s>"])
    assert back["boxes"] == ["Paris.", "Lyon."]
    assert back["totals"] == pytest.approx(lyon["totals"], abs=1e-3)
    assert browser.execute_script(cell_js) == cell


# ---------------------------------------------------------------- the stored solution, not run
# What the explorer's cell shows as stored: every output area is read, so a widget error
# anywhere in the notebook (the progress bars' too) is seen.
STORED_JS = NOTEBOOK_JS + """
if (!nb || !nb.content || nb.context.path !== arguments[0]) return null;
const cell = nb.content.widgets.find(c => c.model.type === 'code'
    && c.model.sharedModel.getSource().includes('reward_explorer('));
if (!cell) return null;
const area = cell.node.querySelector('.jp-OutputArea');
const num = t => parseFloat(t.replace('\u2212', '-'));
const shown = [...nb.content.node.querySelectorAll('.jp-OutputArea')].map(a => a.innerText)
    .join('\\n');
return {
  trusted: cell.model.trusted,
  widget: !!area.querySelector('.widget-vbox .endorm-explorer'),
  tokens: [...area.querySelectorAll('.endorm-response')].map(
      c => [...c.querySelectorAll('.endorm-token')].map(t => t.textContent).join('')),
  totals: [...area.querySelectorAll('.endorm-total')].map(t => num(t.textContent)),
  snapshot: !!area.querySelector('.endorm-snapshot'),
  errors: shown.match(/Error displaying widget[^\\n]*/g) || [],
  loading: shown.includes('Loading widget'),
};"""


def _stored_totals() -> list[float]:
    """The two totals of the explorer's first view, as the stored static copy has them."""
    nb = nbformat.read(ROOT / "solutions" / LESSON, as_version=4)
    [html] = [o.data["text/html"] for c in nb.cells if "reward_explorer(" in c.source
              for o in c.outputs if "text/html" in o.get("data", {})]
    return [float(t.replace("\u2212", "-"))
            for t in re.findall(r"class='endorm-total'>([^<]+)<", html)]


def _stored_view(driver, path: str) -> dict:
    """Wait until ``path``'s kernel is idle (JupyterLab restores stored widgets then) and
    its explorer cell shows the explorer, or an error; what it shows then."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def settled(d):
        state = d.execute_script(STORED_JS, path)
        idle = d.execute_script(NOTEBOOK_JS + "return nb?.sessionContext?.session?.kernel"
                                "?.status === 'idle';")
        done = state and (state["errors"] or (len(state["tokens"]) == 2
                                              and not state["loading"]))
        return state if idle and done else False

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(settled)
    except TimeoutException:
        pytest.fail(f"{path}: the stored explorer never showed; it shows "
                    f"{driver.execute_script(STORED_JS, path)}")


def test_stored_solution_shows_the_explorer_before_it_is_run(lab, browser):
    """Opened, not run, trusted or not: the explorer's static copy, headed as a snapshot to
    run (a stored widget could not rescore), no widget error; trusted, its tokens answer."""
    url, token = lab
    browser.get(f"{url}/lab/tree/{LESSON}?token={token}")
    trusted = _stored_view(browser, LESSON)
    _screenshot(browser, "explorer-stored.png")
    _work_tokens(browser, browser.find_element(
        "xpath", "//div[contains(@class,'endorm-snapshot')]/following-sibling::div"
                 "[contains(@class,'endorm-explorer')][1]"))
    browser.execute_script("return window.jupyterapp.commands.execute('docmanager:open', "
                           "{path: arguments[0]}).then(() => true);", UNTRUSTED)
    untrusted = _stored_view(browser, UNTRUSTED)
    for view, is_trusted in ((trusted, True), (untrusted, False)):
        assert view["trusted"] is is_trusted
        assert view["errors"] == [], view
        assert view["tokens"] == ["Paris.</s>", "The capital of France is Paris.</s>"], view
        assert view["totals"] == pytest.approx(_stored_totals(), abs=1e-3)
        assert view["snapshot"] and not view["widget"], view


# Every output of the current notebook, as shown: widget errors, widgets still loading,
# bars frozen at 0/N (a widget bar's text form), finished bars.
OUTPUTS_JS = NOTEBOOK_JS + """
if (!nb || !nb.content || nb.context.path !== arguments[0]) return null;
const shown = [...nb.content.node.querySelectorAll('.jp-OutputArea')].map(a => a.innerText)
    .join('\\n');
return {
  idle: nb.sessionContext?.session?.kernel?.status === 'idle',
  trusted: nb.content.widgets.every(c => c.model.type !== 'code' || c.model.trusted),
  errors: shown.match(/Error displaying widget[^\\n]*/g) || [],
  loading: shown.includes('Loading widget'),
  frozen: shown.match(/\\|\\s*0\\/\\d+[^\\n]*/g) || [],
  finished: shown.match(/Loading weights: 100%[^\\n]*/g) || [],
};"""


def test_stored_loading_bars_show_finished_when_trusted(lab, browser):
    """Lessons 01, 06 and 09 stored transformers' "Loading weights" bar as a widget without
    its state: trusted, "Error displaying widget: model not found"; untrusted, a frozen
    "0/20". Opened trusted, with their kernels started: a finished text line, no widget."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    url, token = lab
    browser.get(f"{url}/lab/tree/{BARS[0]}?token={token}")
    for name in BARS:
        if name != BARS[0]:
            browser.execute_script("return window.jupyterapp.commands.execute("
                                   "'docmanager:open', {path: arguments[0]}).then(() => true);",
                                   name)

        def settled(d):         # JupyterLab restores stored widgets once the kernel is idle
            view = d.execute_script(OUTPUTS_JS, name)
            return view if view and view["idle"] and not view["loading"] else False

        try:
            view = WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(settled)
        except TimeoutException:
            pytest.fail(f"{name} never settled: {browser.execute_script(OUTPUTS_JS, name)}")
        assert view["trusted"] and view["errors"] == [] and view["frozen"] == [], (name, view)
        assert view["finished"], (name, view)


def test_html_export_shows_the_static_explorer_offline(tmp_path, browser):
    """`jupyter nbconvert --to html` (what nbviewer and course sites render) of the stored
    lesson 04, opened with no network: the explorer's static copy, headed as a snapshot,
    its tokens answering hover, click and Tab, its tables sorting by r̂."""
    out = tmp_path / "html"
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html",
                    "--output-dir", str(out), str(ROOT / "solutions" / LESSON)],
                   check=True, capture_output=True, timeout=120)
    browser.get((out / LESSON.replace(".ipynb", ".html")).as_uri())
    root = browser.find_element(
        "xpath", "//div[contains(@class,'endorm-snapshot')]/following-sibling::div"
                 "[contains(@class,'endorm-explorer')][1]")
    assert root.is_displayed()
    texts = browser.execute_script(
        "return [...arguments[0].querySelectorAll('.endorm-response')].map(c => [...c."
        "querySelectorAll('.endorm-token')].map(t => t.textContent).join(''));", root)
    assert texts == ["Paris.</s>", "The capital of France is Paris.</s>"]
    totals = [float(t.text.replace("\u2212", "-"))
              for t in root.find_elements("css selector", ".endorm-total")]
    assert totals == pytest.approx(_stored_totals(), abs=1e-3)
    _work_tokens(browser, root)
