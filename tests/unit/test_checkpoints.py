"""Checkpoint loading: formats, misfits, corrupt files, the demo weights, and CLI errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aspects_client import contract
from aspects_export import checkpoints as ck
from aspects_export.errors import CheckpointError
from aspects_export.network import build_unet


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return ck.untrained_state_dict()


@pytest.fixture(scope="module")
def plain_file(tmp_path_factory: pytest.TempPathFactory, state: dict) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "plain.pt"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_unet()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_demo_weights_are_deterministic_and_leave_the_rng_alone(state: dict) -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    again = ck.untrained_state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert _same(state, again)
    assert "UNTRAINED" in ck.UNTRAINED_CHECKPOINT_NOTE


def test_plain_state_dict(plain_file: Path, state: dict, model: torch.nn.Module) -> None:
    loaded = ck.load_checkpoint(plain_file)
    assert _same(loaded, state)
    ck.load_into(model, loaded)


def test_wrapped_state_dict(tmp_path: Path, state: dict, model: torch.nn.Module) -> None:
    torch.save({"state_dict": state, "epoch": 7}, tmp_path / "wrapped.pth")
    loaded = ck.load_checkpoint(tmp_path / "wrapped.pth")
    assert _same(loaded, state)
    ck.load_into(model, loaded)


def test_lightning_checkpoint(tmp_path: Path, state: dict, model: torch.nn.Module) -> None:
    lightning = {
        "epoch": 12,
        "global_step": 3400,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.{k}": v for k, v in state.items()},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}],
        "lr_schedulers": [{"last_epoch": 12}],
        "callbacks": {},
        "hyper_parameters": {"encoder": contract.ENCODER_NAME, "lr": 1e-3},
    }
    torch.save(lightning, tmp_path / "last.ckpt")
    loaded = ck.load_checkpoint(tmp_path / "last.ckpt")
    assert _same(loaded, state)
    ck.load_into(model, loaded)


def test_lightning_with_extra_module_buffers(tmp_path: Path, state: dict) -> None:
    sd = {f"model.{k}": v for k, v in state.items()}
    sd["loss_fn.weight"] = torch.ones(contract.NUM_CLASSES)  # a weighted loss in the module
    torch.save({"state_dict": sd, "epoch": 1}, tmp_path / "extra.ckpt")
    assert _same(ck.load_checkpoint(tmp_path / "extra.ckpt"), state)


def test_safetensors_fp16_is_upcast(tmp_path: Path, state: dict, model: torch.nn.Module) -> None:
    from safetensors.torch import save_file

    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    save_file(half, str(tmp_path / "w.safetensors"))
    loaded = ck.load_checkpoint(tmp_path / "w.safetensors")
    assert loaded.keys() == state.keys()
    assert all(v.dtype != torch.float16 for v in loaded.values())
    key = "segmentation_head.0.weight"
    assert loaded[key].dtype == torch.float32
    torch.testing.assert_close(loaded[key], state[key], atol=1e-3, rtol=1e-3)
    ck.load_into(model, loaded)


def test_missing_keys_listed(state: dict, model: torch.nn.Module) -> None:
    partial = dict(state)
    dropped = sorted(partial)[:3]
    for k in dropped:
        del partial[k]
    with pytest.raises(CheckpointError, match="3 missing key") as err:
        ck.load_into(model, partial)
    assert all(k in str(err.value) for k in dropped)


def test_unexpected_and_shape_mismatch_in_one_error(state: dict, model: torch.nn.Module) -> None:
    bad = dict(state)
    bad["extra.weight"] = torch.zeros(2)
    key = "segmentation_head.0.weight"
    bad[key] = torch.zeros(5, *state[key].shape[1:])
    bad["segmentation_head.0.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError) as err:
        ck.load_into(model, bad)
    msg = str(err.value)
    assert "1 unexpected key(s): extra.weight" in msg
    assert "2 shape mismatch(es)" in msg and key in msg and "(5," in msg
    assert "different number of output classes" in msg


def test_wrong_architecture(tmp_path: Path, model: torch.nn.Module) -> None:
    import segmentation_models_pytorch as smp

    other = smp.Unet("resnet34", encoder_weights=None, classes=contract.NUM_CLASSES)
    torch.save(other.state_dict(), tmp_path / "resnet34.pt")
    with pytest.raises(CheckpointError) as err:
        ck.load_into(model, ck.load_checkpoint(tmp_path / "resnet34.pt"))
    msg = str(err.value)
    assert "different architecture" in msg and contract.ENCODER_NAME in msg
    assert "missing key(s)" in msg and "unexpected key(s)" in msg
    assert "in all)" in msg  # long lists are cut to the first few with a count
    assert msg.count("encoder.") < 40


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, not a checkpoint\n", bytes(range(256)) * 8, "truncated"],
    ids=["empty", "text", "random", "truncated"],
)
def test_corrupt_files(tmp_path: Path, plain_file: Path, content: bytes | str) -> None:
    path = tmp_path / "bad.pt"
    if content == "truncated":
        data = plain_file.read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        ck.load_checkpoint(path)


def test_corrupt_safetensors(tmp_path: Path) -> None:
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(CheckpointError, match="safetensors"):
        ck.load_checkpoint(tmp_path / "bad.safetensors")


def test_not_a_state_dict(tmp_path: Path) -> None:
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a state dict"):
        ck.load_checkpoint(tmp_path / "list.pt")
    torch.save({"epoch": 3}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="no tensors"):
        ck.load_checkpoint(tmp_path / "empty.pt")


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(1), "cfg": Path("x")}, tmp_path / "obj.pt")
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        ck.load_checkpoint(tmp_path / "obj.pt")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        ck.load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        ck.load_checkpoint(tmp_path)


# --- CLI errors: one line on stderr, exit 1 (2 for usage) -----------------------------------


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from aspects_export.cli import main

    try:
        code = main(args)
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_cli_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, err = _cli(["onnx", "--checkpoint", str(tmp_path / "no.pt"), "--out", str(out)], capsys)
    assert code == 1
    assert not out.exists()
    assert err.strip().splitlines()[-1].startswith("aspects-export: error: checkpoint not found")
    assert not (tmp_path / "unet.onnx").exists()


def test_cli_corrupt_and_wrong_architecture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import segmentation_models_pytorch as smp

    (tmp_path / "bad.ckpt").write_bytes(b"garbage")
    code, err = _cli(
        ["onnx", "--checkpoint", str(tmp_path / "bad.ckpt"), "--out", str(tmp_path)], capsys
    )
    assert code == 1 and "not a readable PyTorch checkpoint" in err.splitlines()[-1]
    other = smp.Unet("resnet34", encoder_weights=None, classes=contract.NUM_CLASSES)
    torch.save({"state_dict": other.state_dict()}, tmp_path / "r34.pt")
    code, err = _cli(
        ["onnx", "--checkpoint", str(tmp_path / "r34.pt"), "--out", str(tmp_path)], capsys
    )
    assert code == 1 and "different architecture" in err.splitlines()[-1]
    assert not list(tmp_path.glob("*.onnx"))


def test_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli([], capsys)[0] == 2
    assert (
        _cli(["onnx", "--oracle", "--checkpoint", "demo", "--out", str(tmp_path)], capsys)[0] == 2
    )
    assert _cli(["all", "--oracle", "--out", str(tmp_path), "--tensorrt"], capsys)[0] == 2


def test_demo_weights_are_the_default_and_trained(tmp_path: Path, capsys) -> None:
    """`aspects-export onnx` without --checkpoint exports the committed demo weights: FP16
    safetensors with their recipe, not the untrained ones."""
    from safetensors import safe_open

    path = ck.demo_weights_path()
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert f.get_tensor("segmentation_head.0.weight").dtype == torch.float16
    assert "recipe" in meta and '"crop"' in meta["recipe"]
    demo, note = ck.load_model("demo")
    assert note == ck.DEMO_CHECKPOINT_NOTE and "not for clinical use" in note
    untrained, _ = ck.load_model("untrained")
    w = "segmentation_head.0.weight"
    assert not torch.equal(demo.state_dict()[w], untrained.state_dict()[w])
    code, err = _cli(["onnx", "--out", str(tmp_path), "--check-slices", "0"], capsys)
    assert code == 0 and "synthetic images only" in err
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "unet.onnx")).metadata_props}
    assert meta["checkpoint"] == ck.DEMO_CHECKPOINT_NOTE


def test_missing_demo_weights_say_what_to_do(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ck, "DEMO_WEIGHTS", Path("models/nowhere/x.safetensors"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"scripts/train_demo\.sh"):
        ck.load_model("demo")
