"""First-contact errors: a bad --model, --device or --alpha is one line on stderr, exit code 2.

Every command taking those flags is checked in-process (the errors come before any model
loads, so this is quick); a few cases run as real subprocesses, where stray warnings,
progress bars or tracebacks on stderr would show, and where HF_HUB_OFFLINE can be unset.
The API raises the same ``ValueError``s (``models.load``, ``resolve_device``, ``EndogenousReward``).
"""
import importlib.util
import math
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

import endorm_mini
from conftest import make_gpt2
from endorm_mini import models, zoo
from endorm_mini.cli import main
from endorm_mini.device import resolve_device
from endorm_mini.reward import EndogenousReward

HUB_NAME = "endorm-mini-tests/no-such-model"   # a valid hub id nobody has published

# Each command with the arguments it needs besides the one under test.
COMMANDS = {
    "score": ["score", "--prompt", "What is 6+3?", "--response", "9"],
    "rmbench": ["rmbench", "--mini-n", "1", "--no-progress", "--out", "{tmp}/rmbench"],
    "diagonal": ["diagonal", "--n", "1", "--no-progress", "--out", "{tmp}/diagonal"],
    "ppo": ["ppo", "--steps", "1", "--out", "{tmp}/ppo"],
    "tour": ["tour", "--out", "{tmp}/tour"],
}
MODEL_COMMANDS = ["score", "rmbench", "diagonal", "ppo"]
DEVICE_COMMANDS = ["score", "rmbench", "diagonal", "ppo", "tour"]
ALPHA_COMMANDS = ["score", "rmbench", "diagonal"]
if importlib.util.find_spec("trl"):   # grpo is there only with the scale extra
    COMMANDS["grpo"] = ["grpo", "--steps", "1", "--out", "{tmp}/grpo"]
    MODEL_COMMANDS.append("grpo")
    ALPHA_COMMANDS.append("grpo")


