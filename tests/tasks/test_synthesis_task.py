"""The synthesis (FedGAN) task end to end: pre-training transfer, G/D aggregation, evaluation,
resume, DP, sampling a data set and exporting the generator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedsilo.config import ConfigError, config_from_dict
from fedsilo.report import write_run_files
from fedsilo.report.summary import final_rows
from fedsilo.run.load import initial_weights
from fedsilo.run.loop import RunInterrupted
from fedsilo.run.start import resume_run, start_run
from fedsilo.tasks import make_task
from fedsilo.tasks.synthesis.metrics import realism_score
from helpers import gan_config, pretrain_config


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    run = start_run(gan_config(), tmp_path_factory.mktemp("gan") / "run")
    write_run_files(run.path)
    return run


def test_run_writes_gan_metrics_and_grids(gan_run):
    glob = final_rows(gan_run)["global"]
    for key in ("test_realism", "test_fd", "test_kid", "test_precision", "test_recall", "test_density",
                "test_coverage", "test_diversity"):
        assert np.isfinite(glob[key]), key
    assert 0 <= glob["test_realism"] <= 1 and glob["test_fd"] >= 0
    assert glob["test_realism_ci_low"] <= glob["test_realism"] <= glob["test_realism_ci_high"]
    assert glob["test_realism_n"] == 24
    sites = final_rows(gan_run)
    assert {"val_d_real", "val_d_fake"} <= set(sites["site-1"])
    for name in ("round-000.png", "round-002.png", "nearest-real.png"):
        assert (gan_run.path / "samples" / name).stat().st_size > 500
    assert "Generated samples" in (gan_run.path / "report.html").read_text()


def test_generator_and_discriminator_are_both_averaged(tmp_path):
    """One federated round = the example-weighted mean of what each site trains alone in that round."""
    fed = start_run(gan_config("federation.rounds=1", "federation.eval_every=5"), tmp_path / "fed")
    local = start_run(gan_config("federation.rounds=1", "federation.eval_every=5", mode="local"), tmp_path / "local")
    g = torch.load(fed.final_path, weights_only=False)["model"]
    sites = torch.load(local.final_path, weights_only=False)["site_models"]
    n = {s["name"]: s["num_train"] for s in fed.read_sites()}
    total = sum(n.values())
    init = make_task(gan_config()).initial_state()
    for prefix in ("generator.", "discriminator."):
        keys = [k for k in g if k.startswith(prefix) and g[k].is_floating_point()]
        assert keys
        for k in keys:
            mean = sum(sites[s][k].double() * n[s] / total for s in n)
            torch.testing.assert_close(g[k].double(), mean, rtol=1e-5, atol=1e-6, msg=k)
        assert any(not torch.equal(g[k], init[k]) for k in keys)  # it trained


def test_pretrained_ct_weights_are_loaded_and_fine_tuning_starts_from_them(tmp_path):
    pre = start_run(pretrain_config(), tmp_path / "pretrain")
    src = torch.load(pre.final_path, weights_only=False)["model"]
    task = make_task(gan_config(f"gan.pretrained={pre.path}"))
    initial, fresh = initial_weights(task), make_task(gan_config()).initial_state()
    # 1 grey channel -> 3 colour channels: the generator's output layer is replicated per channel,
    # the discriminator's input layer replicated and divided by 3
    for c in range(3):
        torch.testing.assert_close(initial["generator.head.0.weight"][:, c], src["generator.head.0.weight"][:, 0])
        torch.testing.assert_close(initial["discriminator.stem.0.weight"][:, c],
                                   src["discriminator.stem.0.weight"][:, 0] / 3)
    torch.testing.assert_close(initial["generator.blocks.0.0.weight"], src["generator.blocks.0.0.weight"])
    assert not torch.equal(initial["generator.blocks.0.0.weight"], fresh["generator.blocks.0.0.weight"])
    # the federated run really starts there: with a vanishing learning rate its weights stay put
    run = start_run(gan_config(f"gan.pretrained={pre.path}", "gan.lr_g=1e-30", "gan.lr_d=1e-30",
                               "federation.rounds=1", "federation.eval_every=5"), tmp_path / "finetune")
    final = torch.load(run.final_path, weights_only=False)["model"]
    for k in ("generator.head.0.weight", "generator.blocks.0.0.weight", "discriminator.stem.0.weight"):
        torch.testing.assert_close(final[k], initial[k], rtol=0, atol=1e-6, msg=k)
    with pytest.raises(Exception, match="is a classification run|holds no generator|not a synthesis run"):
        from fedsilo.run.folder import RunDir

        cls_dir = tmp_path / "cls"
        RunDir.create(cls_dir, config_from_dict({"experiment": {"name": "c"}}), "local")
        initial_weights(make_task(gan_config(f"gan.pretrained={cls_dir}")))


def test_reference_discriminator_prefers_real_images_to_noise(gan_run):
    task = make_task(gan_run.cfg)
    refs = task.references(torch.device("cpu"))
    x, _ = task.test_data().batch(torch.arange(len(task.test_data())))
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert realism_score(refs.discriminator, x).value > realism_score(refs.discriminator, noise).value


def test_resume_gives_the_same_generator(tmp_path):
    cfg = gan_config("federation.rounds=3", "federation.eval_every=3")
    whole = start_run(cfg, tmp_path / "whole")

    def stop(rnd: int) -> None:
        if rnd == 1:
            raise RunInterrupted("test")

    with pytest.raises(RunInterrupted):
        start_run(cfg, tmp_path / "part", on_round_end=stop)
    resumed = resume_run(tmp_path / "part")
    a = torch.load(whole.final_path, weights_only=False)["model"]
    b = torch.load(resumed.final_path, weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dp_trains_only_the_discriminator_privately(tmp_path):
    run = start_run(gan_config("privacy.mode=sample", "privacy.noise_multiplier=1.0", "federation.rounds=1",
                               "federation.eval_every=5"), tmp_path / "dp")
    rows = final_rows(run)
    assert rows["site-1"]["train_epsilon"] > 0
    state = torch.load(run.final_path, weights_only=False)["model"]
    assert not any(k.startswith("discriminator.") and "running_mean" in k for k in state)  # GroupNorm
    assert any(k.startswith("generator.") and "running_mean" in k for k in state)  # still BatchNorm


def test_sample_round_trips_through_the_loaders(gan_run, tmp_path, caplog):
    from fedsilo.data.sources.imagefolder import load_image_folder
    from fedsilo.data.sources.medmnist import load_medmnist
    from fedsilo.inference.sample import sample_run

    with caplog.at_level("INFO", logger="fedsilo.progress"):
        out = sample_run(gan_run.path, 12, tmp_path / "syn", seed=3)
    assert [r.getMessage().split(" (")[0] for r in caplog.records if r.name == "fedsilo.progress"] == [
        "sample: images generated 12/12"]
    npz = load_medmnist(out / "synthetic.npz", "train", num_classes=5)
    folder = load_image_folder(out, "labels.csv", image_dir="images", num_classes=5)
    assert npz.images.shape == (12, 28, 28, 3) == folder.images.shape
    np.testing.assert_array_equal(npz.images, folder.images)
    np.testing.assert_array_equal(npz.labels, folder.labels)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["privacy"]["guarantee"] == "no formal DP" and prov["round"] == 2 and prov["count"] == 12
    assert [s["name"] for s in prov["sites"]] == ["site-1", "site-2"]
    again = sample_run(gan_run.path, 12, tmp_path / "syn2", seed=3)
    np.testing.assert_array_equal(load_medmnist(again / "synthetic.npz", "train").images, npz.images)
    with pytest.raises(ValueError, match="--grade needs a conditional generator"):
        sample_run(gan_run.path, 4, tmp_path / "syn3", grade=2)


@pytest.mark.parametrize("labels, grade, source, warned", [
    ([3, 3, 3, 3], None, "predicted by the reference grade classifier", True),
    ([3, 3, 1, 3], None, "predicted by the reference grade classifier", False),
    ([3, 3, 3, 3], 3, "conditioning grade", False),  # asked for grade 3
    ([0, 0, 0, 0], None, "none (ungraded abdominal slices; label 0)", False),
    ([2], None, "conditioning grade", False),
])
def test_sample_warns_when_a_set_sampled_for_every_grade_holds_one(caplog, labels, grade, source, warned):
    from fedsilo.inference.sample import warn_single_grade

    with caplog.at_level("WARNING", logger="fedsilo.inference.sample"):
        warn_single_grade(np.array(labels), grade, source)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ([f"All 4 sampled images have grade 3 (labels: {source}): the generator does not cover the "
                         "other grades (it collapsed, or trained too briefly, as a smoke test does); check the set "
                         "before using it"] if warned else [])


def test_conditional_generator_samples_the_requested_grade(tmp_path):
    from fedsilo.data.sources.medmnist import load_medmnist
    from fedsilo.inference.sample import sample_run

    run = start_run(gan_config("gan.conditional=true", "federation.rounds=1"), tmp_path / "cond")
    glob = final_rows(run)["global"]
    assert {"test_tstr_accuracy", "test_tstr_kappa", "test_trtr_accuracy"} <= set(glob)
    out = sample_run(run.path, 10, tmp_path / "g3", grade=3)
    assert set(load_medmnist(out / "synthetic.npz", "train").labels.tolist()) == {3}


def test_generator_export_matches_pytorch(gan_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from fedsilo.inference.export import export_run
    from fedsilo.run.load import load_trained

    path = export_run(gan_run.path, "onnx", tmp_path)
    code = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"code": code.numpy()})[0]
    with torch.no_grad():
        expected = load_trained(gan_run.path).model.generator.eval()(code).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert json.loads((tmp_path / "contract-onnx.json").read_text())["output"]["shape"] == ["batch", 3, 28, 28]


def test_bad_synthesis_configs_are_rejected():
    with pytest.raises(ConfigError, match="data.image_size must be one of 28, 32, 64, 128 for the DCGAN"):
        gan_config("data.image_size=48")
    with pytest.raises(ConfigError, match="gan.conditional needs graded fundus images"):
        pretrain_config("gan.conditional=true")
    with pytest.raises(ConfigError, match="gan.label_smoothing"):
        gan_config("gan.label_smoothing=0.7")


def test_nearest_real_grid_shows_the_copied_training_image_under_each_sample(tmp_path):
    from PIL import Image

    from fedsilo.tasks.synthesis.data import all_images
    from fedsilo.tasks.synthesis.grids import save_grid_png
    from fedsilo.tasks.synthesis.task import _scale

    task = make_task(gan_config())
    real, _ = all_images(task.pooled_train())
    copies = real[[3, 17, 42, len(real) - 1]]  # a generator that outputs copies of training images k
    shown = task.nearest_real_grid(copies, tmp_path / "nearest.png")
    expected = save_grid_png(torch.cat([copies, copies]), tmp_path / "expected.png", nrow=len(copies),
                             scale=_scale(copies))
    np.testing.assert_array_equal(np.asarray(Image.open(shown)), np.asarray(Image.open(expected)))


def test_a_private_generators_provenance_says_what_epsilon_covers(tmp_path):
    from fedsilo.inference.sample import sample_run

    run = start_run(gan_config("privacy.mode=sample", "privacy.noise_multiplier=1.0", "federation.rounds=1",
                               "privacy.reproducible_noise=true"), tmp_path / "dp")
    prov = json.loads((sample_run(run.path, 8, tmp_path / "syn", seed=0) / "provenance.json").read_text())
    privacy = prov["privacy"]
    assert privacy["guarantee"] == "(sample-level) differential privacy"
    # the release's epsilon is the largest any site spent, as the run recorded it
    spent = {s: v["train_epsilon"] for s, v in final_rows(run).items() if "train_epsilon" in v}
    assert set(spent) == {"site-1", "site-2"} and privacy["site_epsilon"] == pytest.approx(spent)
    assert privacy["epsilon"] == pytest.approx(max(spent.values()))
    assert privacy["noise"] == "reproducible noise: simulation only, not a privacy guarantee"
    # unconditional: grades come from a reference classifier trained without DP
    assert privacy["covers"].startswith("the generated images only") and "not covered by epsilon" in privacy["covers"]
    write_run_files(run.path)
    assert "reproducible noise: simulation only, not a privacy guarantee" in (run.path / "MODEL_CARD.md").read_text()
    assert "reproducible noise: simulation only, not a privacy guarantee" in (run.path / "report.html").read_text()
