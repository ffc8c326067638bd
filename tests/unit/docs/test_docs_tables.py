"""The docs' tables of accepted values against the code's own tables, and the docs' links.

Adding a sampler, pruner, database engine, content type, hyperparameter, serving variable,
launcher command or Makefile target is one code file plus its tests: this module fails until the
row in docs/ says the same (and when a row names what the code no longer has). The tables are
Markdown tables, read by header; cells name values in backticks. Also: README.md stays a front
page (at most 500 lines), and every relative link in README.md, docs/ and benchmarks/RESULTS.md
reaches an existing file and heading.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

# The code's tables this module reads; every import of project code is here.
from core.engines import ENGINES
from core.errors import UserError
from hpo_study.constants import METRIC_KEYS
from hpo_study.pruners import PRUNERS
from hpo_study.samplers import SAMPLERS
from hpo_study.settings import Settings, accepted_keys, parse
from launcher.cli import build_parser
from launcher.constants import METRIC_DEFINITIONS, STUDY_OPTION_HPS
from serving import constants as serving_constants
from serving.media import DECODERS, ENCODERS

pytestmark = pytest.mark.unit

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
DOCS = ROOT / "docs"
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
PAGES = [README, RESULTS, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 500

FENCE = re.compile(r"^\s*```.*?^\s*```[^\n]*$", re.S | re.M)
CODE = re.compile(r"`([^`]+)`")
CELL_SPLIT = re.compile(r"(?<!\\)\|")  # a cell may hold an escaped \|


# --- reading Markdown (by hand: a table is a few lines of pipes; a Markdown library would add a
# dependency and still leave the cells to pick apart)


def prose(text: str) -> str:
    """The text without its fenced code blocks (a table or link inside one is code)."""
    return FENCE.sub("", text)


def tables(page: Path) -> list[tuple[list[str], list[list[str]]]]:
    """Every table of the page: its header cells and its rows' cells."""
    found, block = [], []
    for line in [*prose(page.read_text()).splitlines(), ""]:
        if line.startswith("|"):
            block.append([c.strip() for c in CELL_SPLIT.split(line.strip().strip("|"))])
            continue
        if len(block) >= 2 and set("".join(block[1])) <= set("-: "):
            found.append((block[0], block[2:]))
        block = []
    return found


def table(page: Path, first_header: str) -> list[list[str]]:
    """The rows of the one table of ``page`` whose first header cell is ``first_header``."""
    matches = [rows for header, rows in tables(page) if header[0] == first_header]
    assert len(matches) == 1, f"{page.relative_to(ROOT)}: {len(matches)} tables headed '{first_header}'"
    assert matches[0], f"{page.relative_to(ROOT)}: the table headed '{first_header}' has no rows"
    return matches[0]


def names(cell: str) -> list[str]:
    """The values a cell names: what it has in backticks, up to its first link or remark."""
    return CODE.findall(cell)


def first_column(page: Path, first_header: str) -> list[str]:
    return [name for row in table(page, first_header) for name in names(row[0])]


def assert_same(documented: list[str], code: object, what: str) -> None:
    code_names = sorted(map(str, code))  # type: ignore[call-overload]
    assert len(documented) == len(set(documented)), f"{what}: a row is repeated: {documented}"
    assert sorted(documented) == code_names, (
        f"{what}: the docs list {sorted(documented)}, the code {code_names}: add or remove the row"
    )


# --- hyperparameters, samplers, pruners, engines (docs/hyperparameters.md)

HPS = DOCS / "hyperparameters.md"
DEFAULTS = {f.name.replace("_", "-"): f.default for f in dataclasses.fields(Settings)}


def hp_rows() -> dict[str, list[str]]:
    """key -> its row, for every key a row of the hyperparameter table names."""
    return {key: row for row in table(HPS, "key") for key in names(row[0])}


def test_every_hyperparameter_has_one_row_and_no_row_is_left_over():
    assert_same(first_column(HPS, "key"), accepted_keys(), "docs/hyperparameters.md, hyperparameters")


