"""Device choice, seeding and the environment line."""

import random

import numpy as np
import pytest
import torch

import attnlib


def test_environment_variable_wins(monkeypatch):
    monkeypatch.setenv("ATTNLIB_DEVICE", "cpu")
    assert attnlib.get_device() == torch.device("cpu")
    monkeypatch.setenv("ATTNLIB_DEVICE", "cuda:1")
    assert attnlib.get_device() == torch.device("cuda:1")


def test_bad_environment_variable_is_explained(monkeypatch):
    monkeypatch.setenv("ATTNLIB_DEVICE", "tpu")
    with pytest.raises(ValueError, match="ATTNLIB_DEVICE='tpu' is not a device; expected one of cpu, cuda, mps"):
        attnlib.get_device()


def test_fallback_order(monkeypatch):
    monkeypatch.delenv("ATTNLIB_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert attnlib.get_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert attnlib.get_device().type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert attnlib.get_device().type == "cpu"


def test_seed_everything_repeats_all_generators():
    attnlib.seed_everything(123)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    attnlib.seed_everything(123)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    with pytest.raises(TypeError, match="seed must be an int"):
        attnlib.seed_everything("0")
    with pytest.raises(ValueError, match="seed must be in"):
        attnlib.seed_everything(-1)


def test_describe_environment_names_device_and_versions():
    line = attnlib.describe_environment(torch.device("cpu"))
    assert line.startswith("device: cpu") and torch.__version__ in line and np.__version__ in line
