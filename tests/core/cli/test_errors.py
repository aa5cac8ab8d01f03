"""Ordinary mistakes end in one line ``error: ...`` with the fix and exit status 1 (issue 17, item 6).

One parametrised case per mistake the issue lists (and a few neighbours); each runs the real CLI
and asserts exit status 1, exactly one ``error:`` line on stderr naming the problem, and no
traceback.
"""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers.reliability import assert_one_line_error, read_only, small_cache, train_args


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """A tiny cache and a finished run of the tiny sweep."""
    from conftest import cli_runner

    root = tmp_path_factory.mktemp("errors")
    cache = small_cache(root / "cache")
    code, _, err = cli_runner()(*train_args(cache, root / "run", steps=6))
    assert code == 0, err
    return {"cache": cache, "run": root / "run"}


def _run_copy(made: dict[str, Path], tmp: Path) -> Path:
    run = tmp / "run"
    shutil.copytree(made["run"], run)
    return run


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _fail_writes_with(monkeypatch: pytest.MonkeyPatch, err: int, what: Callable[[str], bool]) -> None:
    """Make safetensors/JSON durable writes of paths matching ``what`` fail with ``err`` (ENOSPC...)."""
    import os

    from sae_core import io

    real = io.fsync_file

    def failing(path: str | Path) -> None:
        if what(str(path)):
            raise OSError(err, os.strerror(err), str(path))
        real(path)

    monkeypatch.setattr(io, "fsync_file", failing)


# Each case_NAME(made, tmp, monkeypatch, stack) -> (argv, needles the error line must contain)
def case_device_cuda_without_gpu(made, tmp, mp, stack):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    return train_args(made["cache"], tmp / "r", "--device", "cuda"), ["--device cuda", "no CUDA GPU", "--device cpu"]


def case_device_gpu0(made, tmp, mp, stack):
    return train_args(made["cache"], tmp / "r", "--device", "gpu0"), ["--device 'gpu0' is not a device", "cuda:N"]


def case_train_out_is_a_file(made, tmp, mp, stack):
    (tmp / "f").write_text("x")
    return train_args(made["cache"], tmp / "f"), [f"--out {tmp / 'f'} is a file", "pass a directory"]


def case_resume_out_is_a_file(made, tmp, mp, stack):
    (tmp / "f").write_text("x")
    return ["train", "--resume", "--out", str(tmp / "f"), "-q"], ["is a file"]


def case_train_out_read_only(made, tmp, mp, stack):
    (tmp / "src").mkdir()
    ro = stack.enter_context(read_only(tmp / "src", tmp / "ro"))
    return train_args(made["cache"], ro / "run"), [f"{ro} is not writable", "writable directory"]


def case_train_out_full(made, tmp, mp, stack):
    _fail_writes_with(mp, errno.ENOSPC, lambda p: True)
    return train_args(made["cache"], tmp / "r"), ["no space left on the device", "config.json", "free disk space"]


def case_disk_full_while_training(made, tmp, mp, stack):
    _fail_writes_with(mp, errno.ENOSPC, lambda p: "tensors-" in p)  # the first state save, mid-run
    return train_args(made["cache"], tmp / "r"), ["no space left on the device", "tensors-000000007", "--resume"]


def case_sweep_is_a_directory(made, tmp, mp, stack):
    (tmp / "grid").mkdir()
    return train_args(made["cache"], tmp / "r", "--sweep", str(tmp / "grid")), ["is a directory", "TOML file"]


def case_sweep_not_utf8(made, tmp, mp, stack):
    (tmp / "grid.toml").write_bytes(b"[sae]\nk = 4 # caf\xe9\n")
    return train_args(made["cache"], tmp / "r", "--sweep", str(tmp / "grid.toml")), ["not UTF-8", "save it as UTF-8"]


def case_corrupt_config_json(made, tmp, mp, stack):
    run = _run_copy(made, tmp)
    (run / "config.json").write_text('{"cache": "x", "saes": [')
    return ["train", "--resume", "--out", str(run), "-q"], [f"{run / 'config.json'} is corrupt", "--overwrite"]


def case_config_json_not_a_run_config(made, tmp, mp, stack):
    run = _run_copy(made, tmp)
    (run / "config.json").write_text("[1, 2]")
    return ["train", "--resume", "--out", str(run), "-q"], ["is not a run config"]