@pytest.fixture
def not_a_model(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("not a model\n")
    return folder


def command(name, tmp_path, *extra):
    return [a.replace("{tmp}", str(tmp_path)) for a in COMMANDS[name]] + list(extra)


def run_in_process(argv, capfd):
    try:
        code = main(argv)
    except SystemExit as exit_:      # argparse errors exit from inside parse_args
        code = exit_.code
    return code, capfd.readouterr().err


def assert_one_line(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, f"expected one line on stderr, got:\n{err}"
    for needle in needles:
        assert needle in err, err


def bad_devices():
    devices = ["gpu"]                                   # no such device type at all
    if not torch.cuda.is_available():
        devices.append("cuda")
    else:
        devices.append(f"cuda:{torch.cuda.device_count()}")
    if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        devices.append("mps")
    return devices


# ---------------------------------------------------------------- every command, in-process
@pytest.mark.parametrize("name", MODEL_COMMANDS)
def test_hub_name_offline(name, tmp_path, capfd):
    code, err = run_in_process(command(name, tmp_path, "--model", HUB_NAME), capfd)
    assert_one_line(code, err, repr(HUB_NAME), "endorm-mini zoo list")


@pytest.mark.parametrize("name", MODEL_COMMANDS)
def test_folder_that_is_not_a_model(name, tmp_path, not_a_model, capfd):
    code, err = run_in_process(command(name, tmp_path, "--model", str(not_a_model)), capfd)
    assert_one_line(code, err, "not a model", "config.json", "weights")


@pytest.mark.parametrize("name", MODEL_COMMANDS)
@pytest.mark.parametrize("folder", ["./no-such-folder", "no-such-folder/", "/no/such/folder", "a/b/c"])
def test_folder_that_does_not_exist(name, folder, tmp_path, capfd):
    code, err = run_in_process(command(name, tmp_path, "--model", folder), capfd)
    assert_one_line(code, err, repr(folder), "does not exist")


@pytest.mark.parametrize("name", DEVICE_COMMANDS)
@pytest.mark.parametrize("device", bad_devices())
def test_device_this_machine_lacks(name, device, tmp_path, capfd):
    code, err = run_in_process(command(name, tmp_path, "--device", device), capfd)
    assert_one_line(code, err, repr(device), "devices here: auto, cpu")


@pytest.mark.parametrize("name", ALPHA_COMMANDS)
@pytest.mark.parametrize("alpha", ["nan", "inf", "-inf", "0", "-1", "abc"])
def test_alpha_not_a_finite_positive_number(name, alpha, tmp_path, capfd):
    code, err = run_in_process(command(name, tmp_path, f"--alpha={alpha}"), capfd)   # = lets "-inf" through
    assert_one_line(code, err, "--alpha", repr(alpha))
    assert "model" not in err                          # no longer blamed on the model's logits


# ---------------------------------------------------------------- the API raises the same errors
def test_api_raises_value_errors(tmp_path, not_a_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="endorm-mini zoo list"):
        models.load(HUB_NAME)
    with pytest.raises(ValueError, match="has no config.json and no model weights"):
        models.load(str(not_a_model))
    with pytest.raises(ValueError, match="does not exist"):
        models.load(str(tmp_path / "missing") + "/")
    for device in bad_devices():
        with pytest.raises(ValueError, match="devices here: auto, cpu"):
            resolve_device(device)
    with pytest.raises(ValueError, match="devices here"):
        models.load("tiny-domains", device=bad_devices()[-1])      # before any loading
    assert resolve_device("cpu") == torch.device("cpu")
    model = make_gpt2(tiny_tokenizer)
    for alpha in (math.nan, math.inf, 0.0, -1.0):
        with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
            EndogenousReward(model, tiny_tokenizer, alpha=alpha, device="cpu")


def test_a_saved_model_without_its_tokenizer_is_named(tmp_path, tiny_tokenizer):
    make_gpt2(tiny_tokenizer).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no tokenizer files"):
        models.load(str(tmp_path))


# ---------------------------------------------------------------- real processes, real environment
def run_cli(args, offline_env: bool, **env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    if offline_env:
        env["HF_HUB_OFFLINE"] = "1"
    env.update(env_extra)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "endorm_mini.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120)
    return done.returncode, done.stdout, done.stderr, time.perf_counter() - start


@pytest.mark.parametrize("offline_env", [True, False], ids=["HF_HUB_OFFLINE=1", "HF_HUB_OFFLINE-unset"])
def test_hub_name_fails_fast_with_or_without_offline_env(offline_env):
    # No network here (nor in CI): the hub must count as unreachable within seconds, not
    # after transformers' minute of retries. The retries sleep, so they add wall time that a
    # loaded machine does not: compared with a local-folder mistake timed in the same test.
    code, _, err, seconds = run_cli(["score", "--model", HUB_NAME, "--prompt", "x", "--response", "y"], offline_env)
    assert_one_line(code, err, repr(HUB_NAME), "endorm-mini zoo list")
    *_, local = run_cli(["score", "--model", "./no-such-folder", "--prompt", "x",
                         "--response", "y"], offline_env)
    assert seconds < 1.5 * local + 15, f"{seconds:.1f} s against {local:.1f} s for a local folder"


@pytest.mark.parametrize("args, needles", [
    (["score", "--model", "./no-such-folder"], ["does not exist"]),
    (["score", "--device", bad_devices()[-1]], ["devices here"]),
    (["score", "--alpha", "nan"], ["--alpha", "finite number > 0"]),
])
def test_one_line_in_a_real_process(args, needles):
    code, _, err, _ = run_cli(args + ["--prompt", "x", "--response", "y"], offline_env=False)
    assert_one_line(code, err, *needles)


def test_a_cached_hub_model_loads_offline_without_the_env(tmp_path):
    """The cache is tried before the hub is given up: a cached model scores with no network."""
    snapshot = tmp_path / "hub" / "models--endorm-mini-tests--cached" / "snapshots" / ("0" * 40)
    shutil.copytree(zoo.ZOO_DIR / "tiny-domains", snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    code, out, err, seconds = run_cli(
        ["score", "--model", "endorm-mini-tests/cached", "--prompt", "What is 6+3?", "--response", "9"],
        offline_env=False, HF_HUB_CACHE=str(tmp_path / "hub"))
    assert code == 0, err
    assert "total Σ r̂" in out and "Traceback" not in err
    # no minute of hub retries first (they sleep): against the same model from its folder
    *_, local = run_cli(["score", "--model", str(snapshot), "--prompt", "What is 6+3?",
                         "--response", "9"], offline_env=False, HF_HUB_CACHE=str(tmp_path / "hub"))
    assert seconds < 1.5 * local + 15, f"{seconds:.1f} s against {local:.1f} s from the folder"


def test_hub_probe_gives_up_on_silence_and_sees_an_answer(monkeypatch):
    """The reachability probe: False within its timeout when nothing answers, True on any answer."""
    import http.server
    import socket
    import threading

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)   # conftest's offline mode blocks the session

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)                                    # connects, never answers
    start = time.perf_counter()
    assert not models._hub_reachable(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)
    assert time.perf_counter() - start < 5
    silent.close()
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # answers 501
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert models._hub_reachable(f"http://127.0.0.1:{server.server_port}", timeout=5)
    finally:
        server.shutdown()


# ---------------------------------------------------------------- data files, α, a model unfit
ROOT = str(Path(endorm_mini.__file__).resolve().parents[1])


def run_here(*args):
    """``endorm-mini ARGS`` in a fresh process running this checkout's code."""
    env = {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "endorm_mini.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300)
    return done.returncode, done.stdout, done.stderr


GOOD = (b'{"id": 1, "domain": "chat", "prompt": "1+1", "answer": "2", "chosen": ["2", "2", "2"], '
        b'"rejected": ["3", "3", "3"]}\n')   # a valid RM-Bench item, and a valid grpo row
BAD_FILES = {  # name: (bytes, the line the error must name, what it must say)
    "latin1.jsonl": (GOOD + b'{"id": 2, "prompt": "caf\xe9"}\n', 2, "not UTF-8"),
    "broken.jsonl": (GOOD + b'\n{"id": 2, "prompt": \n', 3, "malformed JSON"),
    "broken.json": (b'[\n  {"id": 1},\n  {"id": 2,,}\n]\n', 3, "malformed JSON"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_rmbench_data_errors_name_the_file_and_line(tmp_path, name):
    data, line, what = BAD_FILES[name]
    (tmp_path / name).write_bytes(data)
    code, _, err = run_here("rmbench", "--data", str(tmp_path / name), "--out",
                            str(tmp_path / "out"))
    assert_one_line(code, err, f"{tmp_path / name}, line {line}", what)


@pytest.mark.skipif(not importlib.util.find_spec("trl"), reason="grpo needs the scale extra")
@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_grpo_dataset_errors_name_the_file_and_line(tmp_path, name):
    data, line, what = BAD_FILES[name]
    (tmp_path / name).write_bytes(data)
    code, _, err = run_here("grpo", "--dataset", str(tmp_path / name), "--steps", "1", "--out",
                            str(tmp_path / "out"))
    assert_one_line(code, err, f"{tmp_path / name}, line {line}", what)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("alpha, why", [("1e30", "above 1000"), ("1e-5", "below 0.001")])
def test_alpha_out_of_range_warns_once_in_one_line_with_the_reason(alpha, why):
    code, out, err = run_here("score", "--prompt", "What is 6+3?", "--response", "9",
                              "--response", "10", "--alpha", alpha)
    assert code == 0 and "prefers" in out
    assert err.splitlines() == [err.strip()] and err.startswith("endorm-mini score: warning: α")
    assert why in err and "π̂" in err


def test_alpha_range_in_the_library():
    from endorm_mini.alpha_range import AlphaWarning
    from endorm_mini.ppo_config import PPOConfig
    from endorm_mini.scale.grpo_config import GRPORun

    tok = zoo.char_tokenizer()
    model = make_gpt2(tok)
    for make in (lambda a: EndogenousReward(model, tok, alpha=a, device="cpu"),
                 lambda a: PPOConfig(alpha=a), lambda a: GRPORun(alpha=a)):
        for alpha in (1e4, 1e-4):
            with pytest.warns(AlphaWarning, match="α = "):
                make(alpha)
        with warnings.catch_warnings():
            warnings.simplefilter("error", AlphaWarning)
            make(1e-3), make(1e3), make(1.0)          # the ends are in range
    with warnings.catch_warnings():                    # α plays no part in a verifier run
        warnings.simplefilter("error", AlphaWarning)
        PPOConfig(alpha=1e6, reward="verifier"), GRPORun(alpha=1e6, reward="verifier")


def test_ppo_refuses_a_model_that_cannot_express_arithmetic(tmp_path):
    code, out, err = run_here("ppo", "--model", "tiny-domains", "--steps", "1", "--out",
                              str(tmp_path / "ppo"))
    assert_one_line(code, err, "--model tiny-domains", "cannot express arithmetic", "tiny-arith")
    assert "Loading" not in err and not (tmp_path / "ppo").exists()
