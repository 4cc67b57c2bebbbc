"""Claims and checks from `experiments/<paper>/paper.yaml`, the measurements a pipeline makes, and the verdicts.

paper.yaml holds two lists in one format (id, description, source, paper value, criterion, reason):
  claims   the paper's statements, judged only at scales that run on real data (never at scale=smoke)
  checks   self-checks of the tool (closed forms, calibration, reload gaps, attack success rates, relative
           distances): judged at every scale, counted apart from the claims
A revised criterion keeps its old text under `revisions` with the reason for the change.

A criterion is one of
    ">= X", "<= X", "> X", "< X"       compare the measurement with a number
    "within D"                          |measured - paper| <= D
    "> claim:ID", "< claim:ID"          compare with another claim's (or check's) measurement
A measurement may carry an interval (a Monte Carlo rate's 95% Clopper-Pearson interval carried through, or a
seed sweep's 95% t-interval of the mean). The verdict is
    reproduced     the criterion holds on the whole interval (on the value, when there is none)
    deviates       it fails on the whole interval
    inconclusive   the interval straddles the criterion, or the effect needed to judge is absent (the pipeline
                   says so: e.g. no mistakes to condition on, mu = 0)
    not_run        nothing was measured; the note says why
Every claim needs exactly one measurement from the pipeline and every measurement a claim: a typo is an error.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from advx.errors import ConfigError, first_line
from advx.resources import experiments_dir

STATUSES = ("reproduced", "deviates", "inconclusive", "not_run")
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
FIELDS = ("id", "description", "source", "paper", "criterion", "reason")


@dataclass
class Measurement:
    """What a pipeline measured for one claim. `status` is set only when the pipeline itself decides (inconclusive:
    the effect needed to judge is absent; not_run: nothing measured); `low` / `high` bound the value (95%)."""

    value: float | None
    note: str = ""  # how it was measured, or why it was not
    status: str | None = None
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if self.status is None and self.value is None:
            self.status = "not_run"
        if self.status not in (None, "inconclusive", "not_run"):
            raise ValueError(f"a measurement may only be marked inconclusive or not_run, not {self.status!r}")
        if self.status == "not_run" and not self.note:
            raise ValueError("a measurement that was not run needs its reason in `note`")


def inconclusive(note: str, value: float | None = None) -> Measurement:
    """A measurement that cannot be judged: the effect it needs is absent (say which in `note`)."""
    return Measurement(value, note, status="inconclusive")


def not_run(reason: str) -> Measurement:
    return Measurement(None, reason, status="not_run")


@dataclass
class Outcome:
    """What a paper's pipeline hands to the report: measurements by claim or check id, figures, extra tables."""

    measurements: dict[str, Measurement]
    figures: list[str]
    tables: list[tuple[str, str]] = field(default_factory=list)  # (heading, markdown table) sections


@dataclass
class Claim:
    """One claim or check of paper.yaml and, once settled, its measurement and verdict."""

    id: str
    description: str
    source: str
    paper: float | None
    criterion: str
    reason: str
    kind: str = "claim"  # claim | check
    revisions: list[dict] = field(default_factory=list)  # earlier criteria: {criterion, reason, why_changed}
    measured: float | None = None
    low: float | None = None  # the interval the verdict was judged on
    high: float | None = None
    note: str = ""
    status: str = "not_run"
    runs: list[float] = field(default_factory=list)  # per-seed values of a sweep
    passes: int | None = None  # seeds whose own value meets the criterion


