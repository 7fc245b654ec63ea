"""TrialConfig: every hyperparameter of one trial in one typed object, flattened whole into MLflow params.

Each section is the dataclass its component takes - `lja` (datasets.occlusion.LJAConfig), `occ` (OcclusionConfig),
`oasnet` (trainables.oasnet.OASNetConfig), `loss` (trainables.losses.LossConfig) - or, for the trainer's own
settings, a dataclass here. Each section checks its own ranges and allowed values in `validate()`;
`TrialConfig.validate()` calls them all and adds the checks that span sections. Recipes (sets of defaults for
a dataset or budget) are in trainables/presets.py.
"""
from __future__ import annotations

import dataclasses
import numbers
import os
from dataclasses import dataclass, field, fields
from typing import Any

from datasets import meta
from datasets.occlusion import LJAConfig, OcclusionConfig, occludes
from datasets.topdown.codec import ENCODINGS
from trainables.losses import LossConfig
from trainables.oasnet import OASNetConfig

SWITCHES = ("auto", "on", "off")  # runtime settings that "auto" turns on for GPUs


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # a datasets.meta entry: synthetic, coco, crowdpose, ochuman, mpii
    root: str = ""  # resolved dataset directory; filled in by the search driver
    train_ann: str = ""
    train_images: str = ""
    val_ann: str = ""
    val_images: str = ""
    val_occ_ann: str = ""  # optional occluded split (synthetic: val_occ; ochuman: OCHuman val)
    val_occ_images: str = ""
    val_gt: str = ""  # MPII: mpii_gt_val.mat, the reference ground truth of the val split
    det_file: str = ""  # person detector boxes (COCO results json) to evaluate det_split on, instead of GT boxes
    det_split: str = "val"
    input_h: int = 96
    input_w: int = 64
    sigma: float = 2.0
    decode: str = "dark"  # heatmap sub-pixel refinement: "dark" or "shift"
    codec: str = "msra"  # heatmap encoding and crop warp: "msra" (HRNet's) or "udp" (Huang et al. 2020, as MMPose)
    flip_test: bool = False  # average the heatmaps of each evaluation crop and its mirror image
    # Geometric augmentation. These defaults are the synthetic-CPU recipe (trainables/presets.py): they suit the
    # embedded synthetic data, whose figures already vary in scale and lean; on a short budget extra rotation only
    # slowed learning. HRNet's COCO/MPII recipe is presets.HRNET_AUGMENTATION.
    scale_factor: float = 0.15
    rotation: float = 30.0
    rotation_p: float = 0.0
    flip_p: float = 0.0  # horizontal flip with the skeleton's flip pairs
    half_body_p: float = 0.0
    photometric_p: float = 0.0  # albumentations colour jitter of the crop
    max_train_samples: int = 0  # 0 = all
    max_val_samples: int = 0
    # A region store of the training images (python -m datasets.topdown.region_store build): crops warped from
    # pre-cropped regions on disk instead of decoded JPEGs, the same pixels; "" decodes (BENCHMARKS.md).
    region_store: str = ""

    def validate(self) -> "DataConfig":
        if self.input_h <= 0 or self.input_w <= 0 or self.input_h % 32 or self.input_w % 32:
            raise ValueError(f"data.input_h/input_w must be positive multiples of 32 (the backbone's stride), got "
                             f"{self.input_h}x{self.input_w}")
        try:
            meta.get(self.dataset)
        except ValueError as err:  # names the choices
            raise ValueError(f"data.dataset: {err}") from None
        if self.decode not in ("dark", "shift"):
            raise ValueError(f"data.decode must be 'dark' or 'shift', got {self.decode!r}")
        if self.codec not in ENCODINGS:
            raise ValueError(f"data.codec must be one of {ENCODINGS}, got {self.codec!r}")
        if self.det_split not in ("val", "val_occ"):
            raise ValueError(f"data.det_split must be 'val' or 'val_occ', got {self.det_split!r}")
        for name in ("flip_p", "half_body_p", "photometric_p", "rotation_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"data.{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not self.sigma > 0:
            raise ValueError(f"data.sigma must be > 0, got {self.sigma}")
        if not 0.0 <= self.scale_factor < 1.0:
            raise ValueError(f"data.scale_factor must be in [0, 1), got {self.scale_factor}")
        if self.region_store and not os.path.isfile(os.path.join(self.region_store, "manifest.json")):
            raise ValueError(f"data.region_store: {self.region_store} is not a region store (no manifest.json; build "
                             f"one with `python -m datasets.topdown.region_store build`)")
        if self.region_store and not os.path.isabs(self.region_store):
            raise ValueError(f"data.region_store: {self.region_store} must be an absolute path (trials run in their "
                             f"own directories)")
        if self.region_store:
            from datasets.topdown.region_store import StoreError, read_manifest

            try:
                read_manifest(self.region_store)
            except StoreError as err:
                raise ValueError(f"data.region_store: {err}") from None
        for name in ("max_train_samples", "max_val_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"data.{name} must be >= 0 (0 = all), got {getattr(self, name)}")
        return self


@dataclass
class ModelConfig:
    name: str = "simplebaseline_r18"  # any of trainables.models.list_models()
    deconv_channels: int = 128  # SimpleBaseline's deconvolution width (the paper: 256)
    pretrained: str = ""  # "" none; a local backbone state-dict file (ImageNet weights need no internet then)

    def validate(self) -> "ModelConfig":
        from trainables.models import check_name  # the registry: imported when checked (torch, torchvision)

        try:
            check_name(self.name)
        except ValueError as err:  # names the choices
            raise ValueError(f"model.name: {err}") from None
        if self.deconv_channels < 1:
            raise ValueError(f"model.deconv_channels must be >= 1, got {self.deconv_channels}")
        return self


OPTIMIZERS = ("adam", "rmsprop")


@dataclass
class OptimConfig:
    epochs: int = 10
    batch_size: int = 16  # on a CPU budget, more updates per image beat larger batches
    optimizer: str = "adam"  # one of OPTIMIZERS (rmsprop: the stacked hourglass's and OASNet's, presets.py)
    lr: float = 1e-3
    # The papers decay by 10x at epochs 170 and 200 of 210; kept as fractions of the epoch budget.
    lr_decay_at: tuple[float, ...] = (170 / 210, 200 / 210)
    grad_clip: float = 0.0

    def validate(self) -> "OptimConfig":
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"optim.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optim.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not all(0.0 <= f <= 1.0 for f in self.lr_decay_at):
            raise ValueError(f"optim.lr_decay_at must be fractions of the epoch budget in [0, 1], got "
                             f"{self.lr_decay_at}")
        if self.grad_clip < 0:
            raise ValueError(f"optim.grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        return self


@dataclass
class RuntimeConfig:
    seed: int = 0
    workers: int = 1
    cpus_per_worker: int = 1
    gpus_per_worker: float = 0.0
    threads_per_worker: int = 0  # 0 = cpus_per_worker
    peak_flops: float = 0.0  # one device's peak FLOP/s for MFU; 0 = trainables/hardware.py's table or estimate
    amp: str = "auto"  # bf16 autocast: "auto" = on GPUs, "on", "off"
    channels_last: str = "auto"  # NHWC tensors: "auto" = on GPUs, "on", "off"
    # Decode, warp, LJA and heatmaps on the GPU for the whole batch (datasets/topdown/gpu.py): "auto" = on GPUs when
    # the configuration allows (LJA only, no photometric jitter, no OASNet), "on" (else an error), "off". Off by
    # default until measured on a GPU (BENCHMARKS.md); its CPU equivalence is tested.
    gpu_augment: str = "off"
    loader_workers: int = 0  # DataLoader worker processes of either pipeline (trainables/loaders.py); 0 = in-process

    def validate(self) -> "RuntimeConfig":
        for name in ("amp", "channels_last", "gpu_augment"):
            if getattr(self, name) not in SWITCHES:
                raise ValueError(f"runtime.{name} must be auto, on or off, got {getattr(self, name)!r}")
        for name in ("workers", "cpus_per_worker"):
            if getattr(self, name) < 1:
                raise ValueError(f"runtime.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("gpus_per_worker", "threads_per_worker", "peak_flops", "loader_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"runtime.{name} must be >= 0, got {getattr(self, name)}")
        return self


@dataclass
class SearchConfig:
    method: str = ""  # the --space all search's top-level choice (lja, oasnet, pocc, tilting); "" otherwise

    def validate(self) -> "SearchConfig":
        return self  # a label the search driver writes; its values are search/spaces.py's


@dataclass
class TrialConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lja: LJAConfig = field(default_factory=LJAConfig)
    occ: OcclusionConfig = field(default_factory=OcclusionConfig)
    oasnet: OASNetConfig = field(default_factory=OASNetConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def flat(self) -> dict[str, Any]:
        """{"lja.quantity_ratio": 0.15, ...}: the form Tune, Optuna and MLflow all take."""
        return {
            f"{section.name}.{item.name}": getattr(getattr(self, section.name), item.name)
            for section in fields(self)
            for item in fields(getattr(self, section.name))
        }

    @classmethod
    def keys(cls) -> list[str]:
        """Every setting's flat key ("data.dataset", ...)."""
        return list(cls().flat())

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> "TrialConfig":
        """The config with `flat`'s settings over the defaults; ValueError naming the key for an unknown key (with
        the known keys of its section) or a value of the wrong type. Ranges are validate()'s."""
        config = cls()
        for key, value in flat.items():
            section_name, _, name = key.partition(".")
            section = getattr(config, section_name, None)
            if section is None or not dataclasses.is_dataclass(section):
                raise ValueError(f"unknown trial config key {key!r}; sections: "
                                 f"{', '.join(f.name for f in fields(config))}")
            if not name or name not in {f.name for f in fields(section)}:
                raise ValueError(f"unknown trial config key {key!r}; {section_name}. takes "
                                 f"{', '.join(f.name for f in fields(section))}")
            current = getattr(section, name)
            setattr(section, name, _coerce(value, current, key))
        return config

    def validate(self) -> "TrialConfig":
        """Each section's own checks, then those spanning sections; ValueError naming the key."""
        for section in fields(self):
            getattr(self, section.name).validate()
        if self.oasnet.enabled and not occludes(self.lja, self.occ):
            raise ValueError("oasnet.enabled needs an artificial occlusion for its occluded view: set lja.enabled "
                             "with lja.p > 0, occ.p_occ > 0 or occ.targeted")
        return self

    def replace(self, **flat) -> "TrialConfig":
        return TrialConfig.from_flat({**self.flat(), **{k.replace("__", "."): v for k, v in flat.items()}})


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _coerce(value, current, key):
    """`value` as the type of the setting's default `current`: a bool from true/false/1/0/yes/no/on/off, a tuple
    of floats from a list or a comma-separated string, an int only from an integral value. ValueError otherwise."""
    def wrong(why: str) -> ValueError:
        return ValueError(f"trial config key {key!r}: cannot use {value!r} ({why})")

    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in _TRUE + _FALSE:
            raise wrong(f"expected a boolean: {', '.join(_TRUE + _FALSE)}")
        return text in _TRUE
    try:
        if isinstance(current, tuple):
            items = [v for v in value.split(",") if v.strip()] if isinstance(value, str) else value
            return tuple(float(v) for v in items)
        if isinstance(current, int):
            number = value
            if isinstance(value, str):
                number = int(value) if value.strip().lstrip("+-").isdigit() else float(value)
            if isinstance(number, numbers.Real) and not isinstance(number, numbers.Integral) \
                    and not float(number).is_integer():
                raise ValueError("not integral")
            return int(number)
        return type(current)(value)
    except (TypeError, ValueError, OverflowError) as err:
        raise wrong("expected an integer" if isinstance(current, int) else str(err)) from None
