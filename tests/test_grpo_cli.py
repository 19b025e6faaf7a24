"""``endorm-mini grpo`` (endorm_mini.scale.grpo on TRL's GRPOTrainer): the endogenous reward of
the frozen tiny-arith model raises sampled accuracy on held-out problems, single-process and
under ``torchrun --nproc_per_node 2`` (ACCELERATE_USE_CPU=1: gloo, both ranks scoring); resume
goes on from a TRL checkpoint to the same numbers as an uninterrupted run; bad flags are one
line, exit 2; without trl the command is absent."""
import csv
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

from endorm_mini import cli  # noqa: E402

# Sampled accuracy (T = 1, 8 samples on each of 100 held-out problems) after 20 steps of 8
# prompts × 8 completions minus before, measured on this 2-core CPU for seeds 0–4:
#   one process:   +0.110, +0.170, +0.186, +0.191, +0.156  (base 0.58–0.625)
#   two processes: +0.176, +0.125, +0.186, +0.179, +0.151  (torchrun, the same settings)
# The test runs seed 0 and asks for half the smallest gain measured. Seed 0 gave the same
# numbers under ATEN_CPU_CAPABILITY=default, avx2 and native (0.625 → 0.735 in one process).
MARGIN = 0.05
STEPS = 20
COMPLETIONS = 8 * 8   # --prompts-per-step × --num-generations (the defaults)
QUIET = ["--save-every", "100"]   # one checkpoint, after the last step
ROOT = Path(__file__).resolve().parents[1]


def run_cli(argv, capsys):
    code = cli.main(argv)
    return code, capsys.readouterr()


def read_json(path):
    with open(path) as f:
        return json.load(f)


