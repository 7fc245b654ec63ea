"""trainables/robustness.py's report files are written atomically: whole, or the previous ones kept."""
import pytest

from trainables import robustness

RESULT = {"metric": "AP", "split": "val", "persons": 5, "clean": 0.5,
          "keypoint": {"keypoint-blackout": {0.0: 0.5, 6.0: 0.4}}, "per_keypoint": {},
          "part": {"part-blackout": {"arms": 0.3, "legs": 0.2}}}


def test_report_files_are_whole_and_no_temporary_is_left(tmp_path):
    files = robustness.write_report(RESULT, tmp_path)
    assert {f.name for f in files} == {"robustness.json", "robustness.md", "keypoint_attacks.png",
                                       "part-blackout_part.png"}
    assert all(f.read_bytes() for f in files)
    assert all(f.read_bytes().startswith(b"\x89PNG") for f in files if f.suffix == ".png")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f.name for f in files)


def test_a_failing_figure_keeps_the_previous_one(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    robustness.write_report(RESULT, tmp_path)
    before = (tmp_path / "keypoint_attacks.png").read_bytes()

    def fail(self, f, **kw):
        f.write(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", fail)
    with pytest.raises(OSError, match="disk full"):
        robustness.write_report({**RESULT, "clean": 0.9}, tmp_path)
    assert (tmp_path / "keypoint_attacks.png").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
