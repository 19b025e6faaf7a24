"""`endorm-mini rmbench` under `torchrun --nproc_per_node 2` (gloo, CPU): the same table.

The real launcher, real processes: each scores its shard into `rewards.rank-R.jsonl`, rank 0
merges. A kill of one rank mid-run is a real SIGKILL from inside it (a spy around the
scoring of one item, in the launched script: nothing in the package knows about it).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import endorm_mini
import endorm_mini.commands.rmbench as bench
from endorm_mini import commands, models
from endorm_mini.bench.rmbench import item_key
from endorm_mini.bench.runner import parse_records
from endorm_mini.cli import main
from endorm_mini.scale import rmbench as dist_rmbench
from endorm_mini.scale.rmbench import ProcessGroup

pytestmark = pytest.mark.skipif(not torch.distributed.is_available()
                                or not torch.distributed.is_gloo_available(),
                                reason="this torch has no gloo backend")

ROOT = Path(endorm_mini.__file__).resolve().parents[1]
MINI = ["rmbench", "--model", "tiny-domains", "--data", "mini", "--mini-n", "4",
        "--device", "cpu", "--no-progress"]
# Launched by torchrun in each process: the real CLI, with a spy that logs every item a
# rank scores and, when asked, SIGKILLs rank KILL_RANK just before its item number KILL_AT.
SCRIPT = """
import os, signal, sys
from endorm_mini import cli, commands
from endorm_mini.bench import runner

real, count = runner._score_one, [0]
def spy(item, *args, **kwargs):
    rank = os.environ["RANK"]
    if rank == os.environ.get("KILL_RANK") and count[0] == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
    count[0] += 1
    with open(os.environ["CALLS"] + "." + rank, "a") as f:
        f.write(item["subset"] + "/" + str(item["id"]) + "\\n")
    return real(item, *args, **kwargs)
runner._score_one = spy
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture(autouse=True)
def only_bench_commands(monkeypatch):
    monkeypatch.setattr(commands, "COMMAND_MODULES", ["endorm_mini.commands.rmbench"])


def torchrun(tmp_path, out, calls, **env_extra):
    script = tmp_path / "launch.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CALLS=str(calls),
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]), **env_extra)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), *MINI, "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def lines(path):
    return path.read_text().splitlines()


