"""DistributedModelParallel plumbing: process group, table-wise plan, fused row-wise Adagrad, checkpoints, export.

One code path for one process and for `torchrun`: a single process gets a world of one over an in-memory store
(no port), torchrun's environment gives the real world. Backend: NCCL when CUDA is available, gloo otherwise.

Checkpoints hold no pickled code. Each rank writes `rank{r}.safetensors` with its local tensors: dense parameters
and every local shard of the sharded tables (keys `name::shard::row,col`), plus the fused optimizer's state
(row-wise Adagrad momentum, same layout) and the dense optimizer's tensors; the dense optimizer's small
non-tensor state goes to JSON. A checkpoint directory is written atomically and `latest` names the newest one,
so a kill at any moment leaves the previous checkpoint intact. Resuming needs the same world size and plan.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
from torchrec.distributed.planner.types import KernelConfig, TopologyFactory, TrainerConfig
from torchrec.distributed.types import ShardingType
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from core.io import atomic_dir


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    device: torch.device
    backend: str
    owns_group: bool  # True when init_distributed created the group (and should destroy it)


def init_distributed() -> DistEnv:
    """Joins torchrun's process group (env://) or makes a world of one; NCCL with CUDA, gloo otherwise."""
    cuda = torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    owns = False
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 or "TORCHELASTIC_RUN_ID" in os.environ:
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
        owns = True
    rank = dist.get_rank()
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    return DistEnv(rank, dist.get_world_size(), device, dist.get_backend(), owns)


def shutdown(env: DistEnv) -> None:
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def sparse_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """Parameters of every EmbeddingBagCollection in the model (the ones the fused optimizer owns)."""
    from torchrec import EmbeddingBagCollection

    for m in model.modules():
        if isinstance(m, EmbeddingBagCollection):
            yield from m.parameters()


def shard_model(model: nn.Module, env: DistEnv, sparse_lr: float, eps: float = 1e-8) -> DistributedModelParallel:
    """DMP with every table sharded table-wise and updated in the backward by a fused row-wise Adagrad.

    Build `model`'s tables on the "meta" device; DMP materialises them on their owning rank.
    """
    apply_optimizer_in_backward(RowWiseAdagrad, list(sparse_parameters(model)), {"lr": sparse_lr, "eps": eps})
    sharder = EmbeddingBagCollectionSharder()
    tables = [n.split(".")[-2] for n, _ in model.named_parameters() if ".embedding_bags." in n]
    constraints = {t: ParameterConstraints(sharding_types=[ShardingType.TABLE_WISE.value]) for t in tables}
    compute = "cuda" if env.device.type == "cuda" else "cpu"
    planner = EmbeddingShardingPlanner(
        topology=TopologyFactory.create_topology(
            TrainerConfig(world_size=env.world_size), kernel_config=KernelConfig(compute_device=compute)
        ),
        constraints=constraints,
        # a fixed share of each device held back: the default heuristic estimates the dense arches from tensors
        # still on "meta" and warns about it on every sharding (the tables here are far below any device's memory)
        storage_reservation=FixedPercentageStorageReservation(percentage=0.15),
    )
    plan = planner.collective_plan(model, [sharder], dist.GroupMember.WORLD)
    # a world of one needs no DDP around the dense arches (its forward hooks cost as much as the arches)
    return DistributedModelParallel(
        model, device=env.device, plan=plan, sharders=[sharder], init_data_parallel=env.world_size > 1
    )


def dense_parameters(dmp: nn.Module) -> list[nn.Parameter]:
    """Parameters not updated by a fused (in-backward) optimizer."""
    return [p for _, p in in_backward_optimizer_filter(dmp.named_parameters())]


def _local_shards(value: Any) -> list[tuple[str, torch.Tensor]]:
    """(suffix, tensor) of a state entry: a plain tensor, or each local shard of a ShardedTensor."""
    if isinstance(value, ShardedTensor):
        return [
            ("::shard::" + ",".join(str(o) for o in s.metadata.shard_offsets), s.tensor) for s in value.local_shards()
        ]
    if isinstance(value, torch.Tensor):
        return [("", value)]
    return []


def table_seed(seed: int, name: str) -> int:
    return seed * 1_000_003 + zlib.crc32(name.encode())


def init_tables(dmp: nn.Module, seed: int) -> None:
    """Initialises every sharded table from (seed, table name), so the values do not depend on the sharding.

    Uniform in +- sqrt(1 / rows), TorchRec's default range.
    """
    for key, value in dmp.state_dict().items():
        if not isinstance(value, ShardedTensor):
            continue
        rows, dim = value.size()
        g = torch.Generator().manual_seed(table_seed(seed, key))
        bound = (1.0 / rows) ** 0.5
        full = (torch.rand(rows, dim, generator=g, dtype=torch.float32) * 2 - 1) * bound
        for s in value.local_shards():
            r0, c0 = s.metadata.shard_offsets
            r1, c1 = r0 + s.tensor.shape[0], c0 + s.tensor.shape[1]
            with torch.no_grad():
                s.tensor.copy_(full[r0:r1, c0:c1].to(s.tensor.device))


