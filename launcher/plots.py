"""The study -> plots in a folder: static PNG (matplotlib) and interactive HTML (plotly), drawn
by Optuna's own visualization modules from the whole study (``sagemaker-optuna report`` only).

matplotlib and plotly are the ``plots`` extra (``pip install '.[plots]'`` in the project's folder),
not in the image: without them the report keeps its summary files and says what to install.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import optuna
from optuna.trial import TrialState

from hpo_study.constants import PLOTS_DIR

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


LEGEND_MAX_TRIALS = 20  # Optuna's plot has one legend entry per trial; more are unreadable


@contextlib.contextmanager
def _without_sklearn() -> Iterator[None]:
    """Importing ``optuna.importance`` imports scikit-learn for the fANOVA evaluator when it is
    installed (3.3 s under load; a development install has it for the demo data). The plots use
    Optuna's default evaluator, PED-ANOVA, which needs no scikit-learn: hide it for that import,
    unless something loaded it already. Optuna then treats fANOVA as not installed."""
    if "sklearn.ensemble" in sys.modules or "optuna.importance" in sys.modules:
        yield
        return
    sys.modules["sklearn.ensemble"] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        yield
    finally:
        del sys.modules["sklearn.ensemble"]


def _importances():
    """Optuna's default importances (PED-ANOVA, as ``get_param_importances`` without an
    evaluator), computed once for both importance plots instead of once per plot."""
    with _without_sklearn():
        from optuna.importance import BaseImportanceEvaluator, PedAnovaImportanceEvaluator

    class Importances(BaseImportanceEvaluator):
        def __init__(self) -> None:
            self._evaluator = PedAnovaImportanceEvaluator()
            self._done: dict[tuple, dict[str, float]] = {}

        def evaluate(self, study, params=None, *, target=None) -> dict[str, float]:
            key = (tuple(params) if params is not None else None, target)
            if key not in self._done:
                self._done[key] = self._evaluator.evaluate(study, params=params, target=target)
            return self._done[key]

    return Importances()


class _SharedTrials(optuna.Study):
    """The study as the plots read it: its trials handed out as stored, without Optuna's deep
    copy per call. The importance plot reads ``study.trials`` (a deep copy of every trial) once
    per parameter: 17 s of deep copies at 5,000 trials. The plots only read the trials."""

    def __init__(self, study: optuna.Study) -> None:  # a view: no super().__init__
        self.__dict__.update(study.__dict__)

    def get_trials(self, deepcopy: bool = True, states=None) -> list[optuna.trial.FrozenTrial]:
        return super().get_trials(deepcopy=False, states=states)

    @property
    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return super().get_trials(deepcopy=False)


def _intermediate_values_png(study: optuna.Study):
    """Optuna's matplotlib intermediate-values plot, drawn as one line collection: its own draws
    one line and one legend entry per trial, 67 s for 5,000 trials (the legend most of it).
    Same title, axes, colours (tab20 in trial order) and markers; the legend up to
    LEGEND_MAX_TRIALS trials."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.collections import LineCollection

    states = (TrialState.PRUNED, TrialState.COMPLETE, TrialState.RUNNING)  # the trials Optuna draws
    trials = [t for t in study.get_trials(deepcopy=False, states=states) if t.intermediate_values]
    if not trials:
        raise ValueError("no trial has intermediate values")
    plt.style.use("ggplot")
    _, ax = plt.subplots(tight_layout=True)
    ax.set_title("Intermediate Values Plot")
    ax.set_xlabel("Step")
    ax.set_ylabel("Intermediate Value")
    cmap = plt.get_cmap("tab20")
    lines = [np.array(sorted(t.intermediate_values.items()), dtype=float) for t in trials]
    colors = [cmap(i % cmap.N) for i in range(len(trials))]
    ax.add_collection(LineCollection(lines, colors=colors, alpha=0.7))
    points = np.concatenate(lines)
    point_colors = np.repeat(np.array(colors), [len(line) for line in lines], axis=0)
    ax.scatter(points[:, 0], points[:, 1], c=point_colors, marker=".", alpha=0.7)
    ax.autoscale()
    if 2 <= len(trials) <= LEGEND_MAX_TRIALS:
        for trial, color in zip(trials, colors, strict=True):
            ax.plot([], [], color=color, marker=".", label=f"Trial{trial.number}")
        ax.legend(bbox_to_anchor=(1.05, 1), loc="upper left", borderaxespad=0.0)
    return ax


