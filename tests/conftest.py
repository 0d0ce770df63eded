"""Shared fixtures: one throw-away local Ray for the whole session, shut down at the end."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # throw-away local clusters need no token
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Offline, as the tests must be: huggingface_hub reads these once, at import (a later setenv is ignored and a
# missing hub name would wait out ~50 s of retries before failing)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Tiny models: one thread is fastest, and on a shared 2-core machine more threads thrash
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def somna_cache(tmp_path_factory):
    """A base cache of this session only (hermetic tests): the first test that needs `world-micro` pretrains it, once."""
    os.environ["SOMNA_CACHE_DIR"] = str(tmp_path_factory.mktemp("somna-cache"))


@pytest.fixture(scope="session")
def ray_session():
    """A fresh 2-CPU local Ray (as `somna run` starts it) shared by every test that asks for it; no Ray process
    outlives the session."""
    import ray

    from somna.platform import local_ray

    if not ray.is_initialized():
        local_ray.start(2, log_to_driver=False)
    yield ray
    local_ray.shutdown()


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run tests marked slow (CI does)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
