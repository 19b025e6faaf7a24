"""Running a notebook in a Jupyter kernel of this Python environment (nbclient, nbval's kernel)."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat


def kernel_env(**extra: str) -> dict[str, str]:
    """The environment notebook kernels run in: this one, with fixed string hashing and
    without ``MPLBACKEND`` (a backend such as Agg set for tests would hide every figure)."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    return {**env, "PYTHONHASHSEED": "0", **extra}


def run(nb: nbformat.NotebookNode, cwd: str | Path, timeout: float = 600,
        env: dict[str, str] | None = None,
        store_widget_state: bool = False) -> nbformat.NotebookNode:
    """Execute ``nb`` in place, top to bottom, in a kernel of this Python environment
    (``env``: :func:`kernel_env` by default); stops at the first error
    (``nbclient.CellExecutionError``). ``store_widget_state``: record every widget's state
    in ``nb.metadata.widgets`` (see :mod:`endorm_mini.widget_state`)."""
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbval.kernel import CURRENT_ENV_KERNEL_NAME, NbvalKernelspecManager

    km = KernelManager(kernel_name=CURRENT_ENV_KERNEL_NAME,
                       kernel_spec_manager=NbvalKernelspecManager())
    client = NotebookClient(nb, km=km, timeout=timeout, record_timing=False,
                            store_widget_state=store_widget_state)
    client.execute(cwd=str(cwd), env=env or kernel_env())
    return nb
