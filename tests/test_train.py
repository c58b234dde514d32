"""attnlib.train: the training loop, its history, and checkpoints."""

import math
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from attnlib import data, train  # noqa: E402
from attnlib.train import CheckpointError, History, fit, load_checkpoint, save_checkpoint  # noqa: E402


def regression_problem(seed=0):
    """A linear model and a list of (x, y) batches it can fit exactly."""
    generator = torch.Generator().manual_seed(seed)
    true_weight = torch.randn(3, 1, generator=generator)  # (3, 1)
    batches = []
    for _ in range(4):
        x = torch.randn(16, 3, generator=generator)  # (16, 3)
        batches.append((x, x @ true_weight))  # (16, 3), (16, 1)
    torch.manual_seed(seed)
    return nn.Linear(3, 1), batches


def mse(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


# ----- fit ------------------------------------------------------------------------------
def test_fit_lowers_the_loss_and_honours_max_steps():
    model, batches = regression_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    history = fit(model, batches, mse, optimizer=optimizer, max_steps=30, progress=False)
    assert history.steps == list(range(1, 31))  # a list of 4 batches, re-used for 7.5 epochs
    assert len(history.losses) == 30
    assert history.losses[-1] < 0.05 * history.losses[0]
    assert history.final_loss(5) < 0.05 * history.losses[0]
    assert history.seconds > 0
    assert model.training


def test_fit_stops_at_max_seconds():
    model, batches = regression_problem()

    def slow_loss(model, batch):
        time.sleep(0.05)
        return mse(model, batch)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    start = time.perf_counter()
    history = fit(model, batches, slow_loss, optimizer=optimizer, max_seconds=0.3, progress=False)
    elapsed = time.perf_counter() - start
    assert 0.3 <= history.seconds < 2.0 and elapsed < 3.0
    assert 2 <= len(history.steps) <= 7  # about 0.3 / 0.05 steps, not more


def test_fit_stops_at_whichever_limit_comes_first():
    model, batches = regression_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    history = fit(model, batches, mse, optimizer=optimizer, max_steps=3, max_seconds=60, progress=False)
    assert history.steps == [1, 2, 3]


def test_evaluate_runs_every_eval_every_steps_and_at_the_end_in_eval_mode():
    model, batches = regression_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []

    def evaluate(m):
        calls.append((m.training, torch.is_grad_enabled()))
        x, y = batches[0]
        return {"mse": mse(m, batches[0]), "one": 1.0}

    history = fit(model, batches, mse, optimizer=optimizer, max_steps=25, evaluate=evaluate, eval_every=10,
                  progress=False)
    assert history.eval_steps == [10, 20, 25]
    assert calls == [(False, False)] * 3  # eval mode, no gradients
    assert history.metrics["one"] == [1.0, 1.0, 1.0]
    assert all(isinstance(v, float) for v in history.metrics["mse"])
    assert history.metrics["mse"][-1] < history.metrics["mse"][0]
    assert model.training  # put back to training mode

    history = fit(model, batches, mse, optimizer=optimizer, max_steps=20, evaluate=evaluate, eval_every=10,
                  progress=False)
    assert history.eval_steps == [10, 20]  # no second evaluation at the last step


def test_fit_calls_a_batches_function_once_per_epoch_and_moves_batches():
    dataset = data.copy_task(20, min_length=1, max_length=3, num_symbols=4, seed=0)
    calls = []

    def next_epoch():
        calls.append(1)
        return data.batches(dataset, 8, shuffle=True, seed=len(calls))

    seen = []

    def loss_fn(model, batch):
        seen.append(batch)
        logits = model(batch.source)  # (B, S, V)
        return nn.functional.cross_entropy(logits[batch.source_mask], batch.source[batch.source_mask])

    torch.manual_seed(0)
    model = nn.Embedding(dataset.vocab_size, dataset.vocab_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    history = fit(model, next_epoch, loss_fn, optimizer=optimizer, max_steps=7, device="cpu", progress=False)
    assert len(calls) == 3  # 3 batches per epoch: epochs 1, 2 and part of 3
    assert all(isinstance(b, data.Batch) for b in seen)
    assert history.losses[-1] < history.losses[0]


def test_fit_clips_gradients_and_steps_the_scheduler():
    model, batches = regression_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    norms = []
    optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: norms.append(math.sqrt(sum(float((p.grad ** 2).sum()) for p in model.parameters())))
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    fit(model, batches, lambda m, b: 100 * mse(m, b), optimizer=optimizer, max_steps=4, clip_grad_norm=0.5,
        scheduler=scheduler, progress=False)
    assert len(norms) == 4 and max(norms) <= 0.5 + 1e-5
    assert scheduler.last_epoch == 4
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5 ** 4)


def test_fit_with_bf16_autocast_on_cpu():
    model, batches = regression_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    dtypes = []

    def loss_fn(m, batch):
        out = m(batch[0])
        dtypes.append(out.dtype)
        return ((out.float() - batch[1]) ** 2).mean()

    history = fit(model, batches, loss_fn, optimizer=optimizer, max_steps=20, mixed_precision="bf16", progress=False)
    assert dtypes[0] == torch.bfloat16
    assert history.losses[-1] < 0.2 * history.losses[0]
    assert model.weight.dtype == torch.float32  # the weights stay in float32


def test_auto_precision_is_none_on_cpu():
    assert train.loop._resolve_precision("auto", torch.device("cpu")) == "none"
    assert train.loop._resolve_precision("none", torch.device("cpu")) == "none"


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(), ValueError, "give max_steps or max_seconds"),
        (dict(max_steps=0), ValueError, "max_steps must be an int >= 1"),
        (dict(max_seconds=-1), ValueError, "max_seconds must be a positive number"),
        (dict(max_steps=2, eval_every=0), ValueError, "eval_every must be an int >= 1"),
        (dict(max_steps=2, clip_grad_norm=0), ValueError, "clip_grad_norm must be a positive number"),
        (dict(max_steps=2, mixed_precision="fp32"), ValueError, "mixed_precision must be one of"),
        (dict(max_steps=2, mixed_precision="fp16"), ValueError, "needs a CUDA device"),
        (dict(max_steps=2, evaluate=3), TypeError, "evaluate must be a function"),
    ],
)
def test_fit_argument_errors(kwargs, error, message):
    model, batches = regression_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(error, match=message):
        fit(model, batches, mse, optimizer=optimizer, progress=False, **kwargs)


