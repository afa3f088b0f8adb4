"""Optuna's NSGA-II sampler in a form Ray Tune can pickle.

Tune pickles its searcher when a ``Tuner`` is built and whenever it checkpoints an
experiment. Optuna 5's genetic samplers hold a ``threading.Lock`` (it guards an
in-process generation cache), and a lock cannot be pickled, so a plain
``NSGAIISampler`` makes ``tune.Tuner(...)`` raise ``TypeError: cannot pickle
'_thread.lock' object``. The subclass below pickles every attribute except locks
and gives the unpickled sampler fresh ones, which is equivalent: a lock carries no
state between processes. Optuna 4 has no lock, and the subclass changes nothing there.
"""

from __future__ import annotations

import threading

from optuna.samplers import NSGAIISampler

_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


class PicklableNSGAIISampler(NSGAIISampler):
    """``NSGAIISampler`` whose pickled state leaves out its thread locks."""

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_dynvid_locks"] = [k for k, v in state.items() if isinstance(v, _LOCK_TYPES)]
        for key in state["_dynvid_locks"]:
            del state[key]
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        for key in state.pop("_dynvid_locks", []):
            state[key] = threading.Lock()
        self.__dict__.update(state)