def load_claims(paper: str, root: Path | None = None) -> tuple[dict, list[Claim]]:
    """The paper's metadata and its claims then checks, from `<experiments>/<paper>/paper.yaml`."""
    path = (root or experiments_dir()) / paper / "paper.yaml"
    if not path.is_file():
        raise ConfigError(f"no claims for paper {paper!r}: {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
        entries = [(kind, entry) for kind in ("claims", "checks") for entry in data.pop(kind, None) or []]
        claims = [Claim(**{k: entry[k] for k in FIELDS}, kind=kind[:-1], revisions=entry.get("revisions") or [])
                  for kind, entry in entries]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(f"cannot read {path}: {first_line(error)}") from None  # a hand-edited or damaged file
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: duplicate ids {sorted({i for i in ids if ids.count(i) > 1})}")
    for claim in claims:
        parse_criterion(claim)
    return data, claims


def parse_criterion(claim: Claim) -> tuple[str, float | str]:
    """(operator, number or referenced id) of a claim's criterion; a malformed one is a ConfigError."""
    op, _, operand = claim.criterion.strip().partition(" ")
    if op == "within":
        if claim.paper is None:
            raise ConfigError(f"claim {claim.id}: 'within' needs a paper value")
        return op, _number(claim, operand)
    if op not in COMPARISONS:
        raise ConfigError(f"claim {claim.id}: unknown criterion {claim.criterion!r}")
    operand = operand.strip()
    return (op, operand.removeprefix("claim:")) if operand.startswith("claim:") else (op, _number(claim, operand))


def _number(claim: Claim, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"claim {claim.id}: criterion {claim.criterion!r} needs a number") from None


def _bounds(claim: Claim) -> tuple[float, float]:
    """The interval a measured claim is judged on: its own, or the value at both ends."""
    return (claim.measured if claim.low is None else claim.low, claim.measured if claim.high is None else claim.high)


def judge(claim: Claim, others: dict[str, Claim]) -> tuple[str, str]:
    """The verdict on `claim` (its measured value and interval set) and a note when it needs one."""
    if claim.measured is None:
        return "not_run", ""
    low, high = _bounds(claim)
    op, operand = parse_criterion(claim)
    if op == "within":
        holds = [abs(v - claim.paper) <= operand for v in (low, high)]
        # |v - paper| <= D on both ends holds on the whole interval; it fails everywhere only if the interval
        # lies entirely on one side outside the band
        if all(holds):
            return "reproduced", ""
        outside = high < claim.paper - operand or low > claim.paper + operand
        return ("deviates", "") if outside else ("inconclusive", "the interval straddles the criterion")
    if isinstance(operand, str):
        reference = others.get(operand)
        if reference is None:
            raise ConfigError(f"claim {claim.id}: criterion refers to unknown claim {operand!r}")
        if reference.measured is None:
            return "not_run", f"needs {operand}, which was not measured"
        ref_low, ref_high = _bounds(reference)
    else:
        ref_low = ref_high = operand
    compare = COMPARISONS[op]
    # the criterion must hold for every value in the interval against every value of the reference's
    if op in (">=", ">"):
        best, worst = compare(high, ref_low), compare(low, ref_high)
    else:
        best, worst = compare(low, ref_high), compare(high, ref_low)
    if worst:
        return "reproduced", ""
    if not best:
        return "deviates", ""
    return "inconclusive", "the interval straddles the criterion"


def settle(claims: list[Claim], measurements: dict[str, Measurement], *, verdicts: bool = True,
           unjudged_note: str = "") -> list[Claim]:
    """Attach one measurement to every claim and judge it. With `verdicts` False (scale=smoke) claims of the paper
    are left `inconclusive` with `unjudged_note`; checks are judged regardless."""
    ids = {c.id for c in claims}
    unknown, missing = sorted(set(measurements) - ids), sorted(ids - set(measurements))
    if unknown or missing:
        raise ConfigError("the pipeline's measurements and paper.yaml disagree: "
                          + "; ".join(part for part in (f"measured but not in paper.yaml: {unknown}" if unknown else "",
                                                        f"in paper.yaml but not measured: {missing}" if missing else "")
                                      if part))
    for claim in claims:
        found = measurements[claim.id]
        claim.measured, claim.note, claim.low, claim.high = found.value, found.note, found.low, found.high
    by_id = {c.id: c for c in claims}
    for claim in claims:
        found = measurements[claim.id]
        if found.status is not None:
            claim.status = found.status
            continue
        if claim.kind == "claim" and not verdicts:
            claim.status = "inconclusive"
            claim.note = "; ".join(part for part in (claim.note, unjudged_note) if part)
            continue
        claim.status, extra = judge(claim, by_id)
        if extra:
            claim.note = "; ".join(part for part in (claim.note, extra) if part)
    return claims


def counts(claims: list[Claim], kind: str) -> dict[str, int]:
    """How many claims (or checks) have each status."""
    return {s: sum(c.status == s for c in claims if c.kind == kind) for s in STATUSES}


def clopper_pearson(errors: int, samples: int, level: float = 0.95) -> tuple[float, float]:
    """The exact two-sided `level` interval of a binomial rate errors / samples (Clopper and Pearson 1934)."""
    from scipy import stats

    tail = (1 - level) / 2
    low = 0.0 if errors == 0 else float(stats.beta.ppf(tail, errors, samples - errors + 1))
    high = 1.0 if errors == samples else float(stats.beta.ppf(1 - tail, errors + 1, samples - errors))
    return low, high


def rate(errors: int, samples: int, note: str = "") -> Measurement:
    """A Monte Carlo rate with its 95% Clopper-Pearson interval, which the verdict is judged on."""
    low, high = clopper_pearson(errors, samples)
    return Measurement(errors / samples, note or f"{errors} of {samples} samples", low=low, high=high)


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and the two-sided `level` Student-t interval of the mean of `values` (a point for one value)."""
    from scipy import stats

    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, mean, mean
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half