def log_steps(folder):
    with open(folder / "log.csv", newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def test_endogenous_reward_raises_sampled_accuracy_single_process(tmp_path, capsys):
    out = tmp_path / "run"
    code, _ = run_cli(["grpo", "--out", str(out), "--steps", str(STEPS), *QUIET], capsys)
    assert code == 0
    summary = read_json(out / "summary.json")
    assert summary["processes"] == 1 and summary["steps"] == STEPS
    assert summary["accuracy"] >= summary["base_accuracy"] + MARGIN, summary
    assert log_steps(out) == list(range(1, STEPS + 1))
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # GRPO trained on the endogenous reward alone: the verifier (weight 0) was only logged
    assert all(float(r["reward"]) == pytest.approx(float(r["endogenous"]), abs=1e-4)
               for r in rows)
    assert {float(r["accuracy"]) for r in rows} != {0.0}
    assert (out / "grpo.png").stat().st_size > 0
    scored = read_json(out / "ranks" / "rank-0.json")["completions_scored"]
    assert scored == {"endogenous": STEPS * COMPLETIONS, "correct": STEPS * COMPLETIONS}
    # final/ is the model that was evaluated: grpo-eval gives the same numbers, both labelled
    code, captured = run_cli(["grpo-eval", "--model", str(out / "final"), "--temperature", "1",
                              "--samples", "8", "--max-new-tokens", "4"], capsys)
    assert code == 0, captured.err
    assert (f"greedy accuracy {summary['greedy_accuracy']:.4f}, sampled accuracy "
            f"{summary['accuracy']:.4f} (T = 1, 8 per problem) on 100 problems") in captured.out


def test_the_accuracy_check_fails_when_the_reward_points_away(tmp_path, capsys):
    """The control: the same run rewarded for wrong answers (endogenous − 10 · verifier)
    loses accuracy, so the test above sees what the reward does, not a drift of the eval.
    Measured, 10 steps, seeds 0–2: 0.625 → 0.238, 0.595 → 0.249, 0.596 → 0.236."""
    out = tmp_path / "away"
    code, _ = run_cli(["grpo", "--out", str(out), "--steps", "10", "--reward", "hybrid",
                       "--verifier-weight", "-10", *QUIET], capsys)
    assert code == 0
    summary = read_json(out / "summary.json")
    assert summary["accuracy"] < summary["base_accuracy"] - MARGIN, summary


def test_grpo_eval_checks_each_answer_with_the_kits_verifier(tmp_path, capsys):
    data = tmp_path / "math.jsonl"   # the second gold answer is wrong: greedy says 18
    data.write_text('{"problem": "3+4", "answer": "7"}\n{"problem": "9+9", "answer": "19"}\n')
    out = tmp_path / "verdicts.jsonl"
    code, captured = run_cli(["grpo-eval", "--model", "tiny-arith", "--dataset", str(data),
                              "--prompt-column", "problem", "--max-new-tokens", "4",
                              "--out", str(out)], capsys)
    assert code == 0 and "greedy accuracy 0.5000, sampled accuracy " in captured.out
    assert "(T = 1, 4 per problem) on 2 problems" in captured.out
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    greedy = [(v["response"], v["correct"]) for v in verdicts if v["decoding"] == "greedy"]
    assert greedy == [("7", True), ("18", False)]
    assert sum(v["decoding"] == "sampled" for v in verdicts) == 2 * 4
    code, captured = run_cli(["grpo-eval", "--model", "tiny-arith", "--dataset", str(data),
                              "--prompt-column", "problem", "--max-new-tokens", "4",
                              "--greedy-only"], capsys)
    assert code == 0 and "greedy accuracy 0.5000 on 2 problems" in captured.out
    assert "sampled" not in captured.out


@pytest.mark.parametrize("before, after, note", [
    ({"greedy": 1.0, "sampled": 0.625}, {"greedy": 0.98, "sampled": 0.835}, True),  # issue 22
    ({"greedy": 1.0, "sampled": 0.625}, {"greedy": 1.0, "sampled": 0.835}, True),
    ({"greedy": 0.5, "sampled": 0.4}, {"greedy": 0.6, "sampled": 0.7}, False),   # more correct
    ({"greedy": 1.0, "sampled": 0.8}, {"greedy": 0.9, "sampled": 0.7}, False),   # worse: no note
    (None, {"greedy": 1.0, "sampled": 0.8}, False),                              # base unknown
])
def test_the_headline_says_more_confident_not_more_correct(before, after, note):
    from endorm_mini.scale.grpo import headline

    line = headline(before, after, samples=8, problems=100)
    assert "held-out accuracy on 100 problems: greedy " in line
    assert "sampled accuracy (T = 1, 8 per problem) " in line
    assert f"→ {after['greedy']:.3f}" in line and f"→ {after['sampled']:.3f}" in line
    assert ("more confident, not more correct" in line) == note


KILL_AT_STEP = r"""
import os, signal, sys
from endorm_mini import cli
from endorm_mini.scale import grpo_run

write_log = grpo_run.write_log


def killed_after(out, rows):   # a SIGKILL once step 3 is logged: checkpoint-2 is on disk
    write_log(out, rows)
    if rows and rows[-1]["step"] >= 3:
        os.kill(os.getpid(), signal.SIGKILL)


grpo_run.write_log = killed_after
sys.exit(cli.main(sys.argv[1:]))
"""


def test_the_base_accuracy_survives_a_kill_and_resume(tmp_path, capsys):
    """Killed (SIGKILL) before its end, the run wrote no summary; the resumed run's summary
    and line still hold the base model's accuracy, measured before the first step."""
    out, script = tmp_path / "run", tmp_path / "kill.py"
    script.write_text(KILL_AT_STEP)
    flags = ["grpo", "--out", str(out), "--steps", "4", "--save-every", "2",
             "--eval-problems", "20", "--eval-samples", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT),
                                                        os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(script), *flags], env=env, capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert done.returncode == -9, done.stderr[-3000:]
    assert not (out / "summary.json").exists() and (out / "checkpoint-2").is_dir()
    base = read_json(out / "base.json")
    assert set(base) == {"greedy", "sampled"}
    code, captured = run_cli([*flags, "--resume"], capsys)
    assert code == 0, captured.err
    summary = read_json(out / "summary.json")
    assert (summary["base_greedy_accuracy"], summary["base_accuracy"]) == \
        (base["greedy"], base["sampled"])
    assert summary["steps"] == 4 and summary["accuracy"] is not None
    assert f"greedy {base['greedy']:.3f} → " in captured.out
    assert f"per problem) {base['sampled']:.3f} → " in captured.out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_under_torchrun_both_score_and_accuracy_rises(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
               "-m", "endorm_mini.cli", "grpo", "--out", str(out), "--steps", str(STEPS),
               *QUIET]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [read_json(out / "ranks" / f"rank-{r}.json") for r in (0, 1)]
    for rank, tally in enumerate(ranks):
        assert tally["rank"] == rank and tally["world_size"] == 2
        # each process scored its own half of every step's completions
        assert tally["completions_scored"]["endogenous"] == STEPS * COMPLETIONS // 2
    summary = read_json(out / "summary.json")
    assert summary["processes"] == 2
    assert summary["accuracy"] >= summary["base_accuracy"] + MARGIN, summary
    assert log_steps(out) == list(range(1, STEPS + 1))
    assert done.stdout.count("sampled accuracy") == 1   # the first process reports, alone


