"""The widget state a master notebook keeps, so its stored widgets show before it is run.

A stored output that displays an ipywidget holds only a reference, the
``application/vnd.jupyter.widget-view+json`` model id. JupyterLab and Notebook 7
(jupyterlab_widgets 3) render it from the notebook's ``metadata.widgets`` state, restored
once the notebook's kernel has started (with "No Kernel" it stays "Loading widget...": the
restore asks the kernel first and gives up without one); with no state, a trusted notebook shows
"Error displaying widget: model not found" and no other format of the output (an untrusted
one shows the output's ``text/html`` or ``text/plain`` instead: the widget renderer is not
"safe"). nbconvert (nbviewer) draws a widget from the same state when it is there.

nbclient records the state of every widget the kernel ever made (``store_widget_state``),
closed or never shown ones included, each with every synced trait. :func:`displayed_state`
keeps what the stored outputs show: the displayed models and the models they refer to
(children, layouts, styles), each without the traits left at their defaults, as
ipywidgets' own embedding does (``embed_data(drop_defaults=True)``): the front end fills
them in from the same defaults.

A progress bar (tqdm's, as transformers' "Loading weights") is not kept as a widget:
:func:`settle_bars` stores it as the text line of where it ended, ``Loading weights:
100%|██████████| 28/28``, which every viewer shows (trusted or not, nbconvert, GitHub);
as a widget it showed either the state it was displayed with, a frozen ``0/28``, or, its
state lost, "Error displaying widget: model not found". An output that carries its own static
``text/html`` copy beside a widget (the reward explorer's) is stored as that copy
(:func:`keep_static_copies`): a stored widget cannot be live, and nbconvert draws a stored
widget from its state only online (its script comes from a CDN), the copy everywhere.
:func:`missing_state` finds a stored widget that no viewer can draw.
"""
from __future__ import annotations

import json
import re

import nbformat

STATE_MIMETYPE = "application/vnd.jupyter.widget-state+json"
VIEW_MIMETYPE = "application/vnd.jupyter.widget-view+json"
# ipywidgets serialises a reference to another widget as "IPY_MODEL_<model id>"
REFERENCE_RE = re.compile(r"IPY_MODEL_(\w+)")
# the traits that name a model's class on both sides (kernel and front end)
# tqdm's text form of a bar, as its widget's text/plain holds it when displayed:
# "Loading weights:   0%|          | 0/28 [00:00<?, ?it/s]"
BAR_RE = re.compile(r"^(?P<desc>.*?)\s*(?P<percent>\d+)%\|[^|\n]*\|\s*(?P<n>\d+)/(?P<total>\d+)")
BAR_WIDTH = 10
CLASS_KEYS = ("_model_module", "_model_module_version", "_model_name",
              "_view_module", "_view_module_version", "_view_name")


def trait_defaults() -> dict[tuple, dict]:
    """The default of every synced trait of every ipywidgets class, keyed by the class's
    :data:`CLASS_KEYS` values. Where classes share those (``interactive`` is a ``VBox``),
    only the defaults they agree on are kept."""
    import ipywidgets

    found: dict[tuple, dict] = {}
    todo, seen = [ipywidgets.Widget], set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo.extend(cls.__subclasses__())
        traits = cls.class_traits(sync=True)
        if not all(name in traits for name in CLASS_KEYS):
            continue
        key = tuple(traits[name].default_value for name in CLASS_KEYS)
        defaults = {name: trait.default_value for name, trait in traits.items()}
        if key in found:
            defaults = {name: value for name, value in found[key].items()
                        if name in defaults and defaults[name] == value}
        found[key] = defaults
    return found


def without_defaults(model: dict, defaults: dict[tuple, dict]) -> dict:
    """``model`` (``{"model_name", ..., "state"}``) without the traits at their defaults,
    compared as ipywidgets' ``Widget.get_state(drop_defaults=True)`` compares them (``==``);
    a model of a class not in ``defaults`` is kept whole."""
    state = model.get("state", {})
    known = defaults.get(tuple(state.get(name) for name in CLASS_KEYS))
    if known is None:
        return model
    kept = {name: value for name, value in state.items()
            if not (name in known and value == known[name])}
    return {**model, "state": kept}


def displayed_ids(nb: nbformat.NotebookNode) -> list[str]:
    """Model ids of the widgets that ``nb``'s stored outputs display, in cell order."""
    ids = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(VIEW_MIMETYPE)
            if view and view.get("model_id"):
                ids.append(view["model_id"])
    return ids


