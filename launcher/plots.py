"""The study -> plots in a folder: static PNG (matplotlib) and interactive HTML (plotly), drawn
by Optuna's own visualization modules from the whole study (``sagemaker-optuna report`` only).

matplotlib and plotly are the ``plots`` extra (``pip install '.[plots]'`` in the project's folder),
not in the image: without them the report keeps its summary files and says what to install.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna

from entrypoint.constants import PLOTS_DIR

logger = logging.getLogger(__name__)

INSTALL_HINT = "install this project with its plots extra: pip install '.[plots]' in its folder"

# name -> (plotly function, matplotlib function); each takes the study.
PLOTS: dict[str, tuple[Callable, Callable]] = {
    "optimization_history": (
        optuna.visualization.plot_optimization_history,
        optuna.visualization.matplotlib.plot_optimization_history,
    ),
    "param_importances": (
        optuna.visualization.plot_param_importances,
        optuna.visualization.matplotlib.plot_param_importances,
    ),
    "parallel_coordinate": (
        optuna.visualization.plot_parallel_coordinate,
        optuna.visualization.matplotlib.plot_parallel_coordinate,
    ),
    "intermediate_values": (
        optuna.visualization.plot_intermediate_values,
        optuna.visualization.matplotlib.plot_intermediate_values,
    ),
}


def write(study: optuna.Study, out: str | Path) -> list[Path]:
    """Draw every plot the study has enough trials for; return the files written.

    A plot that cannot be drawn (too few completed trials for importances, say) is skipped
    with a log line: a missing plot must never cost the report its summary files.
    """
    try:
        import matplotlib
        import plotly  # noqa: F401 (optuna.visualization draws with it)
    except ImportError as exc:
        logger.warning("Plots skipped: %s is not installed (%s)", exc.name, INSTALL_HINT)
        return []
    matplotlib.use("Agg")  # files only, also on a machine without a display
    import matplotlib.pyplot as plt

    folder = Path(out) / PLOTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    trials = study.get_trials(deepcopy=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, (interactive, static) in PLOTS.items():
            try:
                html = folder / f"{name}.html"
                # One shared plotly.min.js beside the pages: viewable offline, 3.5 MB once.
                interactive(study).write_html(html, include_plotlyjs="directory")
                png = folder / f"{name}.png"
                axes = static(study)
                axes.figure.savefig(png, dpi=100, bbox_inches="tight")
                plt.close("all")
                written += [html, png]
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                plt.close("all")
                logger.warning("Plot %s skipped (%d trials): %s", name, len(trials), exc)
    return written
