"""A PPO run's files (endorm_mini.ppo_run, endorm_mini.commands.ppo): nothing lost, nothing silently
wrong. --checkpoint-every; a checkpoint on SIGINT/SIGTERM; no log overwritten without a
checkpoint to resume from; resume with other settings refused, naming them; --steps ≥ 1."""
import csv
import os
import signal

import pytest
import torch

from conftest import make_gpt2
from endorm_mini import cli, ppo, verifiers, worlds, zoo

PROMPTS = ["a", "ab", "bb", "ba"]
B = 8  # responses per update in small_config
pytestmark = pytest.mark.filterwarnings("ignore:responses that never emit eos")


@pytest.fixture(scope="module")
def tok():
    return zoo.char_tokenizer("ab")


def small_config(**kw):
    base = dict(steps=4, prompts_per_update=4, samples_per_prompt=2, max_new_tokens=4,
                minibatches=2, epochs=1, progress=False, device="cpu")
    return ppo.PPOConfig(**{**base, **kw})


class Verifier:
    """Says False; at its ``at``-th call it raises ``exc`` (a hard kill) or sends ``signum``."""

    def __init__(self, at=0, exc=None, signum=None):
        self.calls, self.at, self.exc, self.signum = 0, at, exc, signum

    def __call__(self, prompt, response):
        self.calls += 1
        if self.calls == self.at:
            if self.exc:
                raise self.exc
            signal.raise_signal(self.signum)
        return False