def case_resume_of_a_non_run(made, tmp, mp, stack):
    (tmp / "empty").mkdir()
    return ["train", "--resume", "--out", str(tmp / "empty"), "-q"], ["is not a training run (no config.json)"]


def case_resume_and_overwrite(made, tmp, mp, stack):
    return ["train", "--resume", "--overwrite", "--out", str(made["run"]), "-q"], ["pass only one of them"]


def case_truncated_weights_analyze(made, tmp, mp, stack):
    run = _run_copy(made, tmp)
    _truncate(run / "topk-k4" / "sae.safetensors")
    return ["analyze", str(run), "-q"], [f"checkpoint {run / 'topk-k4'}", "sae.safetensors is truncated",
                                         "train or download that SAE again"]


def case_truncated_weights_export(made, tmp, mp, stack):
    run = _run_copy(made, tmp)
    _truncate(run / "topk-k4" / "sae.safetensors")
    return ["export", str(run), "--out", str(tmp / "exp")], ["sae.safetensors is truncated"]


def case_truncated_weights_info(made, tmp, mp, stack):
    run = _run_copy(made, tmp)
    _truncate(run / "topk-k4" / "sae.safetensors")
    return ["info", str(run / "topk-k4")], ["sae.safetensors is truncated"]


def case_weights_with_damaged_header(made, tmp, mp, stack):
    run = _run_copy(made, tmp)
    (run / "topk-k4" / "sae.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json!!!!!!}")
    return ["analyze", str(run / "topk-k4"), "-q"], ["damaged header"]


def case_corrupt_cfg_json(made, tmp, mp, stack):
    run = _run_copy(made, tmp)
    (run / "topk-k4" / "cfg.json").write_text("{")
    return ["export", str(run / "topk-k4"), "--out", str(tmp / "exp")], ["cfg.json is corrupt"]


def case_missing_checkpoint_file(made, tmp, mp, stack):
    return (["cache", "--adapter", "mlp", "--model", "rand-mlp", "--layers", "0", "--data", "gaussian:10",
             "--checkpoint", str(tmp / "nope.pt"), "--out", str(tmp / "c"), "-q"],
            [f"--checkpoint {tmp / 'nope.pt'} does not exist"])


def case_checkpoint_is_a_directory(made, tmp, mp, stack):
    return (["cache", "--adapter", "mlp", "--model", "rand-mlp", "--layers", "0", "--data", "gaussian:10",
             "--checkpoint", str(tmp), "--out", str(tmp / "c"), "-q"], ["is a directory, not a file"])


def case_export_out_is_a_file(made, tmp, mp, stack):
    (tmp / "f").write_text("x")
    return ["export", str(made["run"]), "--out", str(tmp / "f")], [f"--out {tmp / 'f'} is a file"]


def case_analyze_read_only_run(made, tmp, mp, stack):
    ro = stack.enter_context(read_only(made["run"], tmp / "ro"))
    return ["analyze", str(ro), "-q"], ["cannot write analysis results into", "copy the run"]


def case_analyze_device_gpu0(made, tmp, mp, stack):
    return ["analyze", str(made["run"]), "--device", "gpu0", "-q"], ["--device 'gpu0' is not a device"]


def case_cache_out_is_a_file(made, tmp, mp, stack):
    (tmp / "f").write_text("x")
    return (["cache", "--adapter", "mlp", "--model", "rand-mlp", "--layers", "0", "--data", "gaussian:10",
             "--out", str(tmp / "f"), "-q"], [f"--out {tmp / 'f'} is a file"])


def case_cache_device_cuda_without_gpu(made, tmp, mp, stack):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    return (["cache", "--adapter", "mlp", "--model", "rand-mlp", "--layers", "0", "--data", "gaussian:10",
             "--device", "cuda", "--out", str(tmp / "c"), "-q"], ["no CUDA GPU"])


def case_view_empty_directory(made, tmp, mp, stack):
    (tmp / "empty").mkdir()
    return ["view", str(tmp / "empty"), "--headless"], ["no SAE checkpoints in", "sae train"]


def case_info_verify_of_a_run(made, tmp, mp, stack):
    return ["info", "--verify", str(made["run"])], ["--verify checks caches"]


def case_train_data_is_a_file(made, tmp, mp, stack):
    (tmp / "f").write_text("x")
    return train_args(tmp / "f", tmp / "r"), ["is not an activation cache"]


