"""The probe room's records: what a probe is asked to do (:class:`ProbeSettings`, built by
:func:`probe_settings` from a task's protocol with overrides on top) and what it wrote
(:class:`ProbeResult` in ``RUN/probes/<task>-<kind>.json``, :class:`SynthMotionResult` in
``RUN/probes/synth-motion-<task>[-<protocol>].json``).

This module alone spells these files' keys. The CLI, the study runner, ``compare`` and the
tests pass and receive the typed objects; :func:`read_result` is the one reader (tolerant of
hand-written files: only a numeric ``top1`` is required) and :data:`RESULT_FORMAT` migrates
older files in one place. Format 1 is every result written before the format was versioned
(jepactl 0.1.0); format 2 adds ``format_version`` and ``settings`` (the :class:`ProbeSettings`
the probe was trained with, rebuilt from ``hparams`` for format-1 files).

Imports no torch: ``compare`` reads results without it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, get_args

from jepactl.errors import ConfigError
from jepactl.features.benchmarks import ProbeKind
from jepactl.features.token_batches import SKLEARN_FEATURES
from jepactl.formats import Format, FormatError
from jepactl.utils import atomic_write_text, json_ready

if TYPE_CHECKING:
    from jepactl.features.benchmarks import Benchmark

#: The lr x wd grid of ``--sweep``: the reference's UCF-101 sweep (``eval_ucf101_sweep.py``).
DEFAULT_SWEEP_LRS: tuple[float, ...] = (1e-3, 3e-4, 1e-4)
DEFAULT_SWEEP_WDS: tuple[float, ...] = (0.05, 0.01, 0.001)

#: Biases, norm weights and query/cls tokens are never decayed (recorded in ``hparams``).
NO_DECAY = "biases, norm weights and query/cls tokens"

PROBE_HEADS: tuple[str, ...] = get_args(ProbeKind)


# --------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeSettings:
    """Everything a probe is asked to do, checked once (:func:`~jepactl.probe.train.
    train_probe` takes one; a result records the one it was trained with).

    ``probe``: a head of :data:`PROBE_HEADS`; ``epochs``, ``lr``, ``wd``, ``batch_size``,
    ``schedule`` (``cosine`` to zero per step, or ``constant``) after ``warmup_epochs`` of
    linear warm-up: AdamW on the head. ``seed`` seeds its init, the shuffles and the holdout.
    ``sweep``: the ``sweep_lrs x sweep_wds`` grid at once, selected on a ``holdout`` fraction
    of the training clips. ``sklearn``: (linear only) scikit-learn logistic regression
    (``C = sklearn_c``) on ``sklearn_features`` (``mean`` tokens or ``flat``, concatenated).
    ``probe_kwargs``: extra head arguments (``depth``, ``num_heads``...). ``progress``: a
    per-epoch bar (how it runs, not what: never recorded).
    """

    probe: str = "attentive"
    epochs: int = 50
    lr: float = 1e-3
    wd: float = 0.01
    batch_size: int = 16
    seed: int = 0
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    sweep: bool = False
    sweep_lrs: tuple[float, ...] = DEFAULT_SWEEP_LRS
    sweep_wds: tuple[float, ...] = DEFAULT_SWEEP_WDS
    holdout: float = 0.1
    sklearn: bool = False
    sklearn_c: float = 1.0
    sklearn_max_iter: int = 1000
    sklearn_features: str = "mean"
    probe_kwargs: Mapping[str, Any] = field(default_factory=dict)
    progress: bool = field(default=True, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sweep_lrs", tuple(float(x) for x in self.sweep_lrs))
        object.__setattr__(self, "sweep_wds", tuple(float(x) for x in self.sweep_wds))
        object.__setattr__(self, "probe_kwargs", dict(self.probe_kwargs))
        if self.probe not in PROBE_HEADS:
            raise ConfigError(f"unknown probe {self.probe!r}; valid: {', '.join(PROBE_HEADS)}")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.sklearn and self.probe != "linear":
            raise ConfigError("sklearn=True is the linear probe only (probe='linear')")
        if self.sklearn_features not in SKLEARN_FEATURES:
            raise ConfigError(f"sklearn_features must be one of {SKLEARN_FEATURES}")
        if self.sklearn and self.sweep:
            raise ConfigError("the sweep trains torch heads; it does not combine with sklearn=True")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(
                f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}"
            )
        if self.sweep and (not self.sweep_lrs or not self.sweep_wds):
            raise ConfigError("the sweep needs at least one lr and one wd")

    @property
    def eval_batch_size(self) -> int:
        return max(self.batch_size, 64)  # no gradients, so larger batches

    def replace(self, **changes: Any) -> ProbeSettings:
        """These settings with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    def hparams(self, lr: float | None, wd: float | None) -> dict[str, Any]:
        """The result's ``hparams``: what was trained, with the lr/wd actually used."""
        if self.sklearn:
            inputs = "token means" if self.sklearn_features == "mean" else "concatenated tokens"
            return {
                "impl": "sklearn",
                "model": f"LogisticRegression(lbfgs) on standardised {inputs}",
                "features": self.sklearn_features,
                "C": self.sklearn_c,
                "max_iter": self.sklearn_max_iter,
            }
        return {
            "impl": "torch",
            "epochs": self.epochs,
            "lr": lr,
            "wd": wd,
            "batch_size": self.batch_size,
            "schedule": self.schedule,
            "warmup_epochs": self.warmup_epochs,
            "optimizer": "AdamW",
            "no_weight_decay": NO_DECAY,
            "probe_kwargs": dict(self.probe_kwargs),
        }

    def to_json(self) -> dict[str, Any]:
        """The recorded form (``progress`` left out: it is how a probe ran, not what)."""
        out = dataclasses.asdict(self)
        del out["progress"]
        out["sweep_lrs"], out["sweep_wds"] = list(self.sweep_lrs), list(self.sweep_wds)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProbeSettings:
        """Settings as :meth:`to_json` wrote them (keys it does not know are refused)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"progress"}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown probe settings {', '.join(unknown)}")
        return cls(**dict(data))


def probe_settings(
    bench: Benchmark,
    probe: str | None = None,
    sklearn: bool | None = None,
    **overrides: Any,
) -> ProbeSettings:
    """The one way probe settings are made: ``bench``'s protocol (its default probe, paper
    Table 2 or the synthetic motion protocol), with ``overrides`` on top (``None`` means "not
    given"). Another head than the task's is a torch head unless ``sklearn`` says otherwise.
    Serves the CLI, the study runner, ``synth-motion`` and the tests."""
    kind = probe or bench.probe
    use_sklearn = bench.sklearn_features is not None and kind == bench.probe
    base: dict[str, Any] = {
        "probe": kind,
        "epochs": bench.epochs,
        "lr": bench.lr,
        "wd": bench.wd,
        "batch_size": bench.batch_size,
        "schedule": bench.schedule,
        "sklearn": use_sklearn if sklearn is None else sklearn,
        "sklearn_features": bench.sklearn_features or "mean",
    }
    base.update({k: v for k, v in overrides.items() if v is not None})
    return ProbeSettings(**base)


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


def _settings_from_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Format 1 -> 2: the settings a format-1 result was trained with, from its ``hparams``,
    ``probe``, ``seed`` and ``sweep`` (none where it records no ``hparams``)."""
    hp = data.get("hparams")
    if not isinstance(hp, dict) or "settings" in data:
        return data
    s: dict[str, Any] = {"seed": data.get("seed", 0), "sweep": bool(data.get("sweep"))}
    if data.get("probe") in PROBE_HEADS:
        s["probe"] = data["probe"]
    if hp.get("impl") == "sklearn":
        s.update(sklearn=True, sklearn_c=hp.get("C", 1.0))
        s.update(sklearn_max_iter=hp.get("max_iter", 1000))
        s.update(sklearn_features=hp.get("features", "mean"))
    else:
        keys = ("epochs", "lr", "wd", "batch_size", "schedule", "warmup_epochs", "probe_kwargs")
        s.update({k: hp[k] for k in keys if hp.get(k) is not None})
    sweep = data.get("sweep")
    if isinstance(sweep, dict) and isinstance(sweep.get("grid"), list):
        grid = [g for g in sweep["grid"] if isinstance(g, dict)]
        s["sweep_lrs"] = sorted({g["lr"] for g in grid if "lr" in g})
        s["sweep_wds"] = sorted({g["wd"] for g in grid if "wd" in g})
        s["holdout"] = sweep.get("holdout_fraction", 0.1)
    if hp.get("impl") != "sklearn" and "epochs" not in hp:
        return data  # too little recorded to say how it was trained
    try:
        ProbeSettings(**s)
    except (ConfigError, TypeError, ValueError):
        return data  # a hand-edited or foreign file: its settings stay unknown
    return {**data, "settings": s}


#: ``RUN/probes/*.json``: format 2 records its version and its settings.
RESULT_FORMAT = Format("probe result", 2, migrations={1: _settings_from_v1})


_R = TypeVar("_R", bound="ProbeResult")


@dataclass(frozen=True)
class CheckpointIdentity:
    """The checkpoint a probed cache was encoded from (``-1``/``""`` where not recorded)."""

    path: str = ""
    step: int | None = None
    sha256: str = ""


@dataclass(frozen=True)
class ProbeResult:
    """One probe's result (accuracies in percent), as written to ``RUN/probes/<task>-<kind>
    .json``. ``views``, ``protocol``, ``caches`` and ``cache_mode`` are per split (``train``,
    ``val``); ``protocol`` is each cache's protocol (:mod:`jepactl.features.cache`); ``sweep``
    is the selection record of :func:`jepactl.probe.select.select`. Fields a hand-written or
    older file leaves out are ``None``."""

    bench: str
    top1: float
    probe: str = "unknown"
    top5: float | None = None
    majority: float | None = None
    chance: float | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_train_examples: int | None = None
    views: Mapping[str, int] | None = None
    num_classes: int | None = None
    hparams: Mapping[str, Any] = field(default_factory=dict)
    checkpoint: CheckpointIdentity | None = None
    weights: str = "unknown"
    pooling: str | None = None
    protocol: Mapping[str, Any] | None = None
    caches: Any = None
    seed: int = 0
    device: str | None = None
    precision: str | None = None
    cache_mode: Mapping[str, str] | None = None
    train_loss: float | None = None
    sweep: Mapping[str, Any] | None = None
    wall_time_s: float | None = None
    settings: ProbeSettings | None = None
    profile: str = "paper"

    # -- what compare and the summaries ask --------------------------------------------
    @property
    def sklearn(self) -> bool:
        """Whether scikit-learn's logistic regression (not a torch head) was trained."""
        if self.settings is not None:
            return self.settings.sklearn
        return self.hparams.get("impl") == "sklearn"

    @property
    def epochs(self) -> int | None:
        """The head's training epochs (``None`` for scikit-learn or where not recorded)."""
        if self.sklearn:
            return None
        epochs = self.settings.epochs if self.settings is not None else self.hparams.get("epochs")
        return epochs if isinstance(epochs, int) else None

    @property
    def kind(self) -> str:
        """What kind of probe produced it: its head, ``-sklearn`` for the scikit-learn linear
        probe, ``-sweep`` when the lr x wd sweep chose the hyper-parameters; e.g.
        ``attentive``, ``linear-sklearn``, ``attentive-sweep`` (see
        :data:`jepactl.rundir.PROBE_KINDS`)."""
        kind = self.probe or "unknown"
        if self.sklearn:
            kind += "-sklearn"
        if self.sweep:
            kind += "-sweep"
        return kind

    @property
    def step(self) -> int | None:
        """The training step of the checkpoint probed (``None`` where not recorded)."""
        return self.checkpoint.step if self.checkpoint is not None else None

    @property
    def limit(self) -> int | None:
        """The ``--limit N`` the caches were cut to (the larger split's), or ``None``."""
        splits = self.protocol.values() if isinstance(self.protocol, Mapping) else ()
        limits = [p.get("limit") for p in splits if isinstance(p, Mapping)]
        found = [x for x in limits if isinstance(x, int) and not isinstance(x, bool)]
        return max(found) if found else None

    # -- the file ----------------------------------------------------------------------
    def with_profile(self, profile: str) -> ProbeResult:
        return dataclasses.replace(self, profile=profile)

    def to_json(self) -> dict[str, Any]:
        """The file's JSON object (current format)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "settings":
                value = value.to_json() if value is not None else None
            elif f.name == "checkpoint" and value is not None:
                value = dataclasses.asdict(value)
            out[f.name] = json_ready(value)
        return RESULT_FORMAT.stamp(out)

    @classmethod
    def from_json(cls: type[_R], data: Mapping[str, Any], where: str | Path) -> _R:
        """A result from its JSON object, migrated to the current format; a
        :class:`~jepactl.formats.FormatError` (one line) when it is unusable."""
        return cls(**cls._fields_from(RESULT_FORMAT.upgrade(data, where), where))

    @classmethod
    def _fields_from(cls, d: Mapping[str, Any], where: str | Path) -> dict[str, Any]:
        """The constructor's arguments from a current-format JSON object."""
        top1 = d.get("top1")
        if isinstance(top1, bool) or not isinstance(top1, int | float) or not math.isfinite(top1):
            raise FormatError(f"no numeric 'top1' (got {top1!r})")
        kwargs = _known(ProbeResult, d)
        kwargs["top1"] = float(top1)
        kwargs["bench"] = d.get("bench") if isinstance(d.get("bench"), str) else ""
        kwargs["weights"] = d.get("weights") if isinstance(d.get("weights"), str) else "unknown"
        kwargs["profile"] = "reference" if d.get("profile") == "reference" else "paper"
        kwargs["probe"] = d.get("probe") if isinstance(d.get("probe"), str) else "unknown"
        kwargs["hparams"] = d.get("hparams") if isinstance(d.get("hparams"), dict) else {}
        kwargs["checkpoint"] = _identity(d.get("checkpoint"))
        kwargs["settings"] = _settings(d.get("settings"), where)
        return kwargs


@dataclass(frozen=True)
class SeedScore:
    """One data seed of a synth-motion result."""

    seed: int
    top1: float
    top5: float | None = None
    n_train: int | None = None
    n_val: int | None = None
    train_loss: float | None = None
    dataset: str = ""
    wall_time_s: float | None = None


@dataclass(frozen=True)
class SynthMotionResult(ProbeResult):
    """A ``jepactl synth-motion`` result: the first seed's probe result with ``top1``/``top5``
    the means over ``n_seeds`` data seeds (``top1_std``, ``top1_ci95`` beside them, each seed
    in ``per_seed``), the motion ``task`` and its ``classes``, the ``protocol_name`` and the
    clip generator's version."""

    task: str = ""
    classes: tuple[str, ...] = ()
    protocol_name: str = ""
    top1_std: float | None = None
    top1_ci95: tuple[float, float] | None = None
    n_seeds: int = 1
    seeds: tuple[int, ...] = (0,)
    per_seed: tuple[SeedScore, ...] = ()
    generator_version: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["per_seed"] = [dataclasses.asdict(s) for s in self.per_seed]
        return out

    @classmethod
    def _fields_from(cls, d: Mapping[str, Any], where: str | Path) -> dict[str, Any]:
        own = {k: d[k] for k in _field_names(cls) - _field_names(ProbeResult) if k in d}
        own["classes"] = tuple(own.get("classes") or ())
        own["seeds"] = tuple(own.get("seeds") or (0,))
        ci = own.get("top1_ci95")
        own["top1_ci95"] = (float(ci[0]), float(ci[1])) if isinstance(ci, list | tuple) else None
        rows = own.get("per_seed") or []
        own["per_seed"] = tuple(SeedScore(**_known(SeedScore, r)) for r in rows)
        return {**super()._fields_from(d, where), **own}


def read_result(path: Path) -> ProbeResult:
    """The result in ``path`` (a :class:`SynthMotionResult` where it is one); a one-line
    :class:`~jepactl.formats.FormatError` when the file is unusable (the message says why;
    a :class:`~jepactl.formats.NewerFormatError` for one from a newer jepactl)."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise FormatError(f"invalid JSON ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{type(exc).__name__}: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise FormatError(f"not a JSON object (a {type(data).__name__})")
    return result_from_json(data, path)


def result_from_json(data: Mapping[str, Any], where: str | Path) -> ProbeResult:
    """:func:`read_result` on a parsed object (a synth-motion result where it has any of that
    record's own fields)."""
    if any(name in data for name in _field_names(SynthMotionResult) - _field_names(ProbeResult)):
        return SynthMotionResult.from_json(data, where)
    return ProbeResult.from_json(data, where)


def write_result_file(path: Path, result: ProbeResult) -> None:
    """Atomically write ``result`` to ``path`` (its directory made when missing)."""
    atomic_write_text(path, json.dumps(result.to_json(), indent=2) + "\n")


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that are fields of ``cls`` (``None`` left to the default)."""
    return {k: v for k, v in data.items() if k in _field_names(cls) and v is not None}


def _identity(raw: Any) -> CheckpointIdentity | None:
    if not isinstance(raw, Mapping):
        return None
    step = raw.get("step")
    return CheckpointIdentity(
        path=str(raw.get("path") or ""),
        step=step if isinstance(step, int) and not isinstance(step, bool) else None,
        sha256=str(raw.get("sha256") or ""),
    )


def _settings(raw: Any, where: str | Path) -> ProbeSettings | None:
    if not isinstance(raw, Mapping):
        return None
    try:
        return ProbeSettings.from_json(raw)
    except (ConfigError, TypeError) as exc:
        raise FormatError(f"{where}: settings: {exc}") from None


__all__: Sequence[str] = [
    "DEFAULT_SWEEP_LRS", "DEFAULT_SWEEP_WDS", "NO_DECAY", "PROBE_HEADS", "RESULT_FORMAT",
    "CheckpointIdentity", "ProbeResult", "ProbeSettings", "SeedScore", "SynthMotionResult",
    "probe_settings", "read_result", "result_from_json", "write_result_file",
]  # fmt: skip