def scored(calls, rank):
    path = Path(f"{calls}.{rank}")
    return lines(path) if path.exists() else []


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The 1-process run every 2-process run must equal."""
    out = tmp_path_factory.mktemp("single") / "run"
    assert main(MINI + ["--out", str(out)]) == 0
    return out


def test_two_processes_give_the_single_process_table_byte_for_byte(tmp_path, single):
    out, calls = tmp_path / "two", tmp_path / "calls"
    done = torchrun(tmp_path, out, calls)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "summary.json").read_bytes() == (single / "summary.json").read_bytes()
    assert (out / "rewards.jsonl").read_bytes() == (single / "rewards.jsonl").read_bytes()
    assert (out / "run.json").read_bytes() == (single / "run.json").read_bytes()
    merged = lines(out / "rewards.jsonl")
    shards = [lines(dist_rmbench.shard_path(out, r)) for r in (0, 1)]
    # Both ranks scored, each its items (index modulo 2), and the shards tile the merged file.
    assert shards == [merged[0::2], merged[1::2]]
    for rank in (0, 1):
        keys = [f"{r['subset']}/{r['id']}" for r in map(json.loads, shards[rank])]
        assert scored(calls, rank) == keys
    assert "[rank 1/2] 8 of its 8 items" in done.stdout and "overall" in done.stdout
    assert done.stdout.count("overall") == 1                # only rank 0 prints the table


def test_a_killed_rank_resumes_its_own_shard_and_the_table_is_the_same(tmp_path, single):
    out, calls = tmp_path / "two", tmp_path / "calls"
    killed = torchrun(tmp_path, out, calls, KILL_RANK="1", KILL_AT="3")
    assert killed.returncode != 0 and not (out / "summary.json").exists()
    shard1 = dist_rmbench.shard_path(out, 1)
    kept = lines(shard1)
    assert len(kept) == 3                                   # rank 1 died before its 4th item
    with open(shard1, "a") as f:
        f.write('{"id": "math-0", "domain": "ma')          # and as if mid-write: a torn line
    before = {r: scored(calls, r) for r in (0, 1)}
    finished0 = len(parse_records(dist_rmbench.shard_path(out, 0)))  # rank 0 was stopped too
    for r in (0, 1):
        Path(f"{calls}.{r}").unlink(missing_ok=True)
    # A plain one-process run can finish it too (it folds the shards in first).
    alone = tmp_path / "alone"
    shutil.copytree(out, alone)
    assert main(MINI + ["--out", str(alone)]) == 0
    assert (alone / "summary.json").read_bytes() == (single / "summary.json").read_bytes()
    assert sorted(lines(alone / "rewards.jsonl")) == sorted(lines(single / "rewards.jsonl"))
    resumed = torchrun(tmp_path, out, calls)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (out / "summary.json").read_bytes() == (single / "summary.json").read_bytes()
    assert (out / "rewards.jsonl").read_bytes() == (single / "rewards.jsonl").read_bytes()
    # Nothing scored twice: rank 1 did only what its shard lacked, rank 0 only what it had
    # not finished before it was stopped; the 3 kept lines are untouched.
    merged = [f"{x['subset']}/{x['id']}" for x in map(json.loads, lines(out / "rewards.jsonl"))]
    shard_items = {r: merged[r::2] for r in (0, 1)}
    assert before[1] == shard_items[1][:3]
    assert scored(calls, 1) == shard_items[1][3:]
    assert scored(calls, 0) == shard_items[0][finished0:]
    assert lines(shard1)[:3] == kept and len(lines(shard1)) == 8
    assert not (out / "rewards.malformed.jsonl").exists()   # a torn last line is cut, not set aside


# ---------------------------------------------------------------- in one process
def test_device_map_auto_in_a_multi_process_run_is_refused_in_one_line(tmp_path, monkeypatch,
                                                                        capsys):
    loads = []
    monkeypatch.setattr(bench, "_load_model", lambda *a, **k: loads.append(a))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(MINI + ["--out", str(tmp_path / "r"), "--device-map", "auto"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--device-map auto" in err and "one process" in err
    assert loads == [] and not (tmp_path / "r").exists()   # before any model is loaded


def test_device_map_auto_in_one_process_loads_through_accelerate(tmp_path, single, monkeypatch):
    """The command's path: `load_spread` → `models.load(device_map="auto")` (here, with no GPU,
    accelerate keeps the model on the CPU) gives the single run's table."""
    pytest.importorskip("accelerate")
    seen, real = [], models.load

    def load(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)
    monkeypatch.setattr(models, "load", load)
    assert main(MINI + ["--out", str(tmp_path / "r"), "--device-map", "auto"]) == 0
    assert seen == [{"dtype": None, "device_map": "auto"}]
    assert (tmp_path / "r" / "summary.json").read_bytes() == (single / "summary.json").read_bytes()


