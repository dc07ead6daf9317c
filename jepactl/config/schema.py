"""The recipe schema: the typed sections a recipe is validated against, and what they name.

One dataclass per section (:class:`ModelConfig`, :class:`DataConfig`, :class:`OptimConfig`,
:class:`ObjectiveConfig`, :class:`TrainConfig`, :class:`MonitorConfig`,
:class:`TrackingConfig`) under :class:`Recipe`, the dataset aliases every dataset name goes
through (:func:`canonical_dataset`), and the settings a resumed run may change
(:data:`RUNTIME_KEYS`). Cut from :mod:`jepactl.config` here because this is the data the
other steps (loading, validation) work on, and what most of the package imports; it depends on
nothing of the project. :mod:`jepactl.config` re-exports every name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

# --------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------


@dataclass
class PaperRef:
    """Where a recipe's numbers appear in the paper."""

    table: str = ""
    row: str = ""


@dataclass
class ModelConfig:
    """Encoder and predictor (paper Table 1)."""

    preset: str = "base"  # encoder size, see jepactl.models.ENCODER_PRESETS
    patch_size: int = 16
    tubelet: int = 2
    rope_theta: float = 10000.0
    drop_path: float = 0.0
    # V-JEPA 2.1 "deep supervision": output the concatenation of several blocks, each with its
    # own LayerNorm (blocks 3, 6, 9, 12 for ViT-B when `deep_supervision_blocks` is empty).
    deep_supervision: bool = False
    deep_supervision_blocks: list[int] = field(default_factory=list)
    pred_depth: int = 8
    pred_dim: int = 256
    pred_heads: int = 8
    pred_embed: Literal["linear", "mlp"] = "linear"
    # The reference shares one mask token between all mask groups; >1 gives each group its own.
    pred_mask_tokens: int = 1
    # Initialise the student (and teacher) encoder from this checkpoint file before step 0
    # (`pretrain --init-from`; any layout of jepactl.models.upstream, docs/checkpoints.md).
    init_from: str = ""
    # What public checkpoints' encoders need to be reproduced exactly (docs/checkpoints.md);
    # `--init-from` sets them from the file. positions: rope (ours), rope-vjepa2 (V-JEPA 2's
    # frequency layout) or sincos (V-JEPA 1's frozen table on the grid `pos_grid` [t, h, w]);
    # rope_grid: V-JEPA 2.1's interpolate_rope grid (0: off); k_bias: a trained key bias.
    positions: Literal["rope", "rope-vjepa2", "sincos"] = "rope"
    pos_grid: list[int] = field(default_factory=list)
    rope_grid: int = 0
    k_bias: bool = False


@dataclass
class SynthDataConfig:
    """The built-in procedural source (no download)."""

    length: int = 1_000_000
    min_objects: int = 1
    max_objects: int = 3


#: Other names of datasets, accepted wherever a dataset is named (``data.source``, the keys of
#: ``data.mix`` and ``data.roots``, ``--root``, ``data check``) and read as the name they map
#: to: the one the evaluation tasks use.
DATASET_ALIASES: dict[str, str] = {"imagenet100": "in100"}


def canonical_dataset(name: str) -> str:
    """A dataset's name in jepactl's one vocabulary (``imagenet100`` -> ``in100``)."""
    return DATASET_ALIASES.get(name, name)


def canonical_data_names(config: Any) -> Any:
    """A copy of a raw recipe dict (a run's saved ``config.yaml``) with the dataset aliases of
    ``data.source``, ``data.mix`` and ``data.roots`` replaced by their names, so a run saved
    with ``imagenet100`` compares equal to the same recipe saved with ``in100``."""
    if not isinstance(config, dict) or not isinstance(config.get("data"), dict):
        return config
    data = dict(config["data"])
    if isinstance(data.get("source"), str):
        data["source"] = canonical_dataset(data["source"])
    for key in ("mix", "roots"):
        if isinstance(data.get(key), dict):
            data[key] = {canonical_dataset(str(k)): v for k, v in data[key].items()}
    return {**config, "data": data}


@dataclass
class DataConfig:
    """Where clips come from and how they are cut (pretraining).

    ``source``: ``synth`` (built-in), a dataset reader (``ucf101``, ``ssv2``, ``diving48``,
    ``in100`` (alias ``imagenet100``), ``csv``, ``folders``; see ``docs/data.md``), or
    ``mixed``: a mixture of readers with the weights in ``mix``, sampled with replacement.
    Dataset roots come from ``roots.<name>`` (for ``csv``: the index file), else, for the
    four official datasets,
    ``$JEPACTL_DATA/<name>``.
    """

    source: str = "synth"
    roots: dict[str, str] = field(default_factory=dict)
    mix: dict[str, float] = field(default_factory=dict)
    split: str = "train"
    fold: int = 1  # UCF-101 split list (1, 2 or 3)
    num_frames: int = 16
    frame_stride: int = 2
    crop: int = 224
    decode_short_side: int = 256  # frames are resized to this short side while decoding
    scale: list[float] = field(default_factory=lambda: [0.3, 1.0])  # random resized crop
    ratio: list[float] = field(default_factory=lambda: [0.75, 1.35])
    flip: float = 0.5
    # Images: one-frame clips through the tubelet-1 path (paper App. D), or `repeat`ed to
    # num_frames static frames (what the reference code does).
    images: Literal["frame", "repeat"] = "frame"
    max_bad_fraction: float = 0.01  # stop when more of the samples drawn so far fail to decode
    batch_size: int = 32  # global, split evenly over ranks
    num_workers: int = 2
    synth: SynthDataConfig = field(default_factory=SynthDataConfig)