def test_resume_goes_on_from_the_checkpoint_to_the_uninterrupted_numbers(tmp_path, capsys):
    first, straight = tmp_path / "resumed", tmp_path / "straight"
    flags = ["--save-every", "2", "--eval-problems", "0"]
    assert run_cli(["grpo", "--out", str(first), "--steps", "4", *flags], capsys)[0] == 0
    assert run_cli(["grpo", "--out", str(first), "--steps", "6", "--resume", *flags],
                   capsys)[0] == 0
    assert run_cli(["grpo", "--out", str(straight), "--steps", "6", *flags], capsys)[0] == 0
    assert log_steps(first) == [1, 2, 3, 4, 5, 6]
    tally = read_json(first / "ranks" / "rank-0.json")
    assert (tally["first_step"], tally["last_step"]) == (5, 6)
    assert tally["completions_scored"]["endogenous"] == 2 * COMPLETIONS

    def rewards(folder):
        with open(folder / "log.csv", newline="") as f:
            return [float(row["reward"]) for row in csv.DictReader(f)]
    assert rewards(first) == pytest.approx(rewards(straight), rel=1e-5)

    refusals = {
        "already holds a run": ["--steps", "8"],                     # no --resume
        "other settings (alpha: 1.0 → 2.0)": ["--steps", "8", "--alpha", "2", "--resume"],
        "ask for --steps > 6": ["--steps", "6", "--resume"],
    }
    for message, argv in refusals.items():
        code, captured = run_cli(["grpo", "--out", str(first), *flags, *argv], capsys)
        assert code == 2 and message in captured.err
        assert len(captured.err.strip().splitlines()) == 1
    code, captured = run_cli(["grpo", "--out", str(tmp_path / "none"), "--resume"], capsys)
    assert code == 2 and "no checkpoint-N folder" in captured.err


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """A random tiny Qwen2 with a Qwen-style tokenizer and chat template (another vocabulary)."""
    from endorm_mini.course.offline import random_qwen2

    return random_qwen2(tmp_path_factory.mktemp("qwen") / "model")


def test_a_local_data_file_and_a_qwen_model_run_end_to_end(tmp_path, capsys, qwen):
    """The path the 7B recipe takes, at toy size: chat prompts through Qwen's template, a
    system prompt, math answers, completions cut at the length limit (V kept)."""
    data = tmp_path / "math.jsonl"
    data.write_text("".join(f'{{"problem": "What is {a}+{a}?", "gold": "{2 * a}"}}\n'
                            for a in range(8)))
    out = tmp_path / "run"
    code, captured = run_cli(["grpo", "--model", str(qwen), "--dataset", str(data),
                              "--prompt-column", "problem", "--answer-column", "gold",
                              "--system", "Put the answer in \\boxed{}.", "--steps", "2",
                              "--prompts-per-step", "2", "--num-generations", "4",
                              "--max-completion-length", "6", "--out", str(out)], capsys)
    assert code == 0 and "no held-out accuracy" in captured.out
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(float(r["accuracy"]) == 0.0 for r in rows)   # random weights: nothing right
    assert all(float(r["clipped_ratio"]) > 0 for r in rows)  # cut at 6 tokens: V kept
    scored = read_json(out / "ranks" / "rank-0.json")["completions_scored"]
    assert scored == {"endogenous": 2 * 8, "correct": 2 * 8}


