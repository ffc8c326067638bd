"""The report's interactive intermediate-values plot: Optuna's own figure for a few trials, one
trace for many (issue 25: Optuna's trace per trial took 6 s at 5,000 trials)."""

from __future__ import annotations

import optuna
import pytest

pytest.importorskip("plotly")  # the plots extra

from launcher import plots  # noqa: E402 (after the skip: it draws with plotly)

pytestmark = pytest.mark.unit


def study_with_curves(n_trials: int, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """Trials with 1-4 intermediate values each (pruned after a few steps), one running, one
    failed and one without intermediate values, which the plot leaves out."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=sampler or optuna.samplers.RandomSampler(seed=0))
    for n in range(n_trials):
        trial = study.ask()
        for step in range(n % 4 + 1):
            trial.report(1.0 / (n + step + 1), step)
        study.tell(trial, 0.5 / (n + 1))
    running = study.ask()
    running.report(0.25, 0)
    failed = study.ask()
    failed.report(0.75, 0)
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    study.enqueue_trial({})
    study.tell(study.ask(), 0.1)  # no intermediate values
    return study


def test_many_trials_are_one_trace_with_every_intermediate_value():
    study = study_with_curves(plots.LEGEND_MAX_TRIALS + 5)
    figure = plots._intermediate_values_html(study)
    assert len(figure.data) == 1
    (trace,) = figure.data
    # Each trial's (step, value) in step order, trials separated by one None gap.
    expected_x: list = []
    expected_y: list = []
    expected_numbers: list = []
    shown = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state != optuna.trial.TrialState.FAIL and t.intermediate_values
    ]
    assert len(shown) == plots.LEGEND_MAX_TRIALS + 6  # the running trial is drawn, as by Optuna
    for t in shown:
        steps = sorted(t.intermediate_values.items())
        expected_x += [s for s, _ in steps] + [None]
        expected_y += [v for _, v in steps] + [None]
        expected_numbers += [t.number] * len(steps) + [None]
    assert list(trace.x) == expected_x[:-1]
    assert list(trace.y) == expected_y[:-1]
    assert list(trace.customdata) == expected_numbers[:-1]
    assert trace.connectgaps is False and "Trial%{customdata}" in trace.hovertemplate
    # Optuna's title, axes and legend setting, from Optuna's own figure of the same study.
    optunas = optuna.visualization.plot_intermediate_values(study)
    assert len(optunas.data) == len(shown)
    assert figure.layout.title.text == optunas.layout.title.text == "Intermediate Values Plot"
    assert figure.layout.xaxis.title.text == optunas.layout.xaxis.title.text
    assert figure.layout.yaxis.title.text == optunas.layout.yaxis.title.text
    assert figure.layout.showlegend is optunas.layout.showlegend is False


def test_infeasible_trials_are_a_second_grey_trace():
    """Optuna greys infeasible trials (a constraint above 0): here they are a trace of their own."""
    sampler = optuna.samplers.TPESampler(seed=0, constraints_func=lambda t: (float(t.number % 3 == 0),))
    study = study_with_curves(plots.LEGEND_MAX_TRIALS + 5, sampler)
    feasible, infeasible = plots._intermediate_values_html(study).data
    drawn = [t for t in study.trials if t.intermediate_values and t.state != optuna.trial.TrialState.FAIL]
    bad = {t.number for t in drawn if any(c > 0 for c in t.constraints.values())}
    assert bad and bad == {t.number for t in drawn if t.constraints and t.number % 3 == 0}
    assert {n for n in infeasible.customdata if n is not None} == bad
    assert {n for n in feasible.customdata if n is not None} == {t.number for t in drawn} - bad
    assert infeasible.marker.color == infeasible.line.color == "#CCCCCC" and feasible.marker.color is None


def test_few_trials_keep_optunas_own_figure():
    study = study_with_curves(plots.LEGEND_MAX_TRIALS - 1)  # + the running trial: the threshold
    figure = plots._intermediate_values_html(study)
    optunas = optuna.visualization.plot_intermediate_values(study)
    assert len(figure.data) == plots.LEGEND_MAX_TRIALS
    assert figure.to_plotly_json() == optunas.to_plotly_json()


def test_report_writes_the_one_trace_figure(tmp_path):
    """Through plots.write, as `report` calls it: the HTML page holds one trace of every point."""
    study = study_with_curves(plots.LEGEND_MAX_TRIALS + 5)
    written = plots.write(study, tmp_path)
    page = tmp_path / "plots" / "intermediate_values.html"
    assert page in written and (tmp_path / "plots" / "intermediate_values.png") in written
    html = page.read_text()
    assert html.count("Trial%{customdata}") == 1 and '"name":"Trial' not in html  # no trace per trial
    assert "Intermediate Values Plot" in html


def test_the_static_figure_draws_the_trials_optunas_draws(font_cache):
    """The PNG's one line collection: a line per pruned, complete or running trial with
    intermediate values, as Optuna's matplotlib figure; the failed one left out."""
    pytest.importorskip("matplotlib")
    from matplotlib.collections import LineCollection

    study = study_with_curves(30)
    ax = plots._intermediate_values_png(study)
    (collection,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    drawn = [t for t in study.trials if t.intermediate_values and t.state != optuna.trial.TrialState.FAIL]
    assert len(collection.get_segments()) == len(drawn) == 31  # 30 told + the running one
