"""configs/zero3_8gpu.yaml rehearsed on a CPU: two processes under DeepSpeed ZeRO-3 (gloo,
DeepSpeed's CPU accelerator; issue 22). The reward's reference, built the way the CLI builds
it, is whole on each process and gives what one process gives on the same completions; a
2-step ``endorm-mini grpo`` finishes, with the reward's own reference and reusing TRL's.

Marked ``two_processes``: they run in CI (about 15–25 s each on a 2-core machine)."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("deepspeed")

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.two_processes

# completions of two prompts, as a trainer hands them: ids of "19", "21", "7", then one cut
PROMPTS = ["12+7", "12+7", "3+4", "3+4"]
TEXTS = ["19", "21", "7", "17"]
ENDED = [True, True, True, False]

SCORE = r"""
import json, sys
import torch
from endorm_mini.scale.grpo import GRPORun, grpo_config, reward_functions, reward_weights
from endorm_mini.scale.grpo_run import RankTally
from endorm_mini.models import resolve
from transformers import AutoTokenizer

out, prompts, texts, ended = sys.argv[1], *map(json.loads, sys.argv[2:5])
run = GRPORun(out=out, prompts_per_step=2, num_generations=2, eval_problems=0)
args = grpo_config(run, reward_weights(run))       # switches transformers' ZeRO-3 mode on
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
tokenizer = AutoTokenizer.from_pretrained(resolve("tiny-arith"))
endogenous = reward_functions(run, tokenizer, RankTally())[0].inner
embedding = endogenous.scorer.model.get_input_embeddings().weight
ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if e else [])
       for t, e in zip(texts, ended)]
chats = [[{"role": "user", "content": p}] for p in prompts]
rewards = endogenous(chats, [[{"role": "assistant", "content": t}] for t in texts], ids)
rank = args.process_index
with open(f"{out}/rank-{rank}.json", "w") as f:
    json.dump({"zero3": is_deepspeed_zero3_enabled(), "world": args.world_size,
               "embedding": list(embedding.shape), "rewards": rewards}, f)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_variant(folder: Path) -> Path:
    """configs/zero3_8gpu.yaml for 2 CPU processes: the three keys its header names changed."""
    text = (ROOT / "configs" / "zero3_8gpu.yaml").read_text()
    for old, new in (("num_processes: 8", "num_processes: 2"), ("use_cpu: false", "use_cpu: true"),
                     ("mixed_precision: bf16", 'mixed_precision: "no"')):
        assert old in text
        text = text.replace(old, new)
    path = folder / "zero3_cpu2.yaml"
    path.write_text(text)
    return path


def launch(config: Path, argv: list[str], timeout: int = 240):
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("ACCELERATE_USE_CPU", None)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
               "--main_process_port", str(free_port()), *argv]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def failure(done) -> str:
    """What a failed launch said: its error lines, then the tail."""
    lines = [l for l in done.stderr.splitlines()
             if any(k in l for k in ("Error", "error:", "Abort", "SIG", "what()", "terminate"))]
    return "\n".join(lines[-20:]) + "\n...\n" + done.stderr[-2000:]


def test_the_reward_under_zero3_is_whole_and_equals_one_process(tmp_path):
    script = tmp_path / "score.py"
    script.write_text(SCORE)
    done = launch(cpu_variant(tmp_path), [str(script), str(tmp_path), json.dumps(PROMPTS),
                                          json.dumps(TEXTS), json.dumps(ENDED)])
    assert done.returncode == 0, failure(done)
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    from endorm_mini import models
    from endorm_mini.scale.reward import EndogenousRewardFunction

    model, tokenizer = models.load("tiny-arith", device="cpu")
    alone = EndogenousRewardFunction(model, tokenizer)
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"]
           + ([tokenizer.eos_token_id] if e else []) for t, e in zip(TEXTS, ENDED)]
    want = alone([[{"role": "user", "content": p}] for p in PROMPTS],
                 [[{"role": "assistant", "content": t}] for t in TEXTS], ids)
    for tally in ranks:
        assert tally["zero3"] and tally["world"] == 2      # ZeRO-3 was on while it loaded
        assert tally["embedding"] == list(model.get_input_embeddings().weight.shape)
        assert tally["rewards"] == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("reuse", [False, True])
def test_two_grpo_steps_finish_under_the_zero3_config(tmp_path, reuse):
    out = tmp_path / "run"
    flags = ["--beta", "0.01", "--reuse-kl-reference"] if reuse else []
    done = launch(cpu_variant(tmp_path), ["-m", "endorm_mini.cli", "grpo", "--steps", "2",
                                          "--eval-problems", "0", "--out", str(out), *flags])
    assert done.returncode == 0, failure(done)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["steps"], summary["processes"]) == (2, 2)
    for rank in (0, 1):
        tally = json.loads((out / "ranks" / f"rank-{rank}.json").read_text())
        assert tally["completions_scored"]["endogenous"] == 2 * 64 // 2
    assert (out / "final" / "model.safetensors").exists()   # gathered from the shards