@dataclass
class OptimConfig:
    """AdamW, per-step warm-up then cosine (or constant, as the reference code really runs)."""

    epochs: int = 100
    iters_per_epoch: int = 300
    lr: float = 6e-4
    start_lr: float = 1e-4
    final_lr: float = 1e-6
    warmup_epochs: float = 1.0
    schedule: Literal["cosine", "constant"] = "cosine"
    weight_decay: float = 0.04
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    clip_grad: float | None = None
    ema: float = 0.99925


@dataclass
class ObjectiveConfig:
    """Loss terms, by registry name, each with its own parameters (``weight`` and friends).

    ``teacher: none`` is the paper's "EMA disabled" (UCF-101 kinematic and SIGReg-no-EMA
    runs): no EMA encoder exists, the targets are the online student's full-clip output, with a
    stop-gradient (paper Eq. 1) unless ``stopgrad_targets: false`` (the reference code, where
    gradient flows through both branches). Evaluation then uses the student, the only encoder
    that trained.
    """

    teacher: Literal["ema", "none"] = "ema"
    stopgrad_targets: bool = True
    # ``name: {}`` (or an empty value) uses the term's defaults; ``name: false`` removes a term
    # that a ``_base_`` recipe added.
    terms: dict[str, dict[str, Any] | bool | None] = field(default_factory=dict)


@dataclass
class TrainConfig:
    seed: int = 0
    # auto: bf16 autocast on CUDA, fp32 on CPU, where a bf16-autocast step measured no faster
    # than fp32 with AVX-512 bf16 and 12.9x slower without it (docs/performance.md).
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    device: str = "auto"  # auto | cpu | cuda
    log_every: int = 10
    checkpoint_every: int = 300  # steps between writes of checkpoints/latest.pt
    snapshot_every: int = 0  # steps between kept snapshots (0 = none)
    # recompute the student's and predictor's block activations in the backward pass: the
    # same losses and gradients, less activation memory, about one more forward per step
    activation_checkpointing: bool = False
    # torch.compile the step's forward and backward (student, predictor, teacher, terms):
    # true, false, or auto = on for CUDA when every mask group has `lengths: fixed` (one
    # shape, one compile); the same losses either way (docs/performance.md)
    compile: bool | Literal["auto"] = "auto"


@dataclass
class MonitorConfig:
    """What pretraining watches, to show whether the encoder is learning or collapsing
    (``docs/monitoring.md``). Every ``every`` steps, and once at step 0 (the untrained
    control), the encoder evaluation would use (the EMA teacher, else the student) encodes a
    fixed labelled set of ``clips`` synthetic clips of ``task`` at the recipe's frames and crop
    (the first half to fit, the second to score). ``metrics.jsonl`` gets RankMe, per-dimension
    std and mean pairwise cosine of the ``pool``-pooled features, the accuracy of a k-NN
    (``knn_k`` neighbours, cosine) and of a logistic regression on them, and, at step 0, the
    same probes on raw pixels. A warning is printed when RankMe falls below ``min_rank`` or the
    normalised std below ``min_std`` (dimensional collapse). It never changes what trains.
    """

    every: int = 0  # steps between checks; 0 = off
    task: str = "shapes"
    clips: int = 256
    pool: Literal["mean", "space2x2"] = "mean"
    knn_k: int = 20
    min_rank: float = 2.0
    min_std: float = 0.05
    seed: int = 0  # of the labelled set, independent of train.seed


#: The metric sinks ``tracking.sinks`` may name (``jepactl.train.sinks.SINKS`` opens them).
SinkName = Literal["tensorboard", "wandb"]


@dataclass
class TrackingConfig:
    """Where pretraining's metrics go besides ``RUN/metrics.jsonl``, which stays the record
    (``docs/tracking.md``). Each sink gets a copy of every line written there, on rank 0:
    ``tensorboard`` writes event files to ``RUN/tensorboard/``, ``wandb`` logs a Weights &
    Biases run in project ``wandb_project`` (``WANDB_MODE=offline`` needs no network).
    """

    sinks: list[SinkName] = field(default_factory=list)
    wandb_project: str = "jepactl"


@dataclass
class Recipe:
    display_name: str = ""
    # "paper" (the method as written) or "reference" (the paper's code as run: every reference
    # switch set by jepactl.profiles when the recipe is loaded; recorded so the run says so)
    profile: Literal["paper", "reference"] = "paper"
    description: str = ""
    paper: PaperRef = field(default_factory=PaperRef)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    masks: list[dict[str, Any]] = field(default_factory=list)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def autocast_bf16(precision: str, device_type: str) -> bool:
    """Whether ``train.precision`` means bf16 autocast on this kind of device."""
    return precision == "bf16" or (precision == "auto" and device_type == "cuda")


#: Settings of how a run executes rather than what it computes: a resumed run may change them
#: (another machine, more workers) without --force.
RUNTIME_KEYS = frozenset(
    {
        "data.num_workers",
        "train.device",
        "train.log_every",
        "train.checkpoint_every",
        "train.snapshot_every",
        "train.activation_checkpointing",
        "train.compile",
        # watching a run never changes what it trains
        *(f"monitor.{f.name}" for f in dataclasses.fields(MonitorConfig)),
        # nor does where its metrics are copied to
        *(f"tracking.{f.name}" for f in dataclasses.fields(TrackingConfig)),
    }
)
