"""Batch inference with Ray Data: a method's per-item function over a dataset, written as Parquet.

A method that computes something once per item of a dataset (LiteEval's feature cache: both
frozen CNNs over every video) supplies a callable class — built once per actor, called on
batches of item indices, returning an Arrow table — and this module runs it:

    ray.data.from_items(item indices)
      .map_batches(fn, concurrency=actors, num_cpus=cpus per actor)
      .write_parquet(folder)                                   a local folder or s3://

The method keeps what the rows mean; the engine keeps Ray (DESIGN.md: a method imports no Ray).
"""

from __future__ import annotations

from typing import Any

__all__ = ["map_to_parquet"]


def map_to_parquet(num_items: int, fn: type, fn_kwargs: dict[str, Any], path: str, filesystem: Any = None, *,
                   actors: int = 1, cpus_per_actor: float = 1.0, batch_size: int = 8, block_items: int = 64) -> None:
    """Write ``fn(**fn_kwargs)({"id": indices})`` for the item indices ``0 .. num_items − 1`` as
    Parquet shards under ``path`` (on ``filesystem``: a pyarrow filesystem, or None for a local
    folder), with ``actors`` Ray Data actors of ``cpus_per_actor`` CPUs each.

    The indices are made on the driver (``from_items``: no read tasks) in blocks of about
    ``block_items``, so the actors share the work and Ray Data's progress lines advance. The
    actors take the CPUs; the Parquet writes are I/O and reserve none, or on a small node (2
    CPUs, one 2-CPU actor) a write task would wait for CPUs forever. Starts a local Ray
    instance first when none is running (``init_ray``: Ray Data's own start would join a
    recorded head even when it is dead)."""
    import ray

    from dynvid.engine.trainer import init_ray  # imports Ray Train: only where Ray work runs

    if num_items < 1:
        raise ValueError(f"map_to_parquet: nothing to write to {path} (num_items={num_items})")
    init_ray()  # joins the running instance, if any
    blocks = max(1, min(num_items, -(-num_items // block_items)))
    ds = ray.data.from_items([{"id": i} for i in range(num_items)], override_num_blocks=blocks)
    ds = ds.map_batches(fn, fn_constructor_kwargs=fn_kwargs, batch_size=batch_size, batch_format="numpy",
                        concurrency=actors, num_cpus=cpus_per_actor)
    ds.write_parquet(path, filesystem=filesystem, ray_remote_args={"num_cpus": 0})
