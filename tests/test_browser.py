"""Lesson 04's reward explorer, used as a learner uses it: in JupyterLab, in a real browser.

JupyterLab runs on 127.0.0.1 (a free port, token auth) in a temporary copy of the solved
lesson 04; headless Chromium opens it, runs every cell, then works the explorer: moves α,
types a response, switches the prompt, and checks after each step that the rendered
tokens, the totals and the response boxes changed as they should. A second test opens the
stored solution without running it, trusted and untrusted, and finds the explorer's first
view (from the stored widget state, or the static ``text/html`` copy) and no widget error.

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
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1400"]
WAIT_S = 90          # the longest wait for one step (the whole lesson runs in one of them)
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
    shutil.copy(ROOT / "solutions" / LESSON, work / LESSON)
    # A trust database of its own: LESSON signed, as a notebook its user ran and saved is
    # (its outputs render as stored, widgets included); UNTRUSTED not, as a fresh clone.
    # Trust goes by content, so the untrusted copy differs in one unused metadata entry.
    data = tmp_path / "data"
    data.mkdir()
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
    from selenium.webdriver.support.ui import Select, WebDriverWait

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
    WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(
        lambda d: d.execute_script(ALL_RAN_JS))
    assert browser.execute_script(ERRORS_JS) == []

    france, japan = "What is the capital of France?", "What is the capital of Japan?"
    start = _wait_for(browser, "the France pair at α = 1", lambda s: s["prompt"] == france
                      and s["tokens"] == ["Paris.</s>", "The capital of France is Paris.</s>"])
    assert start["boxes"] == ["Paris.", "The capital of France is Paris."]
    assert start["head"].endswith("α = 1") and "prefers A" in start["verdict"]
    assert start["difference"] == pytest.approx(start["totals"][0] - start["totals"][1], abs=2e-3)

    # α: the same tokens, new totals; the concise answer's lead grows with α (lesson 04's claim)
    _set_alpha(browser, 0.5)
    half = _wait_for(browser, "α = 0.5", lambda s: s["head"].endswith("α = 0.5"))
    assert half["tokens"] == start["tokens"] and half["totals"] != start["totals"]
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

    # another prompt loads its own responses into the boxes and scores them
    Select(_explorer(browser).find_element("css selector", "select")).select_by_value(japan)
    tokyo = _wait_for(browser, "the Japan pair", lambda s: s["prompt"] == japan
                      and s["tokens"] == ["Tokyo.</s>", "Kyoto.</s>"])
    assert tokyo["boxes"] == ["Tokyo.", "Kyoto."] and "prefers A" in tokyo["verdict"]
    assert tokyo["head"].endswith("α = 2") and tokyo["totals"] != lyon["totals"]

    # back to France: the edited response is still there
    Select(_explorer(browser).find_element("css selector", "select")).select_by_value(france)
    back = _wait_for(browser, "France with the edit", lambda s: s["prompt"] == france
                     and s["tokens"] == ["Paris.</s>", "Lyon.</s>"])
    assert back["boxes"] == ["Paris.", "Lyon."]
    assert back["totals"] == pytest.approx(lyon["totals"], abs=1e-3)


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
    """Opened, not run: a trusted notebook draws the stored widget from its saved state (no
    state: "Error displaying widget: model not found"), an untrusted one the static copy."""
    url, token = lab
    browser.get(f"{url}/lab/tree/{LESSON}?token={token}")
    trusted = _stored_view(browser, LESSON)
    _screenshot(browser, "explorer-stored.png")
    browser.execute_script("return window.jupyterapp.commands.execute('docmanager:open', "
                           "{path: arguments[0]}).then(() => true);", UNTRUSTED)
    untrusted = _stored_view(browser, UNTRUSTED)
    for view, is_trusted in ((trusted, True), (untrusted, False)):
        assert view["trusted"] is is_trusted
        assert view["errors"] == [], view
        assert view["tokens"] == ["Paris.</s>", "The capital of France is Paris.</s>"], view
        assert view["totals"] == pytest.approx(_stored_totals(), abs=1e-3)
    assert trusted["widget"] and not untrusted["widget"]