def _intermediate_values_html(study: optuna.Study):
    """Optuna's plotly intermediate-values plot, up to LEGEND_MAX_TRIALS trials with intermediate
    values. Beyond, the same figure drawn as one trace (by hand: Optuna has no such option):
    Optuna's makes a trace per trial, 6 s for 5,000 trials (plotly validates every trace twice).
    The trials' lines are joined with None gaps, Plotly's way to draw many lines as one trace
    (https://plotly.com/python/line-charts/, connectgaps); the hover names each point's trial.
    Same trials (running, pruned, complete), title and axes as Optuna's; one colour for all
    trials, and infeasible trials (constraints above 0) in a second, grey trace as Optuna greys
    them."""
    import plotly.graph_objects as go

    trials = [
        t
        for t in study.get_trials(
            deepcopy=False, states=(TrialState.PRUNED, TrialState.COMPLETE, TrialState.RUNNING)
        )
        if t.intermediate_values
    ]
    if len(trials) <= LEGEND_MAX_TRIALS:
        return optuna.visualization.plot_intermediate_values(study)

    def trace(group: list[optuna.trial.FrozenTrial], **style) -> dict:
        """A scatter trace as a dict: the figure validates it once (a go.Scatter twice)."""
        x: list[float | None] = []
        y: list[float | None] = []
        numbers: list[int | None] = []
        for t in group:
            steps = sorted(t.intermediate_values.items())
            x += [step for step, _ in steps] + [None]
            y += [value for _, value in steps] + [None]
            numbers += [t.number] * len(steps) + [None]
        return {
            "type": "scatter",
            "x": x[:-1],
            "y": y[:-1],
            "customdata": numbers[:-1],
            "mode": "lines+markers",
            "connectgaps": False,
            "hovertemplate": "Trial%{customdata}<br>Step %{x}<br>%{y}<extra></extra>",
            "showlegend": False,
            **style,
        }

    def feasible(t: optuna.trial.FrozenTrial) -> bool:
        return all(c <= 0.0 for c in t.constraints.values())

    # Optuna's plotly figure's layout (optuna.visualization._intermediate_values).
    layout = go.Layout(
        title="Intermediate Values Plot",
        xaxis={"title": "Step"},
        yaxis={"title": "Intermediate Value"},
        showlegend=False,
    )
    data = []
    if feasibles := [t for t in trials if feasible(t)]:
        data.append(trace(feasibles, marker={"size": 4}, opacity=0.7))
    if infeasibles := [t for t in trials if not feasible(t)]:
        grey = "#CCCCCC"
        data.append(trace(infeasibles, marker={"size": 4, "color": grey}, line={"color": grey}))
    return go.Figure(data=data, layout=layout)


def _plots(importances: object) -> Mapping[str, tuple[Callable, Callable]]:
    """The plots to draw: Optuna's, with the importances computed once, and the
    intermediate-values plots drawn as one collection (PNG) and, for many trials, one trace (HTML)."""
    return {
        **PLOTS,
        "param_importances": (
            lambda study: optuna.visualization.plot_param_importances(study, evaluator=importances),
            lambda study: optuna.visualization.matplotlib.plot_param_importances(
                study, evaluator=importances
            ),
        ),
        "intermediate_values": (_intermediate_values_html, _intermediate_values_png),
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
    study = _SharedTrials(study)
    trials = study.get_trials(deepcopy=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, (interactive, static) in _plots(_importances()).items():
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