def displayed_state(nb: nbformat.NotebookNode) -> dict | None:
    """``nb.metadata.widgets`` cut to the displayed widgets and every model they refer to,
    defaults dropped; ``None`` when no stored output shows a widget whose state was recorded."""
    recorded = nb.metadata.get("widgets", {}).get(STATE_MIMETYPE, {})
    models = recorded.get("state", {})
    kept, todo = {}, displayed_ids(nb)
    while todo:
        model_id = todo.pop()
        if model_id in kept or model_id not in models:
            continue
        kept[model_id] = models[model_id]
        todo.extend(REFERENCE_RE.findall(json.dumps(models[model_id].get("state", {}))))
    if not kept:
        return None
    defaults = trait_defaults()
    kept = {model_id: without_defaults(kept[model_id], defaults) for model_id in sorted(kept)}
    return {STATE_MIMETYPE: {"state": kept,
                             "version_major": recorded.get("version_major", 2),
                             "version_minor": recorded.get("version_minor", 0)}}


def _models(nb: nbformat.NotebookNode) -> dict:
    return nb.metadata.get("widgets", {}).get(STATE_MIMETYPE, {}).get("state", {})


def bar_text(text: str, count: float | None = None) -> str | None:
    """The text line of a tqdm bar displayed as ``text`` (its widget's ``text/plain``) that
    reached ``count`` (``None``: its total, a finished bar), without the timing; ``None``
    when ``text`` is not a bar with a total."""
    found = BAR_RE.match(text)
    if not found or int(found["total"]) <= 0:
        return None
    total = int(found["total"])
    n = total if count is None else max(0, min(total, int(count)))
    filled = round(BAR_WIDTH * n / total)
    bar = "█" * filled + " " * (BAR_WIDTH - filled)
    desc = f"{found['desc']} " if found["desc"] else ""
    return f"{desc}{100 * n // total:3d}%|{bar}| {n}/{total}"


def _bar_count(models: dict, model_id: str) -> float | None:
    """The value a recorded bar widget (an HBox holding a FloatProgress) ended at."""
    box = models.get(model_id, {}).get("state", {})
    for child in REFERENCE_RE.findall(json.dumps(box.get("children", []))):
        state = models.get(child, {}).get("state", {})
        if models.get(child, {}).get("model_name") in ("FloatProgressModel", "IntProgressModel"):
            return state.get("value", 0)
    return None


def settle_bars(nb: nbformat.NotebookNode) -> int:
    """Replace every stored output that displays a tqdm bar widget by the text line of where
    the bar ended (its recorded state; with none, the bar's total: a stored notebook ran
    every cell to its end), in place; returns how many. ``nb.metadata.widgets`` is left as
    it is (:func:`displayed_state` then drops the bars' models)."""
    models, settled = _models(nb), 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            view = data.get(VIEW_MIMETYPE)
            text = data.get("text/plain", "")
            if not view or not isinstance(text, str):
                continue
            line = bar_text(text, _bar_count(models, view.get("model_id", "")))
            if line is not None:
                output["data"] = {"text/plain": line}
                settled += 1
    return settled


def keep_static_copies(nb: nbformat.NotebookNode) -> int:
    """Drop the widget view from every stored output that has its own ``text/html`` copy,
    in place; returns how many."""
    kept = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if VIEW_MIMETYPE in data and "text/html" in data:
                del data[VIEW_MIMETYPE]
                kept += 1
    return kept


def settle(nb: nbformat.NotebookNode) -> int:
    """Progress bars as text lines, widgets with a static copy as that copy
    (:func:`settle_bars`, :func:`keep_static_copies`); returns how many outputs changed."""
    return settle_bars(nb) + keep_static_copies(nb)


def missing_state(nb: nbformat.NotebookNode) -> list[tuple[int, str]]:
    """(cell index, model id) of every stored output displaying a widget whose state ``nb``
    does not keep: a trusted JupyterLab shows "Error displaying widget: model not found"."""
    models = _models(nb)
    return [(i, output["data"][VIEW_MIMETYPE].get("model_id", ""))
            for i, cell in enumerate(nb.cells) for output in cell.get("outputs", [])
            if VIEW_MIMETYPE in output.get("data", {})
            and output["data"][VIEW_MIMETYPE].get("model_id") not in models]


def main(argv: list[str] | None = None) -> int:
    """``python -m endorm_mini.course.widget_state NOTEBOOK...``: :func:`settle` the stored
    outputs of run notebooks in place, outputs and widget state only (no cell is re-run)."""
    import sys
    from pathlib import Path

    for path in argv if argv is not None else sys.argv[1:]:
        nb = nbformat.read(path, as_version=4)
        if not settle(nb):
            continue
        widgets = displayed_state(nb)
        if widgets:
            nb.metadata["widgets"] = widgets
        else:
            nb.metadata.pop("widgets", None)
        text = nbformat.writes(nb)
        Path(path).write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        print(f"{path}: progress bars stored as text, widgets with a copy as the copy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