@pytest.mark.parametrize("argv, message", [
    (["--reward", "learned"], "invalid choice: 'learned'"),
    (["--steps", "0"], "--steps: must be ≥ 1"),
    (["--num-generations", "1"], "num_generations must be ≥ 2"),
    (["--dataset", "{data}", "--answer-column", "gold"], "--answer-column 'gold' is not a column"),
    (["--dataset", "{data}", "--prompt-column", "question"],
     "--prompt-column 'question' is not a column"),
    (["--ref-model", "{qwen}"], "differs from the policy's"),   # another vocabulary
    (["--reuse-kl-reference", "--beta", "0.01", "--alpha", "0.5"],
     "needs --alpha equal to --temperature"),
    (["--reuse-kl-reference"], "needs --beta > 0"),
    pytest.param(["--vllm"], "--vllm: vllm is not installed", marks=pytest.mark.skipif(
        bool(importlib.util.find_spec("vllm")), reason="vllm is installed")),
    pytest.param(["--report-to", "wandb"], "--report-to wandb: wandb is not installed",
                 marks=pytest.mark.skipif(bool(importlib.util.find_spec("wandb")),
                                          reason="wandb is installed")),
    (["--report-to", "mlflow"], "invalid choice: 'mlflow'"),
    (["--vllm-mode", "server"], "--vllm-mode server needs --vllm"),
    (["--vllm-mode", "remote"], "invalid choice: 'remote'"),
    pytest.param(["--vllm", "--vllm-mode", "server"], "--vllm: vllm is not installed",
                 marks=pytest.mark.skipif(bool(importlib.util.find_spec("vllm")),
                                          reason="vllm is installed")),
    (["--lora-rank", "-1"], "lora_rank must be ≥ 0"),
    (["--trainer", "ppo"], "invalid choice: 'ppo'"),
])
def test_bad_flags_are_one_line_and_exit_2(tmp_path, capsys, argv, message, qwen):
    data = tmp_path / "problems.jsonl"
    data.write_text('{"prompt": "1+1", "answer": "2"}\n{"prompt": "2+2", "answer": "4"}\n')
    argv = [a.replace("{data}", str(data)).replace("{qwen}", str(qwen)) for a in argv]
    try:
        code = cli.main(["grpo", "--out", str(tmp_path / "run"), *argv])
    except SystemExit as stop:   # argparse's refusals
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()   # refused before anything was written


def test_vllm_server_mode_reaches_trls_config_and_a_resume_may_change_it():
    """``--vllm --vllm-mode server``: TRL's client of a ``trl vllm-serve`` at host:port (checked
    without vllm: GRPOConfig only stores them); where it generates changes nothing learnt."""
    from endorm_mini.scale.grpo import GRPORun, grpo_config

    args = cli.build_parser().parse_args(["grpo", "--vllm", "--vllm-mode", "server",
                                          "--vllm-server-host", "gpu-node-0",
                                          "--vllm-server-port", "8001", "--out", "unused"])
    names = ("vllm", "vllm_mode", "vllm_server_host", "vllm_server_port", "out")
    run = GRPORun(**{name: getattr(args, name) for name in names})
    config = grpo_config(run, [1.0, 0.0])
    assert (config.use_vllm, config.vllm_mode, config.vllm_server_host,
            config.vllm_server_port) == (True, "server", "gpu-node-0", 8001)
    colocated = grpo_config(GRPORun(vllm=True, out="unused"), [1.0, 0.0])
    assert (colocated.use_vllm, colocated.vllm_mode) == (True, "colocate")
    assert run.settings() == GRPORun(vllm=True, out="unused").settings()


