"""Intermediate supervision (trainables/build.py `staged_loss`, OASNet's `joints`): the loss - and every loss that
wraps it, DSL, structure-aware, OASNet's - applies to each supervised heatmap of a multi-output model (every stack
of a stacked hourglass, every SRPose stage, against the codec's targets at that stage's resolution) and sums them;
evaluation reads the last. Also the optimiser and the OASNet hourglass recipe."""
import pytest
import torch

from datasets.skeletons import COCO17
from trainables.build import build_codec, build_loss, build_model, build_optimizer, staged_loss
from trainables.config import TrialConfig
from trainables.losses import DynamicStructureLoss, LossConfig, keypoint_mse
from trainables.models import SRPose, create_model, stage_outputs
from trainables.oasnet import OASNet, OASNetLoss
from trainables.presets import recipe

INPUT = {"data.input_h": 64, "data.input_w": 64, "data.dataset": "coco"}


def small_hourglass(stacks: int):
    """The registered architecture at 32 channels instead of 256: the same wiring, a CPU test's cost."""
    return create_model(f"hourglass_{stacks}stack", 17, channels=32)


def batch_for(codec, n=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    h, w = codec.input_hw
    keypoints = torch.rand(n, 17, 2, generator=gen) * torch.tensor([w - 8.0, h - 8.0]) + 4
    heatmaps, weight = codec.encode_torch(keypoints, torch.ones(n, 17))
    return keypoints, {"image": torch.randn(n, 3, h, w, generator=gen), "heatmaps": heatmaps, "target_weight": weight}


def mse(pred, target, weight, progress):
    return keypoint_mse(pred, target, weight), {}


@pytest.mark.parametrize("stacks", [2])
def test_hourglass_loss_is_the_sum_over_its_stacks(stacks):
    torch.manual_seed(0)
    cfg = TrialConfig().replace(**INPUT, **{"model.name": f"hourglass_{stacks}stack"})
    model, codec = small_hourglass(stacks), build_codec(cfg)
    _, batch = batch_for(codec)
    loss, parts = staged_loss(mse, codec)(model, batch, 0.0)
    outputs = stage_outputs(model, batch["image"])
    per_stack = [keypoint_mse(o, batch["heatmaps"], batch["target_weight"]) for o in outputs]
    assert len(per_stack) == stacks and sorted(parts) == [f"loss_stage{i}" for i in range(stacks)]
    assert torch.allclose(loss, sum(per_stack), rtol=1e-5)
    logged = [float(parts[f"loss_stage{i}"]) for i in range(stacks)]
    assert logged == pytest.approx([p.item() for p in per_stack], rel=1e-5)
    with torch.no_grad():  # evaluation reads the last stack
        assert torch.equal(model.eval()(batch["image"]), stage_outputs(model, batch["image"])[-1])


def test_dsl_applies_to_every_stack():
    torch.manual_seed(0)
    cfg = TrialConfig().replace(**INPUT, **{"model.name": "hourglass_2stack", "loss.schedule": "constant",
                                            "loss.lambda_max": 0.5})
    model, codec = small_hourglass(2), build_codec(cfg)
    _, batch = batch_for(codec)
    dsl = DynamicStructureLoss(COCO17.limb_chains, 17, LossConfig(schedule="constant", lambda_max=0.5))
    loss, _ = staged_loss(dsl, codec)(model, batch, 0.3)
    outputs = stage_outputs(model, batch["image"])
    expected = sum(dsl(o, batch["heatmaps"], batch["target_weight"], 0.3)[0] for o in outputs)
    assert torch.allclose(loss, expected, rtol=1e-5)
    assert torch.allclose(build_loss(cfg, COCO17, model)(model, batch, 0.3)[0], loss, rtol=1e-5)


def test_srpose_stages_are_supervised_at_their_own_resolution():
    """SRPose's targets come from the same codec at each stage's stride: the 1/1 targets' keypoints re-encoded at
    1/4 and 1/32 equal encoding the keypoints there directly; the 1/32 map weighs 1e-4."""
    torch.manual_seed(0)
    cfg = TrialConfig().replace(**{**INPUT, "data.input_h": 96}, **{"model.name": "srpose_hrnet_w32"})
    model, codec = SRPose(17, width=18), build_codec(cfg)  # the W32 head's wiring on the smaller HRNet-W18
    assert codec.stride == 1 and codec.sigma == 8.0
    keypoints, batch = batch_for(codec)
    for stride in (4, 32):
        direct, _ = codec.with_stride(stride).encode_torch(keypoints, batch["target_weight"])
        hw = (96 // stride, 64 // stride)
        assert torch.allclose(codec.resample_targets(batch["heatmaps"], batch["target_weight"], hw), direct,
                              atol=1e-5)
    loss, parts = staged_loss(mse, codec)(model, batch, 0.0)
    outputs = stage_outputs(model, batch["image"])
    expected = 0.0
    for out, weight in zip(outputs, (1e-4, 1, 1, 1, 1)):
        target, _ = codec.with_stride(96 // out.shape[-2]).encode_torch(keypoints, batch["target_weight"])
        expected = expected + weight * keypoint_mse(out, target, batch["target_weight"])
    assert torch.allclose(loss, expected, rtol=1e-4) and len(parts) == 5


def test_oasnet_on_the_hourglass_supervises_every_stack():
    """OASNet after the last stack: L_J sums the earlier stacks' and the reconstructed heatmaps of both views."""
    torch.manual_seed(0)
    cfg = TrialConfig().replace(**INPUT, **{"model.name": "hourglass_2stack", "oasnet.enabled": True,
                                            "lja.enabled": True, "lja.p": 1.0})
    model, codec = OASNet(small_hourglass(2)), build_codec(cfg)
    assert type(build_model(cfg)) is OASNet
    _, batch = batch_for(codec)
    zeros = torch.zeros(2, 16, 16)
    batch |= {"image_occluded": batch["image"].flip(-1), "target_weight_occluded": batch["target_weight"],
              "occlusion": zeros, "occlusion_occluded": zeros, "natural_occlusion": zeros}
    _, parts = OASNetLoss.from_config(cfg.oasnet, model, codec)(model, batch, 0.0)
    both = model(torch.cat([batch["image"], batch["image_occluded"]]), all_outputs=True)
    assert len(both["stages"]) == 1 and both["stages"][0].shape == (4, 17, 16, 16)
    expected = sum(keypoint_mse(out, torch.cat([batch["heatmaps"]] * 2), torch.cat([batch["target_weight"]] * 2))
                   for out in (both["stages"][0], both["heatmaps"])) * 2  # the mean over both views, summed
    assert parts["loss_joints"] == pytest.approx(expected.item(), rel=1e-4)
    with torch.no_grad():
        assert torch.equal(model.eval()(batch["image"]), model(batch["image"], all_outputs=True)["heatmaps"])


def test_oasnet_hourglass_recipe_is_rmsprop_with_the_papers_steps():
    cfg = TrialConfig().replace(**recipe("oasnet_hourglass"), **{"optim.epochs": 22}).validate()
    assert (cfg.model.name, cfg.data.input_h, cfg.data.input_w, cfg.optim.lr) == ("hourglass_2stack", 256, 256, 5e-4)
    optimizer = build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(optimizer, torch.optim.RMSprop) and optimizer.param_groups[0]["lr"] == 5e-4
    # x0.1 at epochs 150, 170, 200 of 220, scaled to the budget: 15, 17, 20 of 22
    assert sorted({max(1, round(f * 22)) for f in cfg.optim.lr_decay_at}) == [15, 17, 20]
    with pytest.raises(ValueError, match="optim.optimizer"):
        TrialConfig().replace(**{"optim.optimizer": "sgd"}).validate()
