"""The recipe stored in a weights file's header holds no absolute path of the training machine."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from aspects_export.model_description import absolute_paths
from aspects_train.weights import export_weights, read_metadata, recipe_metadata, relative_recipe


def _recipe(tmp_path: Path) -> dict:
    data = tmp_path / "data"
    return {
        "out_dir": str(tmp_path / "runs" / "synth"),
        "init_from": str(tmp_path / "runs" / "synth" / "init-phantoms.safetensors"),
        "train_pairs": [[str(data / "case1" / "dwi.nii.gz"), str(data / "case1" / "lab.nii.gz")],
                        [str(data / "case2" / "dwi.nii.gz"), str(data / "case2" / "lab.nii.gz")]],
        "val_pairs": [[str(data / "val" / "dwi.nii.gz"), str(data / "val" / "lab.nii.gz")]],
        "augment": {"gamma": [0.7, 1.5], "bias_file": "C:\\Users\\me\\bias.npz"},
        "lr": 0.001,
        "precision": "auto",
    }


def test_relative_recipe_keeps_names_and_paths_relative_to_the_data(tmp_path: Path) -> None:
    out = relative_recipe(_recipe(tmp_path))
    assert out["out_dir"] == "synth"
    assert out["init_from"] == "init-phantoms.safetensors"
    assert out["train_pairs"] == [["case1/dwi.nii.gz", "case1/lab.nii.gz"],
                                  ["case2/dwi.nii.gz", "case2/lab.nii.gz"]]
    assert out["val_pairs"] == [["val/dwi.nii.gz", "val/lab.nii.gz"]]
    assert out["augment"] == {"gamma": [0.7, 1.5], "bias_file": "bias.npz"}
    assert (out["lr"], out["precision"]) == (0.001, "auto")
    assert not list(absolute_paths(out, "recipe"))
    already = {"out_dir": "runs/synth", "init_from": None, "train_pairs": [], "val_pairs": []}
    assert relative_recipe(already) == {**already, "out_dir": "synth"}


def test_exported_weights_carry_a_relative_recipe(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(_recipe(tmp_path)))
    meta = recipe_metadata(recipe)
    assert str(tmp_path) not in meta["recipe"]
    assert not list(absolute_paths(json.loads(meta["recipe"]), "recipe"))
    from aspects_export.checkpoints import untrained_state_dict

    ckpt = tmp_path / "best.pt"
    torch.save(untrained_state_dict(), ckpt)
    weights = export_weights(ckpt, tmp_path / "out" / "w.safetensors", meta)
    stored = read_metadata(weights)
    assert json.loads(stored["recipe"])["init_from"] == "init-phantoms.safetensors"
    assert stored["source"] == "best.pt"
    assert str(tmp_path) not in json.dumps(stored)
