"""A master's stored widgets keep their state (``endorm_mini.course.widget_state``): the models the
outputs display and those they refer to, nothing else; lessons carry none; progress bars
are stored as text lines, not widgets. The browser check that JupyterLab then shows them
is ``test_browser.py``."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from endorm_mini.course import build, cells, widget_state
from endorm_mini.course.widget_state import STATE_MIMETYPE, VIEW_MIMETYPE


def _model(name: str, **state) -> dict:
    return {"model_name": name, "model_module": "@jupyter-widgets/controls",
            "model_module_version": "2.0.0", "state": {"_model_name": name, **state}}


def _shows(model_id: str):
    return nbformat.v4.new_output("display_data", data={
        VIEW_MIMETYPE: {"model_id": model_id, "version_major": 2, "version_minor": 0},
        "text/plain": "VBox(...)"})


def test_displayed_state_keeps_the_shown_models_and_what_they_refer_to():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("box", outputs=[_shows("box")]),
        nbformat.v4.new_code_cell("print(1)", outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="1\n")])])
    models = {
        "box": _model("VBoxModel", children=["IPY_MODEL_text", "IPY_MODEL_html"],
                      layout="IPY_MODEL_box_layout"),
        "text": _model("TextModel", value="Paris.", layout="IPY_MODEL_text_layout",
                       style="IPY_MODEL_text_style"),
        "html": _model("HTMLModel", value="<b>7.639</b>"),
        "box_layout": _model("LayoutModel"),
        "text_layout": _model("LayoutModel"),
        "text_style": _model("TextStyleModel"),
        "closed_bar": _model("FloatProgressModel", layout="IPY_MODEL_bar_layout"),
        "bar_layout": _model("LayoutModel"),
    }
    nb.metadata.widgets = {STATE_MIMETYPE: {"state": models, "version_major": 2,
                                            "version_minor": 0}}
    kept = widget_state.displayed_state(nb)[STATE_MIMETYPE]
    assert set(kept["state"]) == {"box", "text", "html", "box_layout", "text_layout",
                                  "text_style"}
    assert kept["state"]["text"] == models["text"] and kept["version_major"] == 2
    # no output shows a widget, or none that was recorded: nothing to keep
    nb.cells[0].outputs = []
    assert widget_state.displayed_state(nb) is None
    nb.cells[0].outputs = [_shows("gone")]
    assert widget_state.displayed_state(nb) is None


def test_defaults_are_dropped_as_ipywidgets_embedding_drops_them():
    """What ``embed_data(drop_defaults=True)`` keeps is what is kept; an unknown class
    (another package's widget) keeps its whole state."""
    import ipywidgets

    defaults = widget_state.trait_defaults()
    text = ipywidgets.Text(value="Paris.", description="response A",
                           layout=ipywidgets.Layout(width="auto"))
    try:
        for widget in (text, text.layout, text.style):
            kept = widget_state.without_defaults(widget._get_embed_state(), defaults)
            assert kept == widget._get_embed_state(drop_defaults=True)
        assert widget_state.without_defaults(text.layout._get_embed_state(), defaults)[
            "state"] == {"width": "auto"}
        kept = widget_state.without_defaults(text._get_embed_state(), defaults)["state"]
        assert kept["value"] == "Paris." and kept["description"] == "response A"
        assert "disabled" not in kept and "placeholder" not in kept
    finally:
        for widget in (text.layout, text.style, text):
            widget.close()
    foreign = _model("ThirdPartyModel", value=None)
    assert widget_state.without_defaults(foreign, defaults) == foreign


def test_classes_sharing_a_model_keep_only_the_defaults_they_agree_on():
    """Two classes of one model (as ``interactive`` is a ``VBox``) that differ in a
    default: a stored value of that trait is never dropped as "the" default."""
    import ipywidgets
    from traitlets import Bool, Unicode

    class Shared(ipywidgets.DOMWidget):
        _model_name = Unicode("EndormSharedTestModel").tag(sync=True)
        flag = Bool(True).tag(sync=True)
        label = Unicode("same").tag(sync=True)

    class Variant(Shared):
        flag = Bool(False).tag(sync=True)

    traits = Shared.class_traits(sync=True)
    key = tuple(traits[name].default_value for name in widget_state.CLASS_KEYS)
    shared = widget_state.trait_defaults()[key]
    assert shared["label"] == "same" and "flag" not in shared
    model = {"model_name": "EndormSharedTestModel",
             "state": {**{name: key[i] for i, name in enumerate(widget_state.CLASS_KEYS)},
                       "flag": False, "label": "same"}}
    assert widget_state.without_defaults(model, {key: shared})["state"] == {"flag": False}
    assert Variant.class_traits()["flag"].default_value is False


WIDGETS = """import ipywidgets as widgets
from IPython.display import display
from tqdm.auto import tqdm
for _ in tqdm(range(7), desc="Loading weights"):
    pass
widgets.Button(description="closed").close()
hidden = widgets.IntSlider(value=3)
box = widgets.VBox([widgets.Text(value="Paris."), widgets.HTML(value="<b>7.639</b>")])
display(box)"""


def test_execute_stores_the_displayed_widgets_state_and_lessons_drop_it(tmp_path):
    """build-lessons --execute's own path (a real kernel): the master keeps the state of
    the displayed box and its parts, not of the closed or never shown widgets."""
    path = tmp_path / "99_widgets.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(WIDGETS)]), path)
    build.execute(path, timeout=120)
    nb = nbformat.read(path, as_version=4)
    [box_id] = widget_state.displayed_ids(nb)
    state = nb.metadata.widgets[STATE_MIMETYPE]["state"]
    names = sorted(m["model_name"] for m in state.values())
    assert names == ["HTMLModel", "HTMLStyleModel", "LayoutModel", "LayoutModel",
                     "LayoutModel", "TextModel", "TextStyleModel", "VBoxModel"]
    assert state[box_id]["model_name"] == "VBoxModel"
    [text] = [m["state"] for m in state.values() if m["model_name"] == "TextModel"]
    assert text["value"] == "Paris." and "disabled" not in text   # False: a default
    assert "widgets" not in cells.clean(nb).metadata
    # the tqdm bar: a text line where it ended, no widget, none of its models kept
    [bar] = [o for o in nb.cells[0].outputs if "Loading" in o.get("data", {}).get("text/plain", "")]
    assert bar.data == {"text/plain": "Loading weights: 100%|██████████| 7/7"}
    assert widget_state.missing_state(nb) == []


ROOT = Path(__file__).resolve().parents[1]
STORED = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb")) + sorted(
    (ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", STORED, ids=[f"{p.parent.name}/{p.name}" for p in STORED])
def test_every_stored_widget_has_its_state(path):
    """No stored output shows a widget a viewer cannot draw ("Error displaying widget:
    model not found" when trusted), and no tqdm bar is stored as a widget without state."""
    nb = nbformat.read(path, as_version=4)
    assert widget_state.missing_state(nb) == [], (
        f"{path.name}: widgets stored without their state (cell, model id); re-run it with "
        f"build-lessons --execute, or store its progress bars as text: "
        f"python -m endorm_mini.course.widget_state {path}")


BAR = "Loading weights:   0%|          | 0/20 [00:00<?, ?it/s]"


def _bar_notebook(with_state: bool, value: float = 20.0) -> nbformat.NotebookNode:
    output = _shows("bar")
    output.data["text/plain"] = BAR
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("load()", outputs=[output])])
    if with_state:
        nb.metadata.widgets = {STATE_MIMETYPE: {"state": {
            "bar": _model("HBoxModel", children=["IPY_MODEL_label", "IPY_MODEL_progress"]),
            "label": _model("HTMLModel", value="Loading weights: 100%"),
            "progress": _model("FloatProgressModel", value=value, max=20.0)}}}
    return nb


