"""Learned translators (models.translator_nets, models.train_translators): the shipped asset
loads and refuses another version, every ordered pair translates a real frame (rt__3) to the
right count and, for the 2D formats, closer to the destination's own analysis than holding the
key frame's values, and the training script runs and resumes on a tiny subset."""

import json

import numpy as np
import pytest
import torch

from codec_core.format import FEATURE_FORMATS
from models.feature_formats import analyse, key_features
from models.train_translators import TRAIN_DIR, TranslatorTrainConfig, train
from models.translator_nets import TRANSLATORS_ASSET, VERSION, TranslatorWeightsError, load_nets
from models.translators import LearnedTranslator, TranslatorError, make_translator

PAIRS = [(s, d) for s in FEATURE_FORMATS for d in FEATURE_FORMATS if s != d]


def test_the_asset_loads_small_with_its_version():
    nets = load_nets()
    assert TRANSLATORS_ASSET.stat().st_size < 2_000_000
    assert torch.load(TRANSLATORS_ASSET, weights_only=True)["version"] == VERSION
    assert nets.counts == {f: FEATURE_FORMATS[f].count for f in FEATURE_FORMATS}


def test_another_version_is_refused_in_one_line(tmp_path):
    saved = torch.load(TRANSLATORS_ASSET, weights_only=True)
    saved["version"] = "translators_v0"
    path = tmp_path / "old.pt"
    torch.save(saved, path)
    with pytest.raises(TranslatorWeightsError, match="translators_v0") as err:
        load_nets(path)
    assert "\n" not in str(err.value)
    with pytest.raises(TranslatorWeightsError, match="no learned translators"):
        load_nets(tmp_path / "missing.pt")


@pytest.fixture(scope="module")
def frames(rt3_key):
    tracked, ref = rt3_key
    return ref, [t.landmarks for t in tracked[2::3] if t.landmarks is not None]


@pytest.mark.parametrize("src,dst", PAIRS)
def test_every_pair_translates_a_real_frame(frames, src, dst):
    ref, lms = frames
    translator = make_translator(src, dst, ref, method="learned")
    assert isinstance(translator, LearnedTranslator) and (translator.src, translator.dst) == (src, dst)
    got = np.stack([translator.translate(analyse(src, lm, ref)) for lm in lms])
    assert got.shape == (len(lms), FEATURE_FORMATS[dst].count) and np.isfinite(got).all()
    if dst in ("fomm", "cfte"):      # what the held-out validation says the networks learned well
        own = np.stack([analyse(dst, lm, ref) for lm in lms])
        key = key_features(dst, ref)
        assert np.sqrt(np.mean((got - own) ** 2)) < np.sqrt(np.mean((own - key) ** 2))
    with pytest.raises(TranslatorError, match="shape"):
        translator.translate(np.zeros(3))


def test_training_runs_two_steps_and_resumes(tmp_path):
    clip = "dt__M030_front_neutral_level1_001"
    if not (TRAIN_DIR / f"{clip}.mp4").exists():
        pytest.skip("../shared/data/train is missing")
    config = TranslatorTrainConfig(clips=[clip], validation=[], out=tmp_path / "run", weights=tmp_path / "t.pt",
                                   max_frames=8, stride=2, keys=1, synthetic=4, steps=2, batch=8, latent=8, hidden=16,
                                   log_every=1, checkpoint_every=1, validate_every=1)
    first = train(config, fresh=True, progress=False)
    assert first["steps_run"] == 2
    prepared = (tmp_path / "run" / "data.npz").stat().st_mtime_ns
    config.steps = 3
    second = train(config, progress=False)
    assert second["steps_run"] == 3                                   # resumed, not started over
    assert (tmp_path / "run" / "data.npz").stat().st_mtime_ns == prepared  # the data prepared once
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "step" in r] == [1, 2, 3]
    nets = load_nets(config.weights)
    assert nets.latent == 8


def test_training_writes_under_out_and_installs_only_when_asked(tmp_path, monkeypatch):
    """Neither the defaults nor models/translators.yaml write the shipped weights: a --fresh run
    would overwrite them at its first validation.  `--install` copies the trained weights there
    once training is over."""
    from pathlib import Path

    import models.train_translators as train_translators

    assert TranslatorTrainConfig().weights == Path("out/translators") / TRANSLATORS_ASSET.name
    shipped = TranslatorTrainConfig.load(Path(__file__).parents[1] / "models" / "translators.yaml")
    assert shipped.weights.resolve() != TRANSLATORS_ASSET.resolve() and shipped.weights.parts[0] == "out"
    assert TranslatorTrainConfig(out=tmp_path / "run").weights == tmp_path / "run" / TRANSLATORS_ASSET.name

    def fake_train(config, fresh=False, progress=True):
        config.weights.parent.mkdir(parents=True, exist_ok=True)
        config.weights.write_bytes(b"trained")
        return {"steps_run": 0}

    settings = tmp_path / "settings.yaml"
    settings.write_text(f"out: {tmp_path / 'run'}\n")
    installed = tmp_path / "assets" / "translators_v2.pt"
    installed.parent.mkdir()
    monkeypatch.setattr(train_translators, "train", fake_train)
    monkeypatch.setattr(train_translators, "TRANSLATORS_ASSET", installed)
    assert train_translators.main(["--config", str(settings)]) == 0
    assert not installed.exists()
    assert train_translators.main(["--config", str(settings), "--install"]) == 0
    assert installed.read_bytes() == b"trained"
