"""ANT reads back to the host only what its control flow needs (issue 20: a GPU run of ANT
crawled at 0.2–0.4 clips/s on host–device synchronisations in per-frame, per-block and
per-box loops). Counted with SyncCounter, so the budget holds on a CPU-only machine."""

from __future__ import annotations

import torch

from dynvid.methods.ant.evaluation import AntMode, run_videos
from dynvid.methods.ant.model import ANTDetector, row_groups
from dynvid.methods.ant.training import gate_step, static_step
from dynvid.metrics.syncs import SyncCounter

B, T, KEY_EVERY = 4, 6, 3
NONKEY = sum(t % KEY_EVERY != 0 for t in range(T))
BOX = {"boxes": torch.tensor([[0.1, 0.1, 0.5, 0.6]]), "labels": torch.tensor([1])}


def _detector():
    torch.manual_seed(0)
    return ANTDetector(num_classes=3, fpn_channels=16, fpn_layers=1, head_repeats=1)


def test_a_training_step_reads_one_width_choice_per_gated_stage_and_its_logs_once():
    m = _detector().train()
    clips = torch.randn(B, T, 3, 64, 64)
    targets = [[BOX] * T for _ in range(B)]
    gate_step(m, clips, targets, tau=1.0, key_every=KEY_EVERY)  # the blocks read their statistics flag once
    with SyncCounter() as s:
        loss, logs = gate_step(m, clips, targets, tau=1.0, key_every=KEY_EVERY)
    # per non-key frame, each of the 6 gated stages reads which rows run which width; the logs
    # are read together; the targets go to the device in one copy
    assert s.reads == 6 * NONKEY + 1, s.counts
    assert s.counts["transfer"] <= 1, s.counts
    assert set(logs) == {"loss", "det_loss", "kd_loss", "cost", "cost_term"} and torch.isfinite(loss)
    with SyncCounter() as s:
        static_step(m, clips[:, 0], [BOX] * B)
    assert s.reads == 1, s.counts


def test_evaluation_reads_the_widths_and_one_table_of_detections_per_frame():
    m = _detector().eval()
    clips = torch.randn(B, T, 3, 64, 64)
    run_videos(m, clips[:, :2], AntMode(threshold=None, key_every=2), count=False)  # flags read once
    with SyncCounter() as s:  # no post-processing: only the width choices
        run_videos(m, clips, AntMode(threshold=None, key_every=KEY_EVERY), count=False)
    assert s.reads == 6 * NONKEY, s.counts
    post = dict(score_threshold=0.05, iou_threshold=0.5, max_detections=100)
    with SyncCounter() as s:
        out = run_videos(m, clips, AntMode(threshold=None, key_every=KEY_EVERY), count=False, post=post)
    # + per frame: the detections of all videos in one read. On the CPU, where reads are free,
    # post-processing also cuts the candidates (one int) and runs torchvision's NMS per image;
    # on a device one NMS kernel serves the batch (its mask is read back by torchvision itself)
    assert s.counts["tolist"] == 6 * NONKEY + T, s.counts
    assert s.counts["__int__"] <= T and s.reads == s.counts["tolist"] + s.counts["__int__"] + s.counts["numpy"]
    assert len(out["dets"]) == B and all(len(d) == T for d in out["dets"])
    with SyncCounter() as s:  # the key-frame rule adds one read per frame after the first
        out = run_videos(m, clips, AntMode(threshold=0.1), count=False)
    gated = int((~out["keys"]).any(0).sum())  # frames where some video ran the gates: 6 width reads each
    assert s.counts["tolist"] == (T - 1) + 6 * gated and s.reads == s.counts["tolist"], (s.counts, gated)


def test_row_groups_split_rows_by_value_without_reading_back():
    labels = torch.tensor([2, 0, 2, 1, 0])
    host = labels.tolist()
    with SyncCounter() as s:
        groups = row_groups(labels, host)
    assert s.total == 0, s.counts
    assert [g[0] for g in groups] == [0, 1, 2]
    assert [g[1].tolist() for g in groups] == [[1, 4], [3], [0, 2]]
    assert [g[2].tolist() for g in groups] == [[1, 4], [3], [0, 2]]
    assert row_groups(torch.tensor([5, 5]), [5, 5]) == [(5, None, None)]


def test_the_statistics_flag_is_read_once_and_follows_state_dict_loads():
    m = _detector()
    block = m._elastic_blocks()[0]
    with SyncCounter() as s:
        assert not m.width_stats_ready
        assert not m.width_stats_ready
    assert s.counts["__bool__"] == 1, s.counts  # read once, then kept on the host
    for b in m._elastic_blocks():
        b.set_width_stats_ready(True)
    ready = {k: v.clone() for k, v in m.state_dict().items()}
    assert m.width_stats_ready
    for b in m._elastic_blocks():
        b.set_width_stats_ready(False)
    assert not m.width_stats_ready and not block.stats_ready()
    m.load_state_dict(ready)  # the loaded buffer says ready: the host copy must follow it
    assert m.width_stats_ready and block.stats_ready()
