"""SpeechSeparation: a small MossFormer2 learns to separate, the recipe's optimiser, and `tsuite fit` of a config."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from tsuite.audio import corpus
from tsuite.audio.losses import separation_scores
from tsuite.audio.mixture_data import OnTheFlyMixtures, UtterancePool
from tsuite.audio.separation import SpeechSeparation, build_network, fit_to_mixture
from tsuite.cli import main
from tsuite.tables import InputError

REPO = Path(__file__).resolve().parents[2]
TINY_MOSSFORMER2 = {"enc_channels": 64, "model_dim": 64, "num_layers": 1, "query_key_dim": 32, "fsmn_channels": 32,
                    "group_size": 64, "dropout": 0.0}
needs_espeak = pytest.mark.skipif(not corpus.shutil.which("espeak-ng"), reason="espeak-ng is not installed")


@needs_espeak
def test_small_mossformer2_overfits_speech_mixtures_to_10_db_si_snri(tmp_path):
    torch.manual_seed(0)
    root = corpus.generate_corpus(tmp_path / "c", speakers=4, utterances=2, sample_rate=8000, seed=3)
    pool = UtterancePool.from_folder(root, 8000, num_speakers=2)
    fixed = OnTheFlyMixtures(pool, size=2, num_speakers=2, segment=4000, gain_db=5.0, seed=7)  # two 0.5 s mixtures
    items = [fixed[i] for i in range(2)]
    batch = {"mix": torch.stack([it["mix"] for it in items]), "sources": torch.stack([it["sources"] for it in items]),
             "name": [it["name"] for it in items]}
    model = SpeechSeparation(network="mossformer2", network_kwargs=TINY_MOSSFORMER2, lr=3e-3)
    with torch.no_grad():
        before = separation_scores(model(batch["mix"]), batch["sources"], batch["mix"], sdr=False)["si_snri"]
    trainer = pl.Trainer(max_steps=70, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, gradient_clip_val=5.0, num_sanity_val_steps=0)
    trainer.fit(model, DataLoader([batch], batch_size=None))
    model.eval()
    with torch.no_grad():
        after = separation_scores(model(batch["mix"]), batch["sources"], batch["mix"])
    assert before.mean() < 3.0  # an untrained network does not separate
    assert after["si_snri"].mean() > 10.0, after
    assert after["sdri"].mean() > 8.0, after


def test_optimiser_follows_the_recipe():
    model = SpeechSeparation(network="mossformer2", network_kwargs=TINY_MOSSFORMER2)
    config = model.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.Adam)
    assert config["optimizer"].param_groups[0]["lr"] == pytest.approx(1.5e-4)
    sched = config["lr_scheduler"]["scheduler"]
    assert isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau) and sched.factor == 0.5
    assert config["lr_scheduler"]["monitor"] == "val_loss"
    assert model.hparams.network_kwargs == TINY_MOSSFORMER2  # plain values: rebuilt from class path + hparams


def test_networks_are_built_by_name_and_unknown_names_are_refused():
    net = build_network("mossformer2", 3, TINY_MOSSFORMER2)
    assert net(torch.randn(2, 1000)).shape == (2, 3, 1000)
    with pytest.raises(ValueError, match="unknown network 'wavenet'"):
        build_network("wavenet", 2, None)


def test_sources_are_rescaled_to_add_up_to_the_mixture():
    torch.manual_seed(0)
    ref = torch.randn(3, 2, 500)
    est = ref * torch.tensor([[[0.1], [7.0]]])  # right shapes, wrong scales
    fitted = fit_to_mixture(est, ref.sum(1))
    torch.testing.assert_close(fitted, ref, atol=1e-3, rtol=1e-3)


def test_predict_frame_checks_its_input():
    model = SpeechSeparation(network="mossformer2", network_kwargs=TINY_MOSSFORMER2).eval()
    out = model.predict_frame(pd.DataFrame({"waveform": [np.random.randn(3000), list(np.random.randn(500))],
                                            "sample_rate": [16000, 8000]}))
    assert [len(v) for v in out["s1"]] == [3000, 500] and [len(v) for v in out["s2"]] == [3000, 500]
    with pytest.raises(InputError, match="no column 'waveform'"):
        model.predict_frame(pd.DataFrame({"audio": [np.zeros(10)]}))
    with pytest.raises(InputError, match="row 1: waveform has non-finite samples"):
        model.predict_frame(pd.DataFrame({"waveform": [np.ones(100), np.array([0.1, np.nan])]}))
    with pytest.raises(InputError, match=r"row 0: waveform has shape \(0,\)"):
        model.predict_frame(pd.DataFrame({"waveform": [np.zeros(0)]}))


@needs_espeak
def test_fit_tests_logs_scores_and_registers(mlflow_home):
    import mlflow

    config = REPO / "configs/audio/mossformer2_espeak.yaml"
    args = ["fit", "--config", str(config), "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "1",
            "--trainer.log_every_n_steps", "1", "--data.init_args.espeak_speakers", "3", "--data.init_args.espeak_utterances", "4",
            "--data.init_args.train_mixtures", "4", "--data.init_args.val_mixtures", "2",
            "--data.init_args.test_mixtures", "3", "--data.init_args.segment_seconds", "0.5",
            "--register", "sep", "--alias", "champion"]
    assert main(args) == 0
    run = mlflow.search_runs(experiment_names=["tsuite"]).iloc[0]
    for name in ("test_si_snri", "test_sdri", "val_loss", "train_loss"):
        assert np.isfinite(run[f"metrics.{name}"]), name
    scores = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{run['run_id']}/separation_scores.csv"))
    assert list(scores.columns) == ["mixture", "seconds", "si_snr", "si_snri", "sdr", "sdri"]
    assert len(scores) == 4 and scores["mixture"].iloc[-1] == "average"
    assert scores["si_snri"].iloc[-1] == pytest.approx(run["metrics.test_si_snri"], abs=1e-4)
    info = mlflow.models.get_model_info("models:/sep@champion")
    assert "Array(double)" in str(info.signature.inputs) and "chunk_seconds" in str(info.signature.params)
    # the Lightning checkpoint of the same run drives the separate job too
    import soundfile as sf

    ckpt = next(Path("outputs").rglob("*.ckpt"))
    wav = next(Path("outputs/corpora").rglob("utt000.wav"))
    assert main(["separate", "--model", str(ckpt), "--input", str(wav), "--output", "sep", "--no-progress"]) == 0
    assert sf.info(f"sep/{wav.stem}_s2.wav").frames == sf.info(str(wav)).frames
