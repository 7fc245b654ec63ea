"""Issue 14 item 7: the MPII crop is HRNet's, centre included (lib/dataset/mpii.py in
leoxiaobin/deep-high-resolution-net.pytorch: c[1] += 15 * s; s *= 1.25; then c = c - 1, MATLAB's 1-based pixels
made 0-based, as the joints are)."""
import json

import numpy as np

from datasets.annotations import load_records
from datasets.skeletons import MPII16
from datasets.topdown.codec import HeatmapCodec
from datasets.topdown.dataset import TopDownDataset


def hrnet_center_scale(person: dict) -> tuple[np.ndarray, float]:
    """HRNet's crop centre (0-based pixels) and scale (x 200 px, padding included) of one json person."""
    c = np.array(person["center"], dtype=np.float64)
    s = float(person["scale"])
    if c[0] != -1:
        c[1] = c[1] + 15 * s
        s = s * 1.25
    return c - 1, s


def test_mpii_crop_centre_and_size_are_hrnets(shared_data):
    ann = shared_data / "mpii/test_mpii.json"
    people = json.loads(ann.read_text())
    records = load_records(ann, shared_data / "mpii", MPII16)
    dataset = TopDownDataset(records, MPII16, HeatmapCodec((256, 256)), train=False)
    assert len(dataset) == len(people) == 5
    for i, person in enumerate(people):
        center, scale = hrnet_center_scale(person)
        geom = dataset.crop_geometry(i, None)
        np.testing.assert_allclose(geom.center, center, rtol=0, atol=1e-6)
        np.testing.assert_allclose(geom.size, [scale * 200, scale * 200], rtol=0, atol=1e-6)
        # The joints shift by the same pixel: the crop and its labels stay together.
        np.testing.assert_allclose(records[i].keypoints[:, :2], np.array(person["joints"]) - 1, atol=1e-4)
