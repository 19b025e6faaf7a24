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