def shown(value: object) -> str:
    """A default as the table writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_the_documented_defaults_are_the_settings_defaults():
    checked = 0
    for key, row in hp_rows().items():
        cell = row[1]
        if cell.split(" ")[0] == "none":
            assert DEFAULTS[key] is None, f"{key}: documented default none, the code's is {DEFAULTS[key]!r}"
        elif re.fullmatch(r"`[^`]+`", cell):
            assert cell.strip("`") == shown(DEFAULTS[key]), (
                f"{key}: documented {cell}, code {DEFAULTS[key]!r}"
            )
        else:
            continue  # "follows the metric", "from the secret": described, not a value
        checked += 1
    assert checked >= 20, f"only {checked} defaults could be read from docs/hyperparameters.md"


def bound(text: str) -> int:
    power = re.fullmatch(r"(\d+)\^(\d+)(?:-(\d+))?", text)
    if power:
        return int(power[1]) ** int(power[2]) - int(power[3] or 0)
    return int(text)


# Keys whose bounds can only be tried with another key set (grace period > interval).
COMPANIONS = {"heartbeat-interval": {"heartbeat-grace-period": "86400"}, "heartbeat-grace-period": {"heartbeat-interval": "1"}}  # fmt: skip


def accepts(key: str, value: str) -> bool:
    try:
        parse({key: value, **COMPANIONS.get(key, {})})
    except UserError as exc:
        assert key in str(exc), f"{key}={value}: refused for another reason: {exc}"
        return False
    return True


def test_the_documented_ranges_are_the_parsers_ranges():
    checked = 0
    for key, row in hp_rows().items():
        if len(names(row[0])) != 1:
            continue
        integers = re.match(r"(\d+)\.\.([\d^-]+)", row[2])
        if integers:
            low, high = int(integers[1]), bound(integers[2])
            assert accepts(key, str(low)) and accepts(key, str(high)), f"{key}: {low}..{high} not accepted"
            assert not accepts(key, str(low - 1)), f"{key}: {low - 1} accepted, the docs say {low}..{high}"
            assert not accepts(key, str(high + 1)), f"{key}: {high + 1} accepted, the docs say {low}..{high}"
            checked += 1
        characters = re.match(r"(\d+)-(\d+) characters", row[2])
        if characters:
            high = int(characters[2])
            assert accepts(key, "x" * high) and not accepts(key, "x" * (high + 1)), (
                f"{key}: not {high} characters"
            )
            checked += 1
    assert checked >= 8, f"only {checked} ranges could be read from docs/hyperparameters.md"


@pytest.mark.parametrize(
    ("key", "code"),
    [("sampler", SAMPLERS), ("pruner", PRUNERS), ("db-engine", ENGINES), ("objective-metric", METRIC_KEYS)],
)
def test_a_choice_hyperparameter_lists_exactly_the_codes_names(key, code):
    cell = hp_rows()[key][2].split("see [")[0]
    assert_same(names(cell), code, f"docs/hyperparameters.md, '{key}' accepted values")
    assert DEFAULTS[key] is None or shown(DEFAULTS[key]) in code


@pytest.mark.parametrize(("second", "code"), [("sampler", SAMPLERS), ("pruner", PRUNERS)])
def test_the_sampler_and_pruner_tables_list_the_codes_tables(second, code):
    # Both tables start with "name": told apart by their second header cell.
    rows = [rows for head, rows in tables(HPS) if head[:2] == ["name", second]]
    assert len(rows) == 1, f"docs/hyperparameters.md: one table headed 'name | {second}'"
    assert_same([n for row in rows[0] for n in names(row[0])], code, f"docs/hyperparameters.md, {second}s")


def test_the_engine_table_is_the_engine_records():
    rows = table(HPS, "`db-engine`")
    assert_same([names(row[0])[0] for row in rows], ENGINES, "docs/hyperparameters.md, engines")
    for row in rows:
        engine = ENGINES[names(row[0])[0]]
        assert names(row[1]) == [engine.driver], (
            f"{engine.name}: driver {row[1]}, the record's {engine.driver}"
        )
        assert row[2] == str(engine.default_port), (
            f"{engine.name}: port {row[2]}, the record's {engine.default_port}"
        )
        assert names(row[3]) == list(engine.secret_engines), f"{engine.name}: secret engines {row[3]}"


# --- serving (docs/serving.md)

SERVING = DOCS / "serving.md"


def test_the_content_type_tables_are_the_decoders_and_encoders():
    assert_same(first_column(SERVING, "Content-Type"), DECODERS, "docs/serving.md, request Content-Types")
    assert_same(first_column(SERVING, "Accept"), ENCODERS, "docs/serving.md, answer types (Accept)")


ENV_BENCHMARK_ONLY = serving_constants.ENV_BARE_ENDPOINT  # documented with the benchmark


def test_the_serving_variables_table_lists_every_variable_serve_reads_with_its_default():
    variables = {v for k, v in vars(serving_constants).items() if k.startswith("ENV_")} - {ENV_BENCHMARK_ONLY}
    rows = {names(row[0])[0]: row for row in table(SERVING, "environment variable")}
    assert_same(list(rows), variables, "docs/serving.md, environment variables")
    assert ENV_BENCHMARK_ONLY in RESULTS.read_text()
    c = serving_constants
    defaults = {
        c.ENV_MODEL_DIR: c.DEFAULT_MODEL_DIR,
        c.ENV_BIND_TO_PORT: c.DEFAULT_PORT,
        c.ENV_TIMEOUT: c.DEFAULT_TIMEOUT_SECONDS,
        c.ENV_MAX_PAYLOAD_MB: c.DEFAULT_MAX_PAYLOAD_MB,
        c.ENV_PROGRAM: c.DEFAULT_PROGRAM,
        c.ENV_THREADS: c.DEFAULT_THREADS,
        c.ENV_PROXY: c.PROXY_NGINX,
    }
    for variable, default in defaults.items():
        documented = names(rows[variable][1])
        assert documented[:1] == [str(default)], f"{variable}: documented {rows[variable][1]}, code {default}"


# --- the launcher (docs/launcher.md), metric lines, the Makefile (docs/image.md)

LAUNCHER = DOCS / "launcher.md"


def test_the_command_table_lists_the_parsers_commands():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert_same(first_column(LAUNCHER, "command"), commands, "docs/launcher.md, commands")


def test_the_study_options_are_the_launchers_and_each_is_a_hyperparameter():
    sentence = re.search(r"The study options (.*?) mean what the hyperparameters", LAUNCHER.read_text(), re.S)
    assert sentence, "docs/launcher.md: the sentence 'The study options ... mean what the hyperparameters'"
    options = names(sentence[1])
    assert_same(options, ["--study", *(f"--{hp}" for hp in STUDY_OPTION_HPS.values())], "study options")
    assert {o[2:] for o in options} - {"study"} <= set(accepted_keys())


V2_METRIC = re.compile(r'\{"Name": "([^"]+)", "Regex": r"([^"]+)"\}')
V3_METRIC = re.compile(r'MetricDefinition\(name="([^"]+)", regex=r"([^"]+)"\)')


def test_every_metric_definitions_example_is_the_launchers():
    code = [(d["Name"], d["Regex"]) for d in METRIC_DEFINITIONS]
    v2_examples = 0
    for page in PAGES:
        for block in FENCE.findall(page.read_text()):
            v2, v3 = V2_METRIC.findall(block), V3_METRIC.findall(block)
            if v2:
                assert v2 == code, f"{page.relative_to(ROOT)}: metric_definitions differ from the launcher's"
                v2_examples += 1
            assert set(v3) <= set(code), f"{page.relative_to(ROOT)}: a MetricDefinition the jobs do not print"
    assert v2_examples >= 2  # docs/training-job.md and the launcher's side-by-side launch


def test_the_makefile_table_lists_the_makefiles_targets():
    targets = re.findall(r"^([a-z][\w-]*):(?!=)", (ROOT / "Makefile").read_text(), re.M)
    assert_same(first_column(DOCS / "image.md", "target"), set(targets), "docs/image.md, Makefile targets")


# --- the front page and the links


def test_the_readme_is_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move a topic to docs/"
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)", README.read_text()))
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.md")}
    assert pages <= linked, f"docs pages the README does not link: {sorted(pages - linked)}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of the page's headings (a repeated heading gets -1, -2...)."""
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6} (.+)$", prose(page.read_text()), re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_heading(page):
    text = CODE.sub("", prose(page.read_text()))
    links = [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]
    broken = []
    for target in links:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
            broken.append(f"{target}: no heading '{anchor}' in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)
