"""Output folders are safe (issue 20): a folder records the command that wrote it and another
command refuses it; a second run into a folder in use is refused at once; an --out that is a
file or cannot be written is one line before any work; Ctrl-C says where it stopped and how
to go on, and the rerun says where it resumed. Real subprocesses, two at once where it
matters, on the tiny zoo models.
"""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import endorm_mini
from endorm_mini import runfolder

ROOT = str(Path(endorm_mini.__file__).resolve().parents[1])
ENV = {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "MPLBACKEND": "Agg"}
HAS_TRL = importlib.util.find_spec("trl") is not None


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "endorm_mini.cli", *args]


def run(*args: str, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), capture_output=True, text=True, env=ENV, cwd=cwd,
                          timeout=timeout)


def start(*args: str, cwd=None) -> subprocess.Popen:
    return subprocess.Popen(command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV, cwd=cwd)


def one_line_error(result, *words: str) -> str:
    """The refusal: exit 2, one line on stderr (no traceback, no progress bar), naming words."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def wait_for(predicate, timeout: float = 120, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"exited {process.returncode}: {process.stderr.read()}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def lines_of(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


RMBENCH = ("rmbench", "--model", "tiny-domains", "--no-progress")


@pytest.fixture(scope="module")
def rmbench_folder(tmp_path_factory) -> Path:
    """A finished rmbench run (2 items)."""
    out = tmp_path_factory.mktemp("runs") / "rmbench"
    result = run(*RMBENCH, "--limit", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


# ---------------------------------------------------------------- what wrote a folder
def test_a_run_folder_records_its_command(rmbench_folder):
    record = json.loads((rmbench_folder / runfolder.RECORD).read_text())
    assert record == {"command": "rmbench"}


@pytest.mark.parametrize("other", ["grpo", "ppo", "diagonal", "tour"])
def test_another_command_refuses_the_folder_naming_it_and_its_files(rmbench_folder, other):
    if other == "grpo" and not HAS_TRL:
        pytest.skip("grpo needs the scale extra (trl)")
    before = {p.name: p.read_bytes() for p in rmbench_folder.iterdir() if p.is_file()
              and p.name != runfolder.LOCK}
    line = one_line_error(run(other, "--out", str(rmbench_folder)),
                          str(rmbench_folder), "rmbench", "rewards.jsonl")
    assert f"endorm-mini {other}: error:" in line
    after = {p.name: p.read_bytes() for p in rmbench_folder.iterdir() if p.is_file()
             and p.name != runfolder.LOCK}
    assert after == before   # nothing was written, nothing overwritten


def test_a_folder_from_before_the_record_is_known_by_its_files(tmp_path):
    (tmp_path / "ppo.pt").write_bytes(b"")
    one_line_error(run(*RMBENCH, "--limit", "1", "--out", str(tmp_path)), "ppo", "ppo.pt")


# ---------------------------------------------------------------- one run at a time
def test_a_folder_in_use_is_refused_at_once(tmp_path):
    """The lock held here (as a run holds it): rmbench refuses before loading anything."""
    with runfolder.run_folder(tmp_path / "out", "rmbench"):
        result = run(*RMBENCH, "--limit", "1", "--out", str(tmp_path / "out"))
    one_line_error(result, "in use by another run", f"process {os.getpid()}")
    assert not (tmp_path / "out" / "rewards.jsonl").exists()


def test_two_rmbench_runs_at_once_never_score_an_item_twice(tmp_path):
    """The second starts while the first scores (1200 items): refused, nothing scored twice."""
    out = tmp_path / "out"
    args = (*RMBENCH, "--mini-n", "300", "--out", str(out))
    first = start(*args)
    wait_for(lambda: lines_of(out / "rewards.jsonl") >= 1, process=first)
    second = run(*args)
    code, err = interrupt(first)
    assert code in (0, 130), err
    if code == 130:              # the first was still scoring when the second came
        one_line_error(second, "in use by another run")
    ids = [(r["subset"], r["id"]) for r in map(json.loads, (out / "rewards.jsonl").open())]
    assert len(ids) == len(set(ids)) > 0


def test_two_ppo_runs_at_once_one_runs_one_is_refused(tmp_path):
    out = tmp_path / "ppo"
    args = ("ppo", "--steps", "30", "--eval-samples", "1", "--out", str(out))
    runs = [start(*args), start(*args)]
    for p in runs:
        p.wait(timeout=300)
    codes = sorted(p.returncode for p in runs)
    errors = [p.stderr.read() for p in runs if p.returncode]
    assert codes == [0, 2], errors
    assert "in use by another run" in errors[0] or "already holds a run" in errors[0]
    assert "Traceback" not in errors[0]


# ---------------------------------------------------------------- --out that cannot be written
CASES = {"tour": ("tour",), "rmbench": RMBENCH, "ppo": ("ppo", "--steps", "1"),
         "diagonal": ("diagonal", "--n", "1")}
if HAS_TRL:
    CASES["grpo"] = ("grpo", "--steps", "1")


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_file_as_out_is_one_line(tmp_path, name):
    target = tmp_path / "a-file"
    target.write_text("mine\n")
    one_line_error(run(*CASES[name], "--out", str(target)), str(target), "is a file")
    assert target.read_text() == "mine\n"


def test_a_file_as_start_dir_is_one_line(tmp_path):
    (tmp_path / "a-file").write_text("")
    one_line_error(run("start", "--dir", str(tmp_path / "a-file" / "lessons")), "--dir",
                   "is a file")


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("name", ["tour", "rmbench", "ppo"])
def test_a_read_only_folder_is_one_line_before_any_work(name):
    with tempfile.TemporaryDirectory() as base:   # in /tmp: others may enter (see below)
        os.chmod(base, 0o755)
        folder = Path(base) / "read-only"
        folder.mkdir(mode=0o555)
        cmd = command(*CASES[name], "--out", str(folder / "run"))
        if os.geteuid() == 0:   # root writes anywhere: run it as nobody
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300,
                                cwd=base)
        folder.chmod(0o755)
    one_line_error(result, "permission denied", str(folder / "run"))
    assert "Loading" not in result.stderr and not result.stdout


# ---------------------------------------------------------------- Ctrl-C and resume
INTERRUPTED = re.compile(r"interrupted at (\d+)/(\d+); rerun the same command (with --resume )?"
                         r"to resume$")


def interrupt(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    return process.returncode, err


def resumed_line(process: subprocess.Popen) -> str:
    """The first stdout line of a rerun that says where it resumed (then the run is stopped)."""
    try:
        for line in process.stdout:
            if line.startswith("resuming at"):
                return line
        raise AssertionError(f"no 'resuming at' line: {process.stderr.read()}")
    finally:
        process.kill()
        process.wait()


def test_ctrl_c_in_rmbench_says_where_and_the_rerun_resumes_there(tmp_path):
    out = tmp_path / "out"
    args = (*RMBENCH, "--mini-n", "25", "--out", str(out))
    p = start(*args)
    wait_for(lambda: lines_of(out / "rewards.jsonl") >= 3, process=p)
    code, err = interrupt(p)
    assert code == 130, err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and (m := INTERRUPTED.search(last)), err
    done, total = int(m.group(1)), int(m.group(2))
    assert total == 100 and 3 <= done == lines_of(out / "rewards.jsonl") < total
    assert resumed_line(start(*args)).startswith(f"resuming at {done}/{total}")


def test_ctrl_c_in_ppo_says_where_and_the_rerun_resumes_there(tmp_path):
    out = tmp_path / "ppo"
    args = ("ppo", "--steps", "300", "--eval-samples", "1", "--checkpoint-every", "100",
            "--out", str(out))
    p = start(*args)
    wait_for(lambda: lines_of(out / "log.csv") >= 2, process=p)
    code, err = interrupt(p)
    assert code == 130, err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and (m := INTERRUPTED.search(last)) and m.group(3), err
    step = int(m.group(1))
    assert m.group(2) == "300" and 1 <= step < 300
    assert resumed_line(start(*args, "--resume")).startswith(f"resuming at {step}/300")


@pytest.mark.parametrize("args", [("grade", "lessons", "--csv"), ("grade", "lessons", "--json"),
                                  ("grpo-eval", "--limit", "1", "--out")])
def test_an_output_file_in_a_file_or_a_folder_as_the_file_is_one_line(tmp_path, args):
    if args[0] == "grpo-eval" and not HAS_TRL:
        pytest.skip("grpo-eval needs the scale extra (trl)")
    if args[0] == "grade" and importlib.util.find_spec("nbformat") is None:
        pytest.skip("grade needs nbformat")
    (tmp_path / "a-file").write_text("")
    one_line_error(run(*args, str(tmp_path / "a-file" / "out.x"), cwd=ROOT), "a-file",
                   "is a file")
    one_line_error(run(*args, str(tmp_path), cwd=ROOT), str(tmp_path), "is a folder")


@pytest.mark.skipif(not HAS_TRL, reason="grpo needs the scale extra (trl)")
def test_ctrl_c_in_grpo_says_where_and_the_rerun_resumes_there(tmp_path):
    out = tmp_path / "grpo"
    args = ("grpo", "--steps", "400", "--save-every", "3", "--eval-problems", "10",
            "--out", str(out))
    p = start(*args)
    wait_for(lambda: any(out.glob("checkpoint-*/trainer_state.json")), process=p)
    code, err = interrupt(p)
    assert code == 130, err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and "interrupted at" in last and "--resume" in last, err
    step = int(re.search(r"interrupted at (\d+)/400", last).group(1))
    assert step >= 3 and (out / f"checkpoint-{step}").is_dir()
    assert resumed_line(start(*args, "--resume")).startswith(f"resuming at {step}/400")
