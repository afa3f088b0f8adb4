"""The NSGA-II sampler Tune pickles (``dynvid.engine._optuna``)."""

import pickle

import optuna

from dynvid.engine._optuna import PicklableNSGAIISampler


def _objectives(trial):
    x = trial.suggest_float("x", 0.0, 2.0)
    return x, (x - 1.0) ** 2


def _study(sampler):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(_objectives, n_trials=6)
    return [t.params["x"] for t in study.trials]


def test_sampler_pickles_and_samples_like_the_original():
    """A pickled-and-restored sampler proposes what the original proposes from the same state."""
    restored = pickle.loads(pickle.dumps(PicklableNSGAIISampler(seed=3)))
    assert isinstance(restored, optuna.samplers.NSGAIISampler)
    assert _study(restored) == _study(PicklableNSGAIISampler(seed=3))


def test_locks_are_recreated_after_unpickling():
    sampler = PicklableNSGAIISampler(seed=0)
    locks = [k for k, v in vars(sampler).items() if hasattr(v, "acquire")]
    restored = pickle.loads(pickle.dumps(sampler))
    for key in locks:
        lock = getattr(restored, key)
        assert lock is not getattr(sampler, key) and lock.acquire(blocking=False)
        lock.release()
    assert "_dynvid_locks" not in vars(restored)
