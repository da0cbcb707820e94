import torch

from advfeatures.construct import MatchingConfig, RelabelConfig, build_dataset, load_constructed, random_pairing
from advfeatures.evaluate import AttackSpec, accuracy, evaluate_suite
from advfeatures.models import build_model, representation
from advfeatures.train import AdversaryConfig, TrainConfig, lr_at, train_model

CFG = dict(epochs=8, batch_size=64, lr=0.1, crop_padding=1, flip=False, milestones=(0.75,))


def _model(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_model("mlp", (1, 8, 8), 10, hidden=(64,))


def test_training_learns_and_resume_gives_the_same_weights(digits, tmp_path):
    train, test = digits
    full = _model()
    train_model(full, train, TrainConfig(**CFG))
    assert accuracy(full, test) > 0.8
    # an interrupted run: killed after 3 of 8 epochs, then resumed from its checkpoint by a new process
    cfg = TrainConfig(**CFG)
    ckpt = tmp_path / "ckpt.pt"
    _train_epochs(_model(), train, cfg, ckpt, stop_after=3)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 3
    resumed = _model()
    train_model(resumed, train, cfg, checkpoint=ckpt)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


def _train_epochs(model, data, cfg, ckpt, stop_after):
    """Train, but stop (as if killed) after ``stop_after`` epochs."""
    import advfeatures.train as t

    real = t._save_checkpoint
    calls = {"n": 0}

    class Stop(Exception):
        pass

    def save(*a, **k):
        real(*a, **k)
        calls["n"] += 1
        if calls["n"] == stop_after:
            raise Stop

    t._save_checkpoint = save
    try:
        train_model(model, data, cfg, checkpoint=ckpt)
    except Stop:
        pass
    finally:
        t._save_checkpoint = real


def test_lr_schedule_follows_paper_milestones():
    cfg = TrainConfig(epochs=150, lr=0.1)
    assert lr_at(0, cfg) == 0.1 and abs(lr_at(50, cfg) - 0.01) < 1e-12 and abs(lr_at(100, cfg) - 0.001) < 1e-12


def test_adversarial_training_is_more_robust(digits):
    train, test = digits
    std, rob = _model(), _model()
    train_model(std, train, TrainConfig(**CFG))
    train_model(rob, train, TrainConfig(**CFG, adversary=AdversaryConfig(norm="L2", eps=1.0, steps=3)))
    res_std = evaluate_suite(std, test, [AttackSpec(norm="L2", eps=0.75, steps=10)])
    res_rob = evaluate_suite(rob, test, [AttackSpec(norm="L2", eps=0.75, steps=10)])
    assert res_rob["robust_accuracy"][0]["accuracy"] > res_std["robust_accuracy"][0]["accuracy"] + 0.1


def test_pairing_is_a_derangement():
    for n in (2, 3, 10, 257):
        p = random_pairing(n, seed=n)
        assert sorted(p.tolist()) == list(range(n)) and not (p == torch.arange(n)).any()


def test_constructions_resume_and_report(digits, tmp_path):
    train, _ = digits
    src = train.head(60)
    model = _model()
    train_model(model, train, TrainConfig(**{**CFG, "epochs": 2}))
    kw = dict(matching=MatchingConfig(steps=30, step_size=0.1), seed=5, batch_size=16, shard_size=25)
    build_dataset("d_nr", model, src, tmp_path / "a", **kw)
    ref, manifest = load_constructed(tmp_path / "a", classes=src.classes)
    assert manifest["count"] == 60 and len(manifest["shards"]) == 3
    # D_NR keeps the source labels and the matched representation is close to the source's
    assert torch.equal(ref.labels, src.labels)
    d_start = (representation(model, src.images[random_pairing(60, 5)]) - representation(model, src.images)).norm(dim=1)
    d_end = (representation(model, ref.images) - representation(model, src.images)).norm(dim=1)
    assert d_end.mean() < 0.5 * d_start.mean()
    # interrupt: delete a shard and the manifest, rebuild → identical tensors
    (tmp_path / "a" / "shard-00001.safetensors").unlink()
    (tmp_path / "a" / "manifest.json").unlink()
    build_dataset("d_nr", model, src, tmp_path / "a", **kw)
    again, _ = load_constructed(tmp_path / "a", classes=src.classes)
    assert torch.equal(again.images, ref.images)


def test_relabelled_sets_reach_their_targets(digits, tmp_path):
    train, _ = digits
    src = train.head(100)
    model = _model()
    train_model(model, train, TrainConfig(**CFG))
    m_det = build_dataset("d_det", model, src, tmp_path / "det", relabel=RelabelConfig(eps=2.0, steps=30, step_size=0.3))
    det, _ = load_constructed(tmp_path / "det", classes=src.classes)
    assert torch.equal(det.labels, (src.labels + 1) % 10)
    assert m_det["summary"]["share"] > 0.9
    m_rand = build_dataset("d_rand", model, src, tmp_path / "rand", relabel=RelabelConfig(eps=2.0, steps=30, step_size=0.3))
    rnd, _ = load_constructed(tmp_path / "rand", classes=src.classes)
    assert (rnd.labels != src.labels).all() and m_rand["summary"]["share"] > 0.9
    assert ((rnd.images - src.images).flatten(1).norm(dim=1) <= 2.0 + 1e-4).all()