def test_the_scan_finds_a_widget_stored_without_state():
    """The test above can fail: the bar lessons 01, 06 and 09 stored is found."""
    nb = _bar_notebook(with_state=False)
    assert widget_state.missing_state(nb) == [(0, "bar")]
    assert widget_state.missing_state(_bar_notebook(with_state=True)) == []


@pytest.mark.parametrize("with_state, value, line", [
    (False, 20.0, "Loading weights: 100%|██████████| 20/20"),   # no state: it ran to its end
    (True, 20.0, "Loading weights: 100%|██████████| 20/20"),
    (True, 5.0, "Loading weights:  25%|██        | 5/20"),      # stopped early: where it ended
])
def test_settle_bars_stores_where_the_bar_ended_as_text(with_state, value, line):
    nb = _bar_notebook(with_state, value)
    assert widget_state.settle_bars(nb) == 1
    assert nb.cells[0].outputs[0].data == {"text/plain": line}
    assert widget_state.missing_state(nb) == [] and widget_state.displayed_state(nb) is None
    # a widget that is not a bar is left alone
    other = _bar_notebook(with_state=False)
    other.cells[0].outputs[0].data["text/plain"] = "VBox(children=(Text(value='Paris.'),))"
    assert widget_state.settle_bars(other) == 0 and widget_state.missing_state(other)
