"""models/demo/metadata.json: agrees with the contract and the weights; tampered copies are
refused naming the field; load_checkpoint checks a description beside the weights."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from aspects_client import contract
from aspects_export import checkpoints as ck
from aspects_export import model_description as md
from aspects_export.errors import CheckpointError

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads((DEMO / md.METADATA_FILE).read_text(encoding="utf-8"))


def test_committed_description_matches_contract_and_weights(committed: dict) -> None:
    weights = DEMO / committed["weights"]["file"]
    assert weights == ck.demo_weights_path()
    md.check_description(DEMO / md.METADATA_FILE, weights=weights)  # sha256 included
    assert committed["contract_version"] == contract.CONTRACT_VERSION
    assert committed["outputs"][0]["class_order"] == list(contract.CLASS_KEYS)
    assert [c["key"] for c in committed["classes"]] == list(contract.CLASS_KEYS)
    assert committed["inputs"][0]["shape"] == ["N", 3, *contract.NETWORK_SIZE]
    assert committed["inputs"][0]["channels"] == ["slice k-1", "slice k", "slice k+1"]
    assert committed["normalisation"]["mean"] == list(contract.IMAGENET_MEAN)
    recipe = json.loads((DEMO / md.RECIPE_FILE).read_text(encoding="utf-8"))
    assert committed["training"]["recipe"] == recipe
    assert not list(md.absolute_paths(committed, "metadata"))


def test_describe_is_json_and_the_committed_file_is_what_write_makes(
    committed: dict, tmp_path: Path
) -> None:
    desc = md.describe(contract)
    assert json.loads(json.dumps(desc)) == desc  # lists, not tuples: compares with JSON
    assert {k: committed[k] for k in desc} == desc
    for name in (md.RECIPE_FILE, md.MODEL_CARD_FILE, md.METADATA_FILE):
        (tmp_path / name).write_bytes((DEMO / name).read_bytes())
    fake = tmp_path / committed["weights"]["file"]
    fake.write_bytes(b"not the weights")
    written = json.loads(md.write_description(tmp_path).read_text(encoding="utf-8"))
    assert written["weights"]["sha256"] == md.sha256_file(fake)
    assert {k: v for k, v in written.items() if k != "weights"} == {
        k: v for k, v in committed.items() if k != "weights"
    }  # free-text fields kept, the rest regenerated identically


def _tampered(committed: dict, tmp_path: Path, change) -> Path:
    desc = copy.deepcopy(committed)
    change(desc)
    path = tmp_path / md.METADATA_FILE
    path.write_text(json.dumps(desc), encoding="utf-8")
    return path


def _swap_m1_m2(desc: dict) -> None:
    desc["classes"][1], desc["classes"][2] = desc["classes"][2], desc["classes"][1]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (_swap_m1_m2, r"classes\[1\]\.key is \"m2\", the contract says \"m1\""),
        (lambda d: d["outputs"][0]["class_order"].reverse(), r"outputs\[0\]\.class_order\[0\]"),
        (lambda d: d.update(contract_version="1"), r"contract_version is \"1\""),
        (lambda d: d["training"]["recipe"]["synth"].update(init_from="/home/x/w.safetensors"),
         r"training\.recipe\.synth\.init_from is an absolute path"),
        (lambda d: d["training"]["recipe"]["synth"].update(train_pairs=[["C:\\d\\v.nii", "l"]]),
         r"training\.recipe\.synth\.train_pairs\[0\]\[0\] is an absolute path"),
        (lambda d: d["normalisation"].pop("std"), r"normalisation\.std is missing"),
        (lambda d: d["architecture"].update(encoder_name="resnet34"),
         r"architecture\.encoder_name is \"resnet34\""),
        (lambda d: d["weights"].update(sha256="abc"), r"weights\.sha256 is \"abc\", not a hex"),
    ],
    ids=["class-order", "output-order", "contract-version", "abs-init-from", "abs-pair",
         "missing-std", "encoder", "bad-sha"],
)
def test_tampered_copy_is_refused_naming_the_field(
    committed: dict, tmp_path: Path, change, field: str
) -> None:
    path = _tampered(committed, tmp_path, change)
    with pytest.raises(CheckpointError, match=field) as err:
        md.check_description(path)
    assert f"{md.WRITE_COMMAND} {tmp_path}" in str(err.value)  # says how to fix it
    with pytest.raises(CheckpointError, match=field):
        md.check_description(json.loads(path.read_text(encoding="utf-8")))  # dicts too


def test_unreadable_or_absent_description(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no model description"):
        md.check_description(tmp_path)
    (tmp_path / md.METADATA_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        md.check_description(tmp_path)


def _beside(committed: dict, folder: Path, weights: Path, sha: str | None = None) -> None:
    desc = copy.deepcopy(committed)
    desc["weights"].update(file=weights.name, sha256=sha or md.sha256_file(weights))
    (folder / md.METADATA_FILE).write_text(json.dumps(desc), encoding="utf-8")


def test_load_checkpoint_checks_a_description_beside_the_weights(
    committed: dict, tmp_path: Path
) -> None:
    weights = tmp_path / "tiny.pt"
    torch.save({"w": torch.ones(2)}, weights)
    assert set(ck.load_checkpoint(weights)) == {"w"}  # no description: not checked
    _beside(committed, tmp_path, weights)
    assert set(ck.load_checkpoint(weights)) == {"w"}
    _beside(committed, tmp_path, weights, sha="0" * 64)
    with pytest.raises(CheckpointError, match=r"weights\.sha256 is 000000000000…, but tiny\.pt"):
        ck.load_checkpoint(weights)
    other = tmp_path / "other.pt"
    torch.save({"w": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match=r"weights\.file is \"tiny\.pt\", but it lies "):
        ck.load_checkpoint(other)
    _tampered(committed | {"weights": {"file": "tiny.pt", "sha256": md.sha256_file(weights)}},
              tmp_path, lambda d: d.update(contract_version="1"))
    with pytest.raises(CheckpointError, match="contract_version"):
        ck.load_checkpoint(weights)


def test_write_refuses_an_absolute_recipe_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "w.safetensors").write_bytes(b"x")
    (tmp_path / md.RECIPE_FILE).write_text(json.dumps({"init_from": "/srv/a.ckpt"}))
    with pytest.raises(CheckpointError, match=r"training\.recipe\.init_from is an absolute"):
        md.write_description(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [md.RECIPE_FILE, "w.safetensors"]
    (tmp_path / "v.safetensors").write_bytes(b"y")
    with pytest.raises(CheckpointError, match="--weights FILE"):
        md.write_description(tmp_path)


def test_cli_check_and_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert md.main(["check", str(DEMO)]) == 0
    assert "agrees" in capsys.readouterr().out
    (tmp_path / "w.safetensors").write_bytes(b"x")
    assert md.main(["write", str(tmp_path)]) == 0
    assert md.main(["check", str(tmp_path)]) == 0
    (tmp_path / "w.safetensors").write_bytes(b"changed")
    capsys.readouterr()
    assert md.main(["check", str(tmp_path)]) == 1
    assert "weights.sha256" in capsys.readouterr().err
