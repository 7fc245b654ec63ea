"""Issue 17 item 2: the training records' table built straight from the validator's arrays
(datasets.annotations.load_record_table) is the table of the PersonRecords load_records builds, drops included."""
import copy
import json

import numpy as np
import pytest

from datasets.annotations import RecordTable, load_record_table, load_records
from datasets.skeletons import COCO17, CROWDPOSE14, MPII16
from datasets.validation import AnnotationError

ARRAYS = (*RecordTable._ARRAYS, "path_blob", "path_offsets")


def assert_same_table(table: RecordTable, records) -> None:
    expected = RecordTable.from_records(records)
    for name in ARRAYS:
        got, want = getattr(table, name), getattr(expected, name)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert table.dropped == records.dropped


def edited_coco(shared_data, tmp_path, edit) -> tuple:
    data = json.loads((shared_data / "coco/test_coco.json").read_text())
    edit(data)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    return path, shared_data / "coco"


@pytest.mark.parametrize("dataset, ann, skeleton", [
    ("coco", "test_coco.json", COCO17), ("crowdpose", "test_crowdpose.json", CROWDPOSE14),
    ("mpii", "test_mpii.json", MPII16)])
def test_the_table_equals_the_records_table_on_the_fixtures(shared_data, dataset, ann, skeleton):
    path = shared_data / dataset / ann
    if not path.is_file():
        pytest.skip(f"no {path}")
    assert_same_table(load_record_table(path, shared_data / dataset, skeleton),
                      load_records(path, shared_data / dataset, skeleton))


def test_drops_crowds_unlabelled_persons_and_head_boxes_match(shared_data, tmp_path):
    def edit(data):
        anns = data["annotations"]
        people = [a for a in anns if a["num_keypoints"] > 0 and not a["iscrowd"]]
        sizes = {i["id"]: (i["width"], i["height"]) for i in data["images"]}
        w, _ = sizes[people[0]["image_id"]]
        people[0]["bbox"] = [w + 5.0, 10.0, 20.0, 30.0]  # entirely right of its image: dropped
        unlabelled = copy.deepcopy(people[1])
        unlabelled.update(id=10**6, keypoints=[0] * 51, num_keypoints=0, bbox=[1.0, 1.0, 0.0, 5.0])  # zero width
        crowd = copy.deepcopy(people[2])
        crowd.update(id=10**6 + 1, iscrowd=1)
        people[3]["head_box"] = [1.0, 2.0, 30.0, 40.0]
        anns.extend([unlabelled, crowd])

    path, images = edited_coco(shared_data, tmp_path, edit)
    records = load_records(path, images, COCO17)
    assert records.dropped  # both kinds of drop happened
    assert len(records.dropped) == 2
    table = load_record_table(path, images, COCO17)
    assert_same_table(table, records)
    assert table.has_head_box.sum() == 1


def test_a_labelled_person_with_a_zero_width_box_names_the_annotation(shared_data, tmp_path):
    def edit(data):
        person = next(a for a in data["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"])
        person["bbox"][2] = 0.0
        data["broken_id"] = person["id"]

    path, images = edited_coco(shared_data, tmp_path, edit)
    broken = json.loads(path.read_text())["broken_id"]
    with pytest.raises(AnnotationError, match=rf"annotation {broken}: field 'bbox' has a negative or zero"):
        load_record_table(path, images, COCO17)
