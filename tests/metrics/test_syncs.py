"""SyncCounter counts the calls that make a CUDA host wait for the device, on any machine."""

from __future__ import annotations

import torch

from dynvid.metrics.syncs import SyncCounter


def test_each_kind_of_host_read_is_counted_once():
    x = torch.arange(6.0)
    mask = x > 2
    with SyncCounter() as s:
        x.sum().item()
        x.tolist()
        if x.max():  # __bool__
            pass
        int(x[0])  # __int__ (the integer index itself is no read)
        mask.nonzero()
        x[mask]  # boolean-mask indexing: the result's size is read back
        x.unique()
        torch.equal(x, x)
        x.to("cpu")  # a transfer (a no-op here, a copy that waits on a GPU)
    assert s.counts == {"item": 1, "tolist": 1, "__bool__": 1, "__int__": 1, "nonzero": 1, "mask_index": 1,
                        "unique": 1, "equal": 1, "transfer": 1}
    assert s.total == 9 and s.reads == 8


def test_device_side_work_is_not_counted():
    x = torch.randn(4, 8)
    rows = torch.tensor([0, 2])
    with SyncCounter() as s:
        y = (x @ x.T).softmax(-1)
        y = y.index_select(0, rows).index_copy(0, torch.tensor([1, 0]), y[:2])
        torch.where(y > 0.5, y, torch.zeros_like(y))  # three-argument where: no shape from data
        y.argmax(1)
        x.to(torch.float64)  # a dtype change, no device named
    assert s.total == 0, s.counts
    s.reset()
    assert s.total == 0
