"""Bad input to search/run.py: clear messages and exit codes, before any expensive work starts."""
import subprocess
import sys
import time

from conftest import REPO_ROOT

RUN = [sys.executable, str(REPO_ROOT / "search" / "run.py")]


def run(*args, timeout=120):
    return subprocess.run([*RUN, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)


def test_unknown_space_exits_2_and_lists_the_choices():
    result = run("--space", "nope")
    assert result.returncode == 2
    assert "invalid choice: 'nope'" in result.stderr and "lja" in result.stderr


def test_invalid_flag_values_exit_2_naming_the_flag():
    for flag, value in (("--epochs", "0"), ("--num-samples", "many"), ("--gpus-per-worker", "-1")):
        result = run("--space", "lja", flag, value)
        assert result.returncode == 2, (flag, result.stderr)
        assert flag in result.stderr


def test_resume_needs_an_experiment_name():
    result = run("--space", "lja", "--resume")
    assert result.returncode == 2
    assert "--resume needs --experiment" in result.stderr


def test_unreachable_address_fails_fast_with_a_clear_message():
    start = time.monotonic()
    result = run("--space", "lja", "--address", "127.0.0.1:9")
    assert result.returncode != 0
    assert "cannot reach the Ray cluster at --address '127.0.0.1:9'" in result.stderr
    assert time.monotonic() - start < 60


def test_help_explains_every_option():
    result = run("--help")
    assert result.returncode == 0
    for flag in ("--space", "--num-samples", "--epochs", "--max-concurrent", "--workers-per-trial", "--address",
                 "--storage-path", "--experiment", "--resume", "--smoke", "--seed"):
        assert flag in result.stdout


def test_grid_needs_a_space_with_a_grid_and_sizes_the_search():
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