def test_the_environment_is_read_and_checked():
    group = ProcessGroup.from_env({"RANK": "1", "WORLD_SIZE": "3", "LOCAL_RANK": "1"})
    assert (group.rank, group.world_size, group.local_rank) == (1, 3, 1)
    assert group.shard(list(range(8))) == [1, 4, 7]
    assert dist_rmbench.world_size({}) == 1
    with pytest.raises(ValueError, match="LOCAL_RANK"):
        ProcessGroup.from_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="RANK must be in 0 … 1, got 2"):
        ProcessGroup.from_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match="WORLD_SIZE must be a whole number"):
        ProcessGroup.from_env({"RANK": "0", "WORLD_SIZE": "two", "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match="cuda:0.*every process"):
        group.device("cuda:0")
    if not torch.cuda.is_available():
        assert group.device("auto") == "cpu"


def test_merge_puts_every_record_in_item_order_once(tmp_path):
    items = [{"id": k, "domain": "chat", "subset": "chat"} for k in range(5)]

    def record(k, value):
        return {"id": k, "domain": "chat", "subset": "chat", "chosen": [value] * 3,
                "rejected": [0.0] * 3}
    (tmp_path / "rewards.jsonl").write_text(json.dumps(record(9, 9.0)) + "\n"
                                            + json.dumps(record(2, 2.0)) + "\n")
    dist_rmbench.shard_path(tmp_path, 0).write_text(
        "".join(json.dumps(record(k, float(k))) + "\n" for k in (0, 4)) + '{"id": 3, "dom')
    dist_rmbench.shard_path(tmp_path, 1).write_text(
        "".join(json.dumps(record(k, float(k))) + "\n" for k in (1, 2, 3)))
    merged = dist_rmbench.merge(tmp_path, items)
    assert [r["id"] for r in merged] == [0, 1, 2, 3, 4, 9]   # selected in order, then the rest
    assert [item_key(json.loads(x)) for x in lines(tmp_path / "rewards.jsonl")] == \
        [("chat", str(k)) for k in (0, 1, 2, 3, 4, 9)]


def test_a_model_spread_by_accelerate_scores_like_the_plain_one(tmp_path, tiny_tokenizer):
    """What --device-map auto loads: here spread over CPU and disk, its LM head on disk (a
    meta tensor until accelerate's hook brings it in), which must not change a reward."""
    pytest.importorskip("accelerate")
    from transformers import AutoModelForCausalLM

    from conftest import make_llama
    from endorm_mini.reward import EndogenousReward

    make_llama(tiny_tokenizer, seed=3).save_pretrained(tmp_path / "m")
    plain = EndogenousReward(make_llama(tiny_tokenizer, seed=3), tiny_tokenizer, device="cpu")
    spread = AutoModelForCausalLM.from_pretrained(
        tmp_path / "m", device_map="auto", max_memory={"cpu": "60KB"},
        offload_folder=str(tmp_path / "offload"))
    assert spread.hf_device_map["model.embed_tokens"] == "cpu"
    assert spread.hf_device_map["lm_head"] == "disk"
    scorer = EndogenousReward(spread, tiny_tokenizer, device="cpu")
    prompts, responses = ["Say 3."] * 3, ["3", "It is 3.", "**4**"]
    want = [r.total for r in plain.score_batch(prompts, responses, progress=False)]
    got = [r.total for r in scorer.score_batch(prompts, responses, progress=False)]
    assert got == pytest.approx(want, abs=1e-5)
    with pytest.raises(ValueError, match="dtype"):
        EndogenousReward(spread, tiny_tokenizer, dtype="bf16")


def test_the_sharded_runner_alone_writes_the_single_runners_summary(tmp_path, monkeypatch):
    """`run_rmbench_sharded` as the one process of a group (gloo, in this process): refused
    items, an earlier run's shard and the summary's `skipped` come out as `run_rmbench`'s."""
    import socket

    from endorm_mini.bench.rmbench import validate_item
    from endorm_mini.bench.runner import run_rmbench

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    items = [validate_item({"id": k, "prompt": f"Say {k}.", "domain": "chat",
                            "chosen": [f"{k}", f"It is {k}.", f"**{k}**"],
                            "rejected": [f"{k + 1}", f"It is {k + 1}.", f"**{k + 1}**"]}, "test")
             for k in range(6)]

    def by_length(prompt, responses, system=None):
        if prompt in ("Say 1.", "Say 4."):
            raise ValueError("too long")
        return [float(len(r)) for r in responses]

    with pytest.raises(ValueError, match=r"^\[rank 0/1\] item 1 \(chat\): too long$"):
        dist_rmbench.run_rmbench_sharded(items, by_length, tmp_path / "stop", ProcessGroup(0, 1, 0),
                                         meta={"method": "len"}, progress=False)
    assert not torch.distributed.is_initialized()             # left on an error too
    kwargs = dict(meta={"method": "len"}, skipped=["loader: one bad item"], skip_errors=True,
                  progress=False)
    run_rmbench(items, by_length, tmp_path / "one", **kwargs)
    two = tmp_path / "two"
    two.mkdir()
    earlier = json.loads(lines(tmp_path / "one" / "rewards.jsonl")[2])   # item 3, scored before
    dist_rmbench.shard_path(two, 5).write_text(json.dumps(earlier) + "\n")
    calls = []

    def spy(prompt, responses, system=None):
        calls.append(prompt)
        return by_length(prompt, responses)
    table = dist_rmbench.run_rmbench_sharded(items, spy, two, ProcessGroup(0, 1, 0), **kwargs)
    assert not torch.distributed.is_initialized()             # it left the group it joined
    assert calls == ["Say 0.", "Say 1.", "Say 2.", "Say 4.", "Say 5."]
    assert table["chat"]["n"] == 4
    assert (two / "summary.json").read_bytes() == (tmp_path / "one" / "summary.json").read_bytes()
    assert lines(two / "rewards.jsonl") == lines(tmp_path / "one" / "rewards.jsonl")
