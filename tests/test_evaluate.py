"""`python -m vitedge.evaluate` reproduces the training engine's accuracy through the runtime interface."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vitedge import checkpoints, evaluate
from vitedge.data import CLASSES, save_splits
from vitedge.model import create_model
from vitedge.preprocess import Preprocess
from vitedge.engine import evaluate as train_evaluate


@pytest.fixture(scope="module")
def setup(tmp_path_factory, synthetic_splits):
    d = tmp_path_factory.mktemp("eval")
    save_splits(d / "data", synthetic_splits, {"kind": "synthetic"})
    model = create_model("vit-micro-48", depth=1).eval()
    checkpoints.save_model(d / "m.pt", model, Preprocess(), list(CLASSES))
    return d, model


def test_matches_training_engine(setup, synthetic_splits):
    d, model = setup
    result = evaluate.evaluate_artefact(str(d / "m.pt"), str(d / "data"), "test", runtime="torch")
    ref = train_evaluate(model, synthetic_splits["test"], Preprocess())
    assert result["top1"] == pytest.approx(ref["top1"])
    assert result["confusion"] == ref["confusion"]


def test_flip_tta_averages_mirrored_views(setup, synthetic_splits):
    from vitedge import runtimes

    d, _ = setup
    rt = runtimes.load(d / "m.pt", runtime="torch")
    split = synthetic_splits["val"].subset(np.arange(8))
    plain = evaluate.predict_split(rt, split, progress=False)
    tta = evaluate.predict_split(rt, split, flip_tta=True, progress=False)
    mirrored = rt.predict(np.ascontiguousarray(rt.preprocess(split.images)[..., ::-1]))
    np.testing.assert_allclose(tta, (plain + mirrored) / 2, atol=1e-5)


def test_cli_json_and_errors(setup, capsys):
    d, _ = setup
    assert evaluate.main(["--model", str(d / "m.pt"), "--data", str(d / "data"), "--split", "val", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "val" and out["n"] == 7 * 15 and set(out["per_class"]) == set(CLASSES)
    assert evaluate.main(["--model", str(d / "missing.pt"), "--data", str(d / "data")]) == 2
    assert "error:" in capsys.readouterr().err
    assert evaluate.main(["--model", str(d / "m.pt"), "--data", str(d / "nowhere")]) == 2


@pytest.mark.fer2013
@pytest.mark.slow
def test_shipped_model_accuracy_reproduces_on_fer2013(fer_zip):
    """The README's claim for the shipped model: `vitedge.evaluate` on PrivateTest gives what its
    meta.json records, to 0.1 point."""
    from vitedge.infer import packaged_model

    shipped = packaged_model()
    if shipped is None:
        pytest.skip("no model shipped in vitedge/assets/model/")
    for meta_path in shipped.glob("*/meta.json"):
        recorded = json.loads(meta_path.read_text())["shipped"]["test_accuracy"]
        result = evaluate.evaluate_artefact(str(meta_path.parent), str(fer_zip), split="test", threads=1)
        assert result["n"] == recorded["n"] == 3589
        assert abs(result["top1"] - recorded["top1"]) <= 0.001, (result["top1"], recorded["top1"])