def test_report_to_reaches_trls_config_and_a_resume_may_change_it():
    from endorm_mini.scale.grpo import GRPORun, grpo_config

    run = GRPORun(out="unused", report_to="tensorboard")
    assert grpo_config(run, [1.0, 0.0]).report_to == ["tensorboard"]
    assert run.settings() == GRPORun(out="unused").settings()   # logging changes nothing learnt


@pytest.mark.parametrize("extra", [[], ["--reuse-kl-reference", "--beta", "0.01"]],
                         ids=["own-reference", "reuse"])
def test_rloo_from_the_command_line(tmp_path, capsys, monkeypatch, extra):
    """``--trainer rloo``: TRL's RLOOTrainer with its own config, the same reward and files;
    a run's trainer is one of the settings a resume must keep."""
    import trl

    from endorm_mini.scale.grpo import GRPORun

    built = []

    class Spy(trl.RLOOTrainer):
        def __init__(self, *args, **kwargs):
            built.append(type(kwargs["args"]).__name__)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(trl, "RLOOTrainer", Spy)
    out = tmp_path / "rloo"
    code, captured = run_cli(["grpo", "--trainer", "rloo", "--out", str(out), "--steps", "2",
                              "--eval-problems", "0", *QUIET, *extra], capsys)
    assert code == 0, captured.err
    assert built == ["RLOOConfig"] and "after 2 RLOO steps" in captured.out
    assert log_steps(out) == [1, 2]
    assert read_json(out / "summary.json")["trainer"] == "rloo"
    scored = read_json(out / "ranks" / "rank-0.json")["completions_scored"]
    assert scored == {"endogenous": 2 * COMPLETIONS, "correct": 2 * COMPLETIONS}
    assert "trainer" not in GRPORun(out="x").settings()   # old run.json files still resume
    assert GRPORun(out="x", trainer="rloo").settings()["trainer"] == "rloo"


def test_without_trl_the_command_says_which_extra_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "trl", None)   # find_spec("trl") is None: not installed
    for argv in (["grpo", "--model", "tiny-arith", "--steps", "2"], ["grpo-eval", "--help"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"endorm-mini {argv[0]}: error: needs the scale extra") and "\n" not in err, err
    parser = cli.build_parser()
    assert "grpo         (needs the scale extra)" in parser.format_help()
    assert parser.parse_args(["ppo"]).command == "ppo"   # the rest of the kit is there


@pytest.mark.parametrize("gold, response, right", [
    ("18", "The answer is \\boxed{18}.", True),     # a bare gold answer is boxed for the check
    ("18", "The answer is \\boxed{19}.", False),
    ("So $x = 2$, and $\\boxed{2}$.", "\\boxed{2}", True),   # a MATH solution as the gold
    ("So $x = 2$, and $\\boxed{2}$.", "\\boxed{3}", False),
])
def test_math_answers_are_checked_against_the_gold_column(gold, response, right):
    from endorm_mini.verifiers import is_right

    assert is_right(False, None, response, gold) is right


@pytest.mark.parametrize("gold, response, right", [
    ("\\frac{14}{3}", "So $\\boxed{\\frac{14}{3}}$.", True),
    ("\\frac{14}{3}", "So $\\boxed{\\frac{14}{5}}$.", False),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "Thus $\\boxed{(3, \\frac{\\pi}{2})}$", True),
])
def test_latex_answers_with_math_verify(gold, response, right):
    """MATH-500's answers are LaTeX: only math-verify (the colab extra) compares them."""
    pytest.importorskip("math_verify")
    from endorm_mini.verifiers import is_right

    assert is_right(False, None, response, gold) is right


def test_the_command_line_imports_no_scale_package_until_grpo_runs():
    """``endorm-mini`` builds its parser (grpo included) without importing trl, accelerate or
    datasets: they are the scale extra's, imported inside the functions that run."""
    code = ("import sys; from endorm_mini import cli; cli.build_parser(); "
            "print(sorted(m for m in ('trl', 'accelerate', 'datasets') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]
