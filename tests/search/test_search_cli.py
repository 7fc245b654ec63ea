"""Bad input to search/run.py: clear messages and exit codes, before any expensive work starts."""
import json
import time

import pytest


@pytest.fixture
def run(search_cli):
    """search/run.py with these arguments, run to its end (two minutes at most)."""
    return lambda *args, timeout=120: search_cli.run(*args, timeout=timeout)


def test_unknown_space_exits_2_and_lists_the_choices(run):
    result = run("--space", "nope")
    assert result.returncode == 2
    assert "invalid choice: 'nope'" in result.stderr and "lja" in result.stderr


def test_invalid_flag_values_exit_2_naming_the_flag(run):
    for flag, value in (("--epochs", "0"), ("--num-samples", "many"), ("--gpus-per-worker", "-1")):
        result = run("--space", "lja", flag, value)
        assert result.returncode == 2, (flag, result.stderr)
        assert flag in result.stderr


def test_resume_needs_an_experiment_name(run):
    result = run("--space", "lja", "--resume")
    assert result.returncode == 2
    assert "--resume needs --experiment" in result.stderr


def test_unreachable_address_fails_fast_with_a_clear_message(run):
    start = time.monotonic()
    result = run("--space", "lja", "--address", "127.0.0.1:9")
    assert result.returncode != 0
    assert "cannot reach the Ray cluster at --address '127.0.0.1:9'" in result.stderr
    assert time.monotonic() - start < 60


def test_help_explains_every_option(run):
    result = run("--help")
    assert result.returncode == 0
    for flag in ("--space", "--num-samples", "--epochs", "--max-concurrent", "--workers-per-trial", "--address",
                 "--storage-path", "--experiment", "--resume", "--smoke", "--seed"):
        assert flag in result.stdout


def test_grid_needs_a_space_with_a_grid_and_sizes_the_search(run):
    result = run("--space", "all", "--searcher", "grid")
    assert result.returncode == 2 and "has no grid" in result.stderr
    from search.run import parse_args
    from search.spaces import SPACES

    assert parse_args(["--space", "lja", "--searcher", "grid"]).num_samples == 25 == SPACES["lja"].grid_size()
    assert parse_args(["--space", "lja", "--searcher", "grid", "--num-samples", "3"]).num_samples == 3


def test_model_flag_wins_over_the_recipe(tmp_path):
    from search.run import base_trial_config, parse_args

    args = parse_args(["--space", "pocc", "--model", "hrnet_w32", "--smoke"])
    assert base_trial_config(args, {}).model.name == "hrnet_w32"


@pytest.fixture
def run_search(run):
    """search/run.py --space lja with these arguments."""
    return lambda *args: run("--space", "lja", *args)


def test_search_needs_a_data_root_for_real_datasets(tmp_path, run_search):
    proc = run_search("--dataset", "coco", "--storage-path", tmp_path)
    assert proc.returncode == 2 and "--data-root" in proc.stderr


def test_search_names_the_missing_layout_file_before_writing_anything(tmp_path, run_search):
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    proc = run_search("--dataset", "coco", "--data-root", tmp_path / "coco", "--storage-path", tmp_path / "runs",
                      "--experiment", "x")
    assert proc.returncode == 2
    assert "person_keypoints_train2017.json" in proc.stderr and "expected layout" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_region_store_that_is_not_one_is_refused_before_writing_anything(real_layouts, tmp_path, run_search):
    (tmp_path / "store").mkdir()
    proc = run_search("--dataset", "coco", "--data-root", real_layouts / "coco", "--region-store", tmp_path / "store",
                      "--storage-path", tmp_path / "runs", "--experiment", "x")
    assert proc.returncode == 2, proc.stderr
    assert f"--region-store {tmp_path / 'store'} is not a region store" in proc.stderr
    assert not (tmp_path / "runs").exists()
    synthetic = run_search("--region-store", tmp_path / "store", "--storage-path", tmp_path / "runs")
    assert synthetic.returncode == 2 and "--region-store applies to real datasets only" in synthetic.stderr


def test_search_rejects_a_malformed_annotation_naming_it(shared_data, fresh_layouts, tmp_path, run_search):
    root = fresh_layouts / "coco"
    data = json.loads((shared_data / "coco/test_coco.json").read_text())
    data["annotations"][0]["bbox"] = [1, 2, -3, 4]
    val = root / "annotations" / "person_keypoints_val2017.json"
    val.unlink()
    val.write_text(json.dumps(data))
    proc = run_search("--dataset", "coco", "--data-root", root, "--storage-path", tmp_path / "runs")
    assert proc.returncode == 2
    assert str(val) in proc.stderr and f"annotation {data['annotations'][0]['id']}" in proc.stderr \
        and "'bbox'" in proc.stderr


def test_status_needs_an_experiment_and_is_not_combined_with_check(capsys, tmp_path, monkeypatch):
    from search.run import parse_args

    for argv, message in ((["--status"], "--status needs --experiment NAME"),
                          (["--status", "--check", "--experiment", "x"], "--check and --status: give one of them")):
        with pytest.raises(SystemExit) as exited:
            parse_args(argv)
        assert exited.value.code == 2 and message in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    args = parse_args(["--status", "--experiment", "x", "--storage-path", "runs"])  # no --space needed
    assert args.status and args.storage_path == str(tmp_path / "runs")
    assert not parse_args(["--space", "lja"]).verbose and parse_args(["--space", "lja", "--json"]).json