def case_info_of_another_tools_cache(made, tmp, mp, stack):
    (tmp / "saev").mkdir()  # a saev-like cache: its own metadata.json
    (tmp / "saev" / "metadata.json").write_text('{"model_family": "clip", "d_vit": 768, "n_imgs": 10}')
    return ["info", str(tmp / "saev")], ["has a metadata.json but is not an activation cache this toolkit reads"]


def case_info_of_another_tools_checkpoint(made, tmp, mp, stack):
    (tmp / "sp").mkdir()  # a sparsify-like checkpoint: cfg.json without our keys
    (tmp / "sp" / "cfg.json").write_text('{"d_in": 16, "expansion_factor": 4, "k": 8}')
    return ["info", str(tmp / "sp")], ["has a cfg.json but is not an SAE checkpoint this toolkit reads"]


def case_analyze_writes_not_into_another_tools_checkpoint(made, tmp, mp, stack):
    from sae_core.checkpoint import find_checkpoints

    ckpt = find_checkpoints(made["run"])[0]
    shutil.copytree(ckpt, tmp / "foreign")
    cfg = json.loads((tmp / "foreign" / "cfg.json").read_text())
    cfg.pop("format")
    (tmp / "foreign" / "sae_weights.safetensors").write_bytes((tmp / "foreign" / "sae.safetensors").read_bytes())
    (tmp / "foreign" / "cfg.json").write_text(json.dumps(cfg))
    return ["analyze", str(tmp / "foreign"), "-q"], ["written by another tool", "sae import"]


CASES = {name[len("case_"):]: fn for name, fn in dict(globals()).items() if name.startswith("case_")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_mistake_gives_one_line_error(case: str, made, run_cli, tmp_path: Path, monkeypatch) -> None:
    import contextlib

    with contextlib.ExitStack() as stack:  # holds a case's read-only mount for the call
        argv, needles = CASES[case](made, tmp_path, monkeypatch, stack)
        code, _, err = run_cli(*argv)
    assert_one_line_error(code, err, *needles)


def test_the_listed_cases_are_all_here() -> None:
    """The 17-odd mistakes of issue 17, item 6, each have a case above."""
    listed = {"device_cuda_without_gpu", "device_gpu0", "train_out_is_a_file", "train_out_read_only",
              "train_out_full", "sweep_is_a_directory", "sweep_not_utf8", "corrupt_config_json",
              "truncated_weights_analyze", "truncated_weights_export", "truncated_weights_info",
              "missing_checkpoint_file", "export_out_is_a_file", "disk_full_while_training",
              "analyze_read_only_run", "cache_out_is_a_file", "view_empty_directory"}
    assert listed <= set(CASES)


def test_sae_cache_checks_out_before_loading_the_model(run_cli, tmp_path: Path, monkeypatch) -> None:
    """`sae cache` used to check --out only after ~24 s of model loading."""
    from sae_example_plugin import components

    loaded = []
    real = components.MLPAdapter.__init__

    def spy(self, request):
        loaded.append(request.model)
        real(self, request)

    monkeypatch.setattr(components.MLPAdapter, "__init__", spy)
    (tmp_path / "f").write_text("x")
    code, _, err = run_cli("cache", "--adapter", "mlp", "--model", "rand-mlp", "--layers", "0", "--data",
                           "gaussian:10", "--out", str(tmp_path / "f"), "-q")
    assert_one_line_error(code, err, "is a file")
    assert loaded == []


def test_error_lines_are_one_line_even_for_multiline_messages(capsys) -> None:
    from sae_core.cli import main
    from sae_core.errors import SAEError
    from sae_core.plugins import get_manager

    def boom(app):
        @app.command("boom")
        def _boom() -> None:
            raise SAEError("first line\nsecond line")

    manager = get_manager()
    original = manager.add_commands
    manager.add_commands = lambda app: (original(app), boom(app))
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["boom"])
    finally:
        manager.add_commands = original
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "error: first line second line\n"


def test_os_errors_other_than_disk_and_permission_keep_their_traceback() -> None:
    from sae_core.errors import os_error_message

    assert os_error_message(OSError(errno.ENOENT, "No such file", "x")) is None
    assert "no space" in os_error_message(OSError(errno.ENOSPC, "No space", "x"))
    assert "read-only" in os_error_message(OSError(errno.EROFS, "Read-only file system", "x"))
    assert json.dumps(os_error_message(OSError(errno.EACCES, "denied"))).count("permission denied") == 1
