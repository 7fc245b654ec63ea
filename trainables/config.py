"""TrialConfig: every hyperparameter of one trial in one typed object, flattened whole into MLflow params."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from datasets.occlusion import LJAConfig, OcclusionConfig


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # synthetic, coco, crowdpose, ochuman, mpii (datasets/layouts.py)
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
    flip_test: bool = False  # average the heatmaps of each evaluation crop and its mirror image
    # Geometric augmentation. Defaults suit the embedded synthetic data, whose figures already vary in scale
    # and lean; on a short budget extra rotation only slowed learning (HRNet's COCO setting: 0.35, 45, p 0.6).
    scale_factor: float = 0.15
    rotation: float = 30.0
    rotation_p: float = 0.0
    flip_p: float = 0.0  # horizontal flip with the skeleton's flip pairs (HRNet: 0.5)
    half_body_p: float = 0.0  # HRNet: 0.3
    photometric_p: float = 0.0  # albumentations colour jitter of the crop
    max_train_samples: int = 0  # 0 = all
    max_val_samples: int = 0


@dataclass
class ModelConfig:
    name: str = "simplebaseline_r18"  # any of trainables.models.list_models()
    deconv_channels: int = 128  # SimpleBaseline's deconvolution width (the paper: 256)
    pretrained: str = ""  # "" none; a local backbone state-dict file (ImageNet weights need no internet then)


@dataclass
class OASNetConfig:
    """OASNet around the model: occlusion branch, feature erasing + reconstruction, siamese mimic loss. Needs an
    artificial occlusion (lja.enabled, occ.p_occ or occ.targeted) to build the occluded view."""

    enabled: bool = False
    mimic: str = "l2"  # l2, cosine, kl, sinkhorn
    detach: bool = True  # stop the mimic loss's gradient into the clean (teacher) branch
    lambda_mimic: float = 1e-2
    lambda_o: float = 1.0


@dataclass
class LossConfig:
    structure: bool = True  # DSL on top of the keypoint MSE
    schedule: str = "step"
    lambda_max: float = 0.25
    step_at: float = 0.5  # step schedule: fraction of training after which lambda = lambda_max
    ramp_until: float = 1.0  # linear schedule: fraction of training at which lambda reaches lambda_max
    exp_rate: float = 5.0  # exponential schedule: rise rate
    structure_aware_alpha: float = 0.0  # > 0 (with structure off): Ke et al.'s structure-aware loss, the baseline


@dataclass
class OptimConfig:
    epochs: int = 10
    batch_size: int = 16  # on a CPU budget, more updates per image beat larger batches
    lr: float = 1e-3
    # The papers decay by 10x at epochs 170 and 200 of 210; kept as fractions of the epoch budget.
    lr_decay_at: tuple[float, ...] = (170 / 210, 200 / 210)
    grad_clip: float = 0.0


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
    # Decode, warp, LJA and heatmaps on the GPU for the whole batch (datasets/gpu_augment.py): "auto" = on GPUs when
    # the configuration allows (LJA only, no photometric jitter, no OASNet), "on" (else an error), "off". Off by
    # default until measured on a GPU (BENCHMARKS.md); its CPU equivalence is tested.
    gpu_augment: str = "off"
    loader_workers: int = 0  # gpu_augment's DataLoader worker processes (JPEG bytes + parameters); 0 = in-process


@dataclass
class SearchConfig:
    method: str = ""  # the --space all search's top-level choice (lja, oasnet, pocc, tilting); "" otherwise


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
    def from_flat(cls, flat: dict[str, Any]) -> "TrialConfig":
        config = cls()
        for key, value in flat.items():
            section_name, _, name = key.partition(".")
            section = getattr(config, section_name, None)
            if section is None or not dataclasses.is_dataclass(section) or not hasattr(section, name):
                raise ValueError(f"unknown trial config key {key!r}")
            current = getattr(section, name)
            setattr(section, name, _coerce(value, current, key))
        return config

    def validate(self) -> "TrialConfig":
        if self.data.input_h % 32 or self.data.input_w % 32:
            raise ValueError(f"data.input_h/input_w must be multiples of 32 (the backbone's stride), got "
                             f"{self.data.input_h}x{self.data.input_w}")
        from datasets import meta

        meta.get(self.data.dataset)  # names the choices when unknown
        if self.data.decode not in ("dark", "shift"):
            raise ValueError(f"data.decode must be 'dark' or 'shift', got {self.data.decode!r}")
        if self.data.det_split not in ("val", "val_occ"):
            raise ValueError(f"data.det_split must be 'val' or 'val_occ', got {self.data.det_split!r}")
        for name in ("flip_p", "half_body_p", "photometric_p", "rotation_p"):
            if not 0.0 <= getattr(self.data, name) <= 1.0:
                raise ValueError(f"data.{name} must be a probability in [0, 1], got {getattr(self.data, name)}")
        self.lja.validate()
        self.occ.validate()
        from trainables.losses import MIMIC_LOSSES

        if self.oasnet.mimic not in MIMIC_LOSSES:
            raise ValueError(f"oasnet.mimic must be one of {MIMIC_LOSSES}, got {self.oasnet.mimic!r}")
        if self.oasnet.enabled and not (self.lja.enabled or self.occ.p_occ > 0 or self.occ.targeted != "none"):
            raise ValueError("oasnet.enabled needs an artificial occlusion for its occluded view: set lja.enabled, "
                             "occ.p_occ > 0 or occ.targeted")
        if self.loss.structure and self.loss.structure_aware_alpha > 0:
            raise ValueError("loss.structure (DSL) and loss.structure_aware_alpha (Ke et al.) are alternatives")
        for name in ("amp", "channels_last", "gpu_augment"):
            if getattr(self.runtime, name) not in ("auto", "on", "off"):
                raise ValueError(f"runtime.{name} must be auto, on or off, got {getattr(self.runtime, name)!r}")
        if self.optim.epochs < 1 or self.optim.batch_size < 1:
            raise ValueError("optim.epochs and optim.batch_size must be >= 1")
        return self

    def replace(self, **flat) -> "TrialConfig":
        return TrialConfig.from_flat({**self.flat(), **{k.replace("__", "."): v for k, v in flat.items()}})


def _coerce(value, current, key):
    try:
        if isinstance(current, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        if isinstance(current, tuple):
            return tuple(float(v) for v in value)
        return type(current)(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"trial config key {key!r}: cannot use {value!r} ({err})") from None