def test_fit_type_errors():
    model, batches = regression_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        fit(model, batches, mse, optimizer=None, max_steps=1)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        fit(lambda x: x, batches, mse, optimizer=optimizer, max_steps=1)
    with pytest.raises(TypeError, match="batches must be a function returning an iterable"):
        fit(model, 5, mse, optimizer=optimizer, max_steps=1)


def test_fit_explains_bad_losses_and_one_shot_iterators():
    model, batches = regression_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="must return a scalar tensor"):
        fit(model, batches, lambda m, b: (m(b[0]) - b[1]) ** 2, optimizer=optimizer, max_steps=2, progress=False)
    with pytest.raises(FloatingPointError, match="became nan at step 1"):
        fit(model, batches, lambda m, b: mse(m, b) * float("nan"), optimizer=optimizer, max_steps=2, progress=False)
    with pytest.raises(ValueError, match="produced no batches"):
        fit(model, iter(batches), mse, optimizer=optimizer, max_steps=10, progress=False)


def test_history_plot():
    history = History(steps=[1, 2, 3], losses=[1.0, 0.5, 0.25], eval_steps=[3], metrics={"accuracy": [0.9]})
    ax = history.plot()
    assert ax.get_title() == "Training loss"
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "training loss"
    assert len(ax.figure.axes) == 2  # the metric on a second y-axis
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="no steps"):
        History().final_loss()


