"""One sleep phase as a Ray Train run on `resources.sleep.workers` data-parallel workers (TorchTrainer).

The learner actor keeps the learner between phases. For a sleep its state dict
goes to every worker as one object ref; each worker rebuilds the learner and
runs `LearnerHost.sleep` (same phase seed everywhere, so every rank draws the
same batches and the learner's loops shard them, see learners/shared/distributed.py).
Only rank 0 gets the artifacts dir, so files such as dreams.jsonl are written
once. Rank 0 reports the consolidated state as a safetensors checkpoint with the
sleep metrics plus `ray_train/world_size` and every rank's state digest (equal
digests: DDP kept the replicas identical); the actor then loads that state, so
the next wake continues from the consolidated model.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save, save_file

from somna.platform.executors import LearnerHost, Metrics

STATE_FILE = "state.safetensors"


def state_digest(state: dict[str, torch.Tensor]) -> float:
    """The first 48 bits of the state's sha256, an exact float (event metrics are floats)."""
    digest = hashlib.sha256(save({k: v.contiguous() for k, v in state.items()})).digest()
    return float(int.from_bytes(digest[:6], "big"))


def sleep_worker(config: dict[str, Any]) -> None:
    """Per worker: rebuild the learner from the actor's state, sleep, report (rank 0: with the new state)."""
    import ray
    import ray.train
    import torch.distributed as dist

    rank = ray.train.get_context().get_world_rank()
    host = LearnerHost(config["cfg"], ray.get(config["state"]))
    metrics = host.sleep(config["experience"], config["artifacts_dir"] if rank == 0 else None)
    state = host.state_dict()
    digests: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(digests, state_digest(state))
    metrics["ray_train/world_size"] = float(len(digests))
    metrics |= {f"ray_train/state_digest_rank{r}": digest for r, digest in enumerate(digests)}
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if rank == 0:
            save_file({k: v.contiguous() for k, v in state.items()}, str(Path(folder) / STATE_FILE))
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report(metrics, checkpoint=checkpoint)  # a barrier: every rank reports once


def sleep_on_workers(actor: Any, cfg: DictConfig, experience: int, artifacts_dir: str | None) -> Metrics:
    """Run experience `experience`'s sleep as a TorchTrainer from `actor`'s state; load the result into `actor`."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    spec = cfg.resources.sleep
    resources = {"CPU": spec.num_cpus, **({"GPU": spec.num_gpus} if spec.num_gpus else {}), **spec.custom}
    storage = cfg.ray.train_storage or tempfile.mkdtemp(prefix="somna-sleep-")
    trainer = TorchTrainer(
        sleep_worker,
        train_loop_config={
            "cfg": OmegaConf.to_container(cfg, resolve=True),
            "state": actor.state_dict.remote(),  # worker to worker: the state never passes through the driver
            "experience": experience,
            "artifacts_dir": artifacts_dir,
        },
        scaling_config=ScalingConfig(num_workers=spec.workers, use_gpu=spec.num_gpus > 0, resources_per_worker=resources),
        torch_config=TorchConfig(backend="gloo"),  # the learners keep their tensors on the CPU
        run_config=RunConfig(name=f"sleep-{experience:04d}-{uuid.uuid4().hex[:8]}", storage_path=storage),
    )
    try:
        result = trainer.fit()
        with result.checkpoint.as_directory() as folder:
            state = load_file(str(Path(folder) / STATE_FILE))
        if cfg.ray.train_storage:
            result.filesystem.delete_dir(result.path)
    finally:
        if not cfg.ray.train_storage:
            shutil.rmtree(storage, ignore_errors=True)
    ray.get(actor.load_state_dict.remote(state))
    return result.metrics
