"""bench_ant's targets from its rows (``targets_from_rows``): the static front at GMACs and at
milliseconds, where the front places ANT and where it cannot, and which rows are on it; the
fusion check's summary (``report.fusion_effect``) from its two rows."""

import pytest

import bench_ant  # jobs/ is on pytest's pythonpath (pyproject.toml)
from dynvid.methods.ant.report import SAME_WEIGHTS_D0, fusion_effect, fusion_summary


def _row(gmacs: float, ms: float, ap: float) -> dict:
    return {"gmacs_avg": gmacs, "latency_ms": ms, "AP": ap}


def _targets(rows: dict) -> dict:
    targets, _ = bench_ant.targets_from_rows(rows, 0.45)
    return {t["name"]: t for t in targets}


def test_a_cheaper_better_static_row_misses_the_front():
    rows = {SAME_WEIGHTS_D0: _row(0.30, 30.0, 0.55), "NAS 0.5": _row(0.14, 24.0, 0.54),
            "ANT τ=0.45": _row(0.16, 26.0, 0.52)}
    t = _targets(rows)
    for name in ("AP_above_static_NAS_front_at_GMACs", "AP_above_static_NAS_front_at_latency"):
        assert t[name]["value"] == pytest.approx(0.52 - 0.54) and not t[name]["met"] and "note" not in t[name]
    assert t["latency_speedup_vs_D0"]["value"] == pytest.approx(30 / 26)


def test_no_static_row_as_cheap_holds_but_says_it_is_not_placed():
    rows = {SAME_WEIGHTS_D0: _row(0.30, 30.0, 0.55), "NAS 0.5": _row(0.20, 25.0, 0.54),
            "ANT τ=0.45": _row(0.15, 26.0, 0.50)}
    t = _targets(rows)
    gmacs = t["AP_above_static_NAS_front_at_GMACs"]
    assert gmacs["met"] and gmacs["value"] == 0.0
    assert gmacs["note"].startswith("not placed") and "NAS 0.5 (0.2 GMACs)" in gmacs["note"]
    assert "(ANT -0.0400)" in gmacs["note"]
    _, summary = bench_ant.targets_from_rows(rows, 0.45)
    assert summary["nas_front_placed"] == {"gmacs": False, "latency": True}
    assert bench_ant._front(summary, "gmacs") == "not placed" and bench_ant._front(summary, "latency") == "-0.0400"
    ms = t["AP_above_static_NAS_front_at_latency"]  # at ms NAS 0.5 is cheaper and better: placed, below
    assert ms["value"] == pytest.approx(-0.04) and not ms["met"] and "note" not in ms


def test_the_replay_is_placed_on_its_own_milliseconds():
    """At the replay size only the replay's timings count: a static row cheaper there places
    ANT; one that is cheaper only at the native size does not."""
    rows = {SAME_WEIGHTS_D0: {**_row(0.30, 30.0, 0.55), "latency_ms_512": 200.0},
            "NAS 0.5": {**_row(0.14, 24.0, 0.54), "latency_ms_512": 160.0},
            "NAS 0.3": _row(0.10, 10.0, 0.60),  # not timed at 512: left out of the replay's front
            "ANT τ=0.45": {**_row(0.16, 26.0, 0.52), "latency_ms_512": 150.0}}
    targets, summary = bench_ant.targets_from_rows(rows, 0.45, replay_size=512)
    replay = summary["replay"]["512"]
    assert replay["latency_speedup"] == pytest.approx(200 / 150) and not replay["front_placed"]
    assert replay["AP_above_static_front_at_latency"] == 0.0
    assert "AP_above_static_front_at_512" not in {t["name"] for t in targets}  # reported, not a target
    rows["NAS 0.5"]["latency_ms_512"] = 140.0
    replay = bench_ant.targets_from_rows(rows, 0.45, replay_size=512)[1]["replay"]["512"]
    assert replay["front_placed"] and replay["AP_above_static_front_at_latency"] == pytest.approx(0.52 - 0.54)


def test_the_gates_own_subnet_is_on_the_static_front_and_ant_forced_to_it_is_not():
    """compare()'s fusion rows: the static subnet of the gates' widths is a static network (on
    the front); ANT forced to it is a dynamic row (not on it)."""
    rows = {SAME_WEIGHTS_D0: _row(0.30, 30.0, 0.55), "NAS 0.5": _row(0.18, 26.0, 0.52),
            "ANT τ=0.45": _row(0.19, 27.0, 0.53), "ANT forced 662111": _row(0.17, 20.0, 0.60)}
    t = _targets(rows)
    assert t["AP_above_static_NAS_front_at_latency"]["value"] == pytest.approx(0.53 - 0.52)
    rows["static 662111 (gates' subnet)"] = _row(0.15, 24.0, 0.56)
    t = _targets(rows)
    for name in ("AP_above_static_NAS_front_at_GMACs", "AP_above_static_NAS_front_at_latency"):
        assert t[name]["value"] == pytest.approx(0.53 - 0.56) and not t[name]["met"]


def test_fusion_effect_from_the_forced_and_static_rows():
    forced = {"AP": 0.55, "gmacs_avg": 0.19, "latency_ms": 18.5}
    static = {"AP": 0.56, "gmacs_avg": 0.15, "latency_ms": 15.2}
    f = fusion_effect(forced, static, [6, 6, 2, 1, 1, 1], 0.45)
    assert f["AP_added"] == pytest.approx(-0.01) and f["ms_added"] == pytest.approx(3.3)
    assert (f["ant_forced_ms"], f["static_ms"], f["ratios"], f["threshold"]) == (18.5, 15.2, [6, 6, 2, 1, 1, 1], 0.45)
    untimed = fusion_effect({"AP": 0.55, "gmacs_avg": 0.19}, {"AP": 0.56, "gmacs_avg": 0.15}, [1] * 6, 0.45)
    assert "ms_added" not in untimed and untimed["static_gmacs"] == 0.15
    assert fusion_summary(f) == ("ANT forced to it 0.5500 AP, 18.5 ms; the static subnet 0.5600, 15.2 ms "
                                 "(AP -0.0100, +3.3 ms)")
    assert fusion_summary(untimed) == "ANT forced to it 0.5500 AP; the static subnet 0.5600 (AP -0.0100)"