def _flatten(obj: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}{k}/", out)
        return
    for suffix, t in _local_shards(obj):
        out[prefix.rstrip("/") + suffix] = t


def local_state(dmp: nn.Module) -> dict[str, torch.Tensor]:
    """This rank's model tensors and fused-optimizer state, flattened (they share storage with the live state)."""
    out: dict[str, torch.Tensor] = {}
    _flatten(dmp.state_dict(), "model/", out)
    fused = getattr(dmp, "fused_optimizer", None)
    if fused is not None:
        _flatten(fused.state_dict().get("state", {}), "fused/", out)
    return out


def _dense_opt_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for idx, st in sd["state"].items():
        meta["state"][str(idx)] = sorted(st)
        for name, v in st.items():
            tensors[f"dense_opt/{idx}/{name}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
    return tensors, meta


def save_checkpoint(
    ckpt_root: Path, step: int, dmp: nn.Module, dense_opt: torch.optim.Optimizer, env: DistEnv, meta: dict[str, Any]
) -> Path:
    """Writes checkpoint `step-N` (every rank its own file) and points `latest` at it; returns its directory."""
    final = ckpt_root / f"step-{step:08d}"
    staging = ckpt_root / f".staging-step-{step:08d}"
    if env.rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    dist.barrier()
    tensors = {k: v.detach().cpu().contiguous() for k, v in local_state(dmp).items()}
    opt_tensors, opt_meta = _dense_opt_tensors(dense_opt)
    tensors.update({k: v.cpu().contiguous() for k, v in opt_tensors.items()})
    save_file(tensors, str(staging / f"rank{env.rank}.safetensors"))
    (staging / f"rank{env.rank}.json").write_text(json.dumps(opt_meta))
    dist.barrier()
    if env.rank == 0:
        with atomic_dir(final) as tmp:
            for f in staging.iterdir():
                shutil.move(str(f), tmp / f.name)
            (tmp / "meta.json").write_text(json.dumps({**meta, "step": step, "world_size": env.world_size}))
        shutil.rmtree(staging, ignore_errors=True)
        latest_tmp = ckpt_root / ".latest.tmp"
        latest_tmp.write_text(final.name)
        latest_tmp.replace(ckpt_root / "latest")
    dist.barrier()
    return final


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The newest complete checkpoint directory, or None."""
    pointer = ckpt_root / "latest"
    if not pointer.exists():
        return None
    path = ckpt_root / pointer.read_text().strip()
    return path if (path / "_SUCCESS").exists() else None


def selected_checkpoint(ckpt_root: Path) -> Path | None:
    """The checkpoint model selection chose (`selected`, written by `recsys.train`), else the newest; or None."""
    pointer = ckpt_root / "selected"
    if pointer.exists():
        path = ckpt_root / pointer.read_text().strip()
        if not (path / "_SUCCESS").exists():
            raise FileNotFoundError(f"{pointer} names {path.name}, which is not a complete checkpoint")
        return path
    return latest_checkpoint(ckpt_root)


def load_checkpoint(path: Path, dmp: nn.Module, dense_opt: torch.optim.Optimizer, env: DistEnv) -> dict[str, Any]:
    """Restores this rank's tensors (in place) and the dense optimizer; returns the checkpoint's meta."""
    meta = json.loads((path / "meta.json").read_text())
    if meta["world_size"] != env.world_size:
        raise ValueError(f"checkpoint {path} was written by {meta['world_size']} ranks; this run has {env.world_size}")
    saved = load_file(str(path / f"rank{env.rank}.safetensors"))
    live = local_state(dmp)
    missing = sorted(set(live) - set(saved))
    if missing:
        raise ValueError(f"checkpoint {path} lacks {len(missing)} tensor(s), e.g. {missing[:3]}")
    with torch.no_grad():
        for k, t in live.items():
            t.copy_(saved[k].to(t.device))
    opt_meta = json.loads((path / f"rank{env.rank}.json").read_text())
    state = {
        int(idx): {name: saved[f"dense_opt/{idx}/{name}"] for name in names} for idx, names in opt_meta["state"].items()
    }
    dense_opt.load_state_dict({"state": state, "param_groups": opt_meta["param_groups"]})
    return meta


def export_table(dmp: nn.Module, table: str, ids: np.ndarray, out: Path, env: DistEnv) -> bool:
    """Writes the rank-local full copy of `table` (table-wise sharding) as safetensors with its row ids.

    File: {"weight": (rows, D) float32, "ids": (rows,) int64} where row r holds the embedding of ids[r]; id -1
    marks the out-of-vocabulary row 0. Returns True on the rank that owns the table.
    """
    for key, value in dmp.state_dict().items():
        if not key.endswith(f"embedding_bags.{table}.weight"):
            continue
        shards = _local_shards(value)
        if len(shards) != 1 or shards[0][1].shape[0] != value.size(0):
            return False  # not on this rank (or not table-wise)
        weight = shards[0][1].detach().cpu().contiguous()
        row_ids = torch.from_numpy(np.concatenate([[-1], ids]).astype(np.int64))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp-{env.rank}")
        save_file({"weight": weight, "ids": row_ids}, str(tmp), metadata={"table": table})
        tmp.replace(out)
        return True
    raise KeyError(f"no table {table!r} in the model")
