"""Promptable rewards: the domain diagonal (docs/paper.md §7, Q2; the DSP experiment).

The endogenous reward is conditioned on everything before the response, the system
prompt included. Swap the system prompt and you swap the judge: one model, one reward
per persona. Evaluate each persona's reward on every persona's preference pairs and the
accuracy matrix shows a diagonal: each reward does best on its own persona's pairs.

``matrix[i][j]`` = pairwise accuracy of the reward under system prompt ``i`` on the pairs
of persona ``j`` (the pairs' own system prompts are replaced by ``i``'s).
"""
from __future__ import annotations

import numpy as np

from .methods import as_pair, pairwise_accuracy


def diagonal_matrix(method, systems: dict[str, str], pairs: dict[str, list], progress: bool = True) -> np.ndarray:
    """Accuracy matrix [len(systems), len(pairs)]: rows = reward personas, columns = data personas.

    ``method`` is any reward method (``prompt, responses, system -> list[float]``);
    ``systems`` maps a row name to its system prompt; ``pairs`` maps a column name to its
    preference pairs. Row names need not all be columns (a persona the model never saw).
    """
    from tqdm.auto import tqdm

    if not systems or not pairs:
        raise ValueError("need at least one system prompt and one set of preference pairs")
    matrix = np.zeros((len(systems), len(pairs)))
    cells = [(i, j) for i in range(len(systems)) for j in range(len(pairs))]
    columns = [[as_pair(p) for p in col] for col in pairs.values()]
    for i, j in tqdm(cells, desc="domain diagonal", unit="cell", disable=not progress):
        system = list(systems.values())[i]
        relabelled = [(p["prompt"], p["chosen"], p["rejected"], system) for p in columns[j]]
        matrix[i, j] = pairwise_accuracy(method, relabelled)
    return matrix


def diagonal_dominates(matrix: np.ndarray, rows: list[str], columns: list[str]) -> dict[str, bool]:
    """For each row whose name is also a column: is its own cell strictly the best in the row?"""
    out = {}
    for i, name in enumerate(rows):
        if name in columns:
            j = columns.index(name)
            others = np.delete(matrix[i], j)
            out[name] = bool(others.size == 0 or matrix[i, j] > others.max())
    return out


def format_matrix(matrix: np.ndarray, rows: list[str], columns: list[str]) -> str:
    """The matrix as text, percentages; rows = reward's system prompt, columns = pairs."""
    width = max(8, max(len(c) for c in columns) + 1)
    corner = "reward \\ pairs"
    head = f"{corner:<16}" + "".join(f"{c:>{width}}" for c in columns)
    lines = [head] + [f"{r:<16}" + "".join(f"{100 * v:>{width}.1f}" for v in matrix[i])
                      for i, r in enumerate(rows)]
    return "\n".join(lines)


def plot_diagonal(matrix: np.ndarray, rows: list[str], columns: list[str], path=None, title=None):
    """A labelled heatmap of the accuracy matrix; saved to ``path`` (PNG) if given."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.4 * len(columns) + 2.5, 1.1 * len(rows) + 1.5))
    im = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("preference pairs of persona")
    ax.set_ylabel("reward's system prompt (persona)")
    for i in range(len(rows)):
        for j in range(len(columns)):
            ax.text(j, i, f"{100 * matrix[i, j]:.0f}", ha="center", va="center",
                    color="black" if matrix[i, j] > 0.6 else "white")
    fig.colorbar(im, ax=ax, label="pairwise accuracy")
    ax.set_title(title or "Each system prompt gives its own reward: the diagonal")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def persona_diagonal(method, personas=None, n: int = 20, seed: int = 0, split: str = "test",
                     extra_systems: dict[str, str] | None = None, progress: bool = True):
    """The tiny world's diagonal: ``(matrix, rows, columns)`` over ``worlds.PERSONAS``.

    ``extra_systems`` adds rows for system prompts the model never saw in training.
    """
    from .. import worlds

    personas = list(personas or worlds.PERSONAS)
    systems = {p: worlds.persona_system(p) for p in personas}
    systems.update(extra_systems or {})
    pairs = {p: worlds.persona_pairs(p, n=n, seed=seed, split=split) for p in personas}
    matrix = diagonal_matrix(method, systems, pairs, progress=progress)
    return matrix, list(systems), personas