def log_rows(folder):
    with open(folder / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


class SignalNotHandled(Exception):
    pass


def unhandled(signum, frame):
    raise SignalNotHandled(f"{signal.Signals(signum).name} reached the test's own handler")


@pytest.fixture(autouse=True)
def signal_guard():
    """Outside train, SIGINT/SIGTERM raise SignalNotHandled: code that does not catch them
    fails the test instead of stopping pytest (SIGINT) or killing it (SIGTERM)."""
    previous = {s: signal.signal(s, unhandled) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in previous.items():
        signal.signal(s, handler)


# ---------------------------------------------------------------- signals save
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_finishes_the_update_saves_and_resumes_exactly(signum, tmp_path, tok):
    straight = ppo.train(make_gpt2(tok, seed=3), tok, PROMPTS, small_config(),
                         is_correct=Verifier())
    cfg = small_config(checkpoint_dir=str(tmp_path), checkpoint_every=100)  # no scheduled save
    stopper = Verifier(at=B + 3, signum=signum)                              # during update 2
    with pytest.raises(ppo.ppo_run.RunStopped, match=f"{signum.name}.*after update 2"):
        ppo.train(make_gpt2(tok, seed=3), tok, PROMPTS, cfg, is_correct=stopper)
    assert stopper.calls == 2 * B                    # update 2 was finished, not cut
    assert torch.load(tmp_path / "ppo.pt")["step"] == 2 and len(log_rows(tmp_path)) == 2
    assert signal.getsignal(signal.SIGINT) is signal.getsignal(signal.SIGTERM) is unhandled
    resumed = ppo.train(make_gpt2(tok, seed=3), tok, PROMPTS, cfg, is_correct=Verifier(),
                        resume=True)
    for key in ("reward", "kl", "policy_loss", "value_loss"):
        assert [h[key] for h in resumed.history] == [h[key] for h in straight.history]
    torch.testing.assert_close(weights(resumed.model), weights(straight.model), atol=0, rtol=0)


def test_a_second_ctrl_c_stops_at_once(tmp_path, tok):
    class TwoCtrlC(Verifier):
        def __call__(self, prompt, response):
            if self.calls == 2:
                signal.raise_signal(signal.SIGINT)       # the second one raises at once
            return super().__call__(prompt, response)

    cfg = small_config(checkpoint_dir=str(tmp_path), checkpoint_every=100)
    with pytest.raises(KeyboardInterrupt) as err:
        ppo.train(make_gpt2(tok, seed=3), tok, PROMPTS, cfg,
                  is_correct=TwoCtrlC(at=1, signum=signal.SIGINT))
    assert not isinstance(err.value, ppo.ppo_run.RunStopped) and not (tmp_path / "ppo.pt").exists()


# ---------------------------------------------------------------- the log is never lost
def test_a_log_without_a_checkpoint_is_never_overwritten(tmp_path, tok):
    cfg = small_config(checkpoint_dir=str(tmp_path), checkpoint_every=10)
    with pytest.raises(KeyboardInterrupt):  # a hard kill in update 3: the log has 2 updates
        ppo.train(make_gpt2(tok, seed=3), tok, PROMPTS, cfg,
                  is_correct=Verifier(at=2 * B + 1, exc=KeyboardInterrupt))
    before = (tmp_path / "log.csv").read_text()
    assert len(log_rows(tmp_path)) == 2 and not (tmp_path / "ppo.pt").exists()
    for resume in (True, False):
        with pytest.raises(ValueError, match="log.csv holds 2 updates but there is no ppo.pt"):
            ppo.train(make_gpt2(tok, seed=3), tok, PROMPTS, cfg, is_correct=Verifier(),
                      resume=resume)
    assert (tmp_path / "log.csv").read_text() == before


def test_a_finished_run_is_not_overwritten_by_a_new_one(tmp_path, tok):
    cfg = small_config(steps=2, checkpoint_dir=str(tmp_path))
    ppo.train(make_gpt2(tok, seed=3), tok, PROMPTS, cfg, is_correct=Verifier())
    before = (tmp_path / "ppo.pt").read_bytes()
    with pytest.raises(ValueError, match="already holds a run.*resume=True"):
        ppo.train(make_gpt2(tok, seed=3), tok, PROMPTS, cfg, is_correct=Verifier())
    assert (tmp_path / "ppo.pt").read_bytes() == before


def test_resume_needs_a_folder_and_steps_past_the_checkpoint(tmp_path, tok):
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        ppo.train(make_gpt2(tok), tok, PROMPTS, small_config(), resume=True)
    cfg = small_config(steps=2, checkpoint_dir=str(tmp_path))
    ppo.train(make_gpt2(tok, seed=3), tok, PROMPTS, cfg, is_correct=Verifier())
    with pytest.raises(ValueError, match="at update 2, past steps=1"):
        ppo.train(make_gpt2(tok, seed=3), tok, PROMPTS,
                  small_config(steps=1, checkpoint_dir=str(tmp_path)), resume=True)


# ---------------------------------------------------------------- resume is the same run
@pytest.mark.parametrize("change, named", [
    (dict(config={"alpha": 0.5}), "alpha: 1.0 → 0.5"),
    (dict(config={"reward": "verifier"}), "reward: 'endogenous' → 'verifier'"),
    (dict(config={"kl_coef": 0.1, "seed": 7}), "kl_coef: 0.01 → 0.1"),
    (dict(seed=4), "reference model"),                 # another base model
    (dict(prompts=PROMPTS[:3]), "prompts"),
])
def test_resume_with_other_settings_is_refused_naming_them(change, named, tmp_path, tok):
    cfg = small_config(steps=2, checkpoint_dir=str(tmp_path))
    ppo.train(make_gpt2(tok, seed=3), tok, PROMPTS, cfg, is_correct=Verifier())
    before = (tmp_path / "ppo.pt").read_bytes()
    other = small_config(steps=4, checkpoint_dir=str(tmp_path), **change.get("config", {}))
    model = make_gpt2(tok, seed=change.get("seed", 3))
    with pytest.raises(ValueError, match="other settings") as err:
        ppo.train(model, tok, change.get("prompts", PROMPTS), other, is_correct=Verifier(),
                  resume=True)
    assert named in str(err.value)
    assert (tmp_path / "ppo.pt").read_bytes() == before
    # What a resumed run may change: steps, the device, the progress bar, checkpoint_every.
    same = small_config(steps=3, checkpoint_dir=str(tmp_path), checkpoint_every=1,
                        gradient_checkpointing=True)
    resumed = ppo.train(make_gpt2(tok, seed=3), tok, PROMPTS, same, is_correct=Verifier(),
                        resume=True)
    assert [h["step"] for h in resumed.history] == [1, 2, 3]


def test_steps_and_checkpoint_every_must_be_at_least_one():
    for bad in (dict(steps=0), dict(steps=-3), dict(checkpoint_every=0)):
        with pytest.raises(ValueError, match="must be ≥ 1"):
            small_config(**bad)


# ---------------------------------------------------------------- endorm-mini ppo
ARITH = os.environ.get("ENDORM_TINY_ARITH", "tiny-arith")
EVAL = len(worlds.arith_problems())  # verifier calls of one accuracy pass (--eval-samples 1)
PER_UPDATE = ppo.PPOConfig().batch_size


@pytest.fixture
def arith_cli(tmp_path, monkeypatch):
    if ARITH not in zoo.available() and not os.path.isdir(ARITH):
        pytest.skip("the tiny-arith checkpoint is not in the zoo yet")
    args = ["ppo", "--model", ARITH, "--out", str(tmp_path), "--eval-samples", "1",
            "--device", "cpu"]

    def run(*extra, verifier=None):
        if verifier is not None:
            real = verifiers.is_correct
            def is_correct(prompt, response):  # noqa: E306
                verifier(prompt, response)
                return real(prompt, response)
            monkeypatch.setattr(verifiers, "is_correct", is_correct)
        try:
            return cli.main(args + list(extra))
        except SystemExit as exit_:  # argparse
            return exit_.code
        finally:
            monkeypatch.undo()
    return run


@pytest.mark.parametrize("steps", ["0", "-3"])
def test_cli_steps_below_one_is_a_clear_error(steps, arith_cli, capsys, tmp_path):
    assert arith_cli("--steps", steps) == 2
    err = capsys.readouterr().err
    assert "--steps" in err and "must be ≥ 1" in err and not (tmp_path / "log.csv").exists()


def test_cli_checkpoint_every_kill_and_resume(arith_cli, capsys, tmp_path):
    killer = Verifier(at=EVAL + 2 * PER_UPDATE + 1, exc=KeyboardInterrupt)  # in update 3
    assert arith_cli("--steps", "3", "--checkpoint-every", "1", verifier=killer) == 130
    assert torch.load(tmp_path / "ppo.pt")["step"] == 2 and len(log_rows(tmp_path)) == 2
    assert arith_cli("--steps", "3", "--checkpoint-every", "1", "--resume") == 0
    assert [r["step"] for r in log_rows(tmp_path)] == ["1", "2", "3"]
    assert "after 3 updates" in capsys.readouterr().out


def test_cli_killed_before_a_checkpoint_refuses_to_restart_over_the_log(arith_cli, capsys,
                                                                         tmp_path):
    killer = Verifier(at=EVAL + 2 * PER_UPDATE + 1, exc=KeyboardInterrupt)  # in update 3
    assert arith_cli("--steps", "4", verifier=killer) == 130       # checkpoints every 25
    before = (tmp_path / "log.csv").read_text()
    capsys.readouterr()
    assert arith_cli("--steps", "4", "--resume") == 2
    err = capsys.readouterr().err
    assert "log.csv holds 2 updates but there is no ppo.pt" in err and len(err.splitlines()) == 1
    assert (tmp_path / "log.csv").read_text() == before


def test_cli_ctrl_c_saves_and_resume_with_another_reward_is_refused(arith_cli, capsys,
                                                                    tmp_path):
    stopper = Verifier(at=EVAL + PER_UPDATE + 5, signum=signal.SIGINT)    # in update 2
    assert arith_cli("--steps", "3", verifier=stopper) == 128 + signal.SIGINT
    assert "interrupted at 2/3; rerun the same command with --resume" in capsys.readouterr().err
    assert torch.load(tmp_path / "ppo.pt")["step"] == 2
    assert arith_cli("--steps", "3", "--resume", "--reward", "verifier") == 2
    assert "reward: 'endogenous' → 'verifier'" in capsys.readouterr().err
    assert arith_cli("--steps", "3", "--resume", "--alpha", "0.5") == 2
    assert "alpha: 1.0 → 0.5" in capsys.readouterr().err
    assert arith_cli("--steps", "3", "--resume") == 0
    assert len(log_rows(tmp_path)) == 3