# ----- checkpoints ----------------------------------------------------------------------
class Small(nn.Module):
    def __init__(self, hidden=4):
        super().__init__()
        self.layer = nn.Linear(3, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.out(torch.tanh(self.layer(x)))


def trained_small(seed=0):
    torch.manual_seed(seed)
    model = Small()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    _, batches = regression_problem()
    fit(model, batches, mse, optimizer=optimizer, max_steps=5, progress=False)
    return model, optimizer


def test_checkpoint_round_trip(tmp_path):
    model, optimizer = trained_small()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, optimizer, step=5, config={"hidden": 4, "names": ["a", "b"]}, scale=torch.ones(2))

    torch.manual_seed(1)
    fresh = Small()
    fresh_optimizer = torch.optim.Adam(fresh.parameters(), lr=0.5)
    assert not torch.equal(fresh.layer.weight, model.layer.weight)
    extra = load_checkpoint(path, fresh, fresh_optimizer)

    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], tensor, rtol=0, atol=0)
    saved, loaded = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert loaded["param_groups"] == saved["param_groups"]  # lr 0.01 restored
    for index, state in saved["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(loaded["state"][index][key], value, rtol=0, atol=0)
    assert extra["step"] == 5 and extra["config"] == {"hidden": 4, "names": ["a", "b"]}
    torch.testing.assert_close(extra["scale"], torch.ones(2))
    assert os.listdir(tmp_path) == ["model.pt"]  # no temporary file left behind


def test_checkpoint_without_optimizer(tmp_path):
    model, _ = trained_small()
    save_checkpoint(tmp_path / "m.pt", model)
    other = Small()
    assert load_checkpoint(tmp_path / "m.pt", other) == {}
    torch.testing.assert_close(other.out.bias, model.out.bias)
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        load_checkpoint(tmp_path / "m.pt", other, torch.optim.Adam(other.parameters()))


def test_corrupt_and_truncated_files_give_a_clear_error(tmp_path):
    model, optimizer = trained_small()
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(2000))
    with pytest.raises(CheckpointError, match="cannot be read as a checkpoint .*corrupt or truncated"):
        load_checkpoint(garbage, Small())

    good = tmp_path / "good.pt"
    save_checkpoint(good, model, optimizer, step=1)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(truncated, Small())

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(empty, Small())

    assert issubclass(CheckpointError, ValueError)


def test_a_plain_torch_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(Small().state_dict(), path)
    with pytest.raises(CheckpointError, match="not a checkpoint written by attnlib"):
        load_checkpoint(path, Small())


def test_mismatched_model_gives_a_clear_error_and_leaves_the_model_unchanged(tmp_path):
    model, optimizer = trained_small()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, optimizer)

    wider = Small(hidden=8)
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"layer.weight has shape \(4, 3\) in the file but \(8, 3\) in the model"):
        load_checkpoint(path, wider)
    assert all(torch.equal(before[k], v) for k, v in wider.state_dict().items())

    with pytest.raises(CheckpointError, match="does not fit this Linear: missing in the file: weight, bias"):
        load_checkpoint(path, nn.Linear(3, 1))

    other = Small()
    mismatched_optimizer = torch.optim.Adam([other.layer.weight])  # one parameter, not four
    with pytest.raises(CheckpointError, match="optimizer state that does not fit this optimizer"):
        load_checkpoint(path, other, mismatched_optimizer)


def test_missing_file_and_bad_extras(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nothing.pt", Small())
    with pytest.raises(TypeError, match=r"extra value history is a History"):
        save_checkpoint(tmp_path / "m.pt", Small(), history=History())
    with pytest.raises(TypeError, match=r"extra value config\['f'\] is a function"):
        save_checkpoint(tmp_path / "m.pt", Small(), config={"f": lambda: 0})
    assert os.listdir(tmp_path) == []


def test_interrupted_save_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    model, optimizer = trained_small()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, optimizer, step=1)
    old_bytes = path.read_bytes()

    def crashing_save(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")  # part of the file is written...
        raise KeyboardInterrupt  # ...then the process is interrupted

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, optimizer, step=2)
    monkeypatch.undo()

    assert path.read_bytes() == old_bytes
    assert os.listdir(tmp_path) == ["model.pt"]  # the temporary file was removed
    assert load_checkpoint(path, Small(), torch.optim.Adam(Small().parameters()))["step"] == 1
