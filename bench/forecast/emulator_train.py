"""Training the built-in emulator on a world's training period, cached by config and world.

Loss, for a batch of starts i with latitude weights w_h (mean 1) and increment stds s_c:

    L = mean_{c,h,w} w_h ((x̂_{i+1} − x_{i+1}) / s_c)²  +  λ_r · (same for x̂_{i+2} = f(x_i, x̂_{i+1}))

The second term (``rollout_weight`` λ_r) backpropagates through one autoregressive step so the
model learns to forecast from its own output. Only the training period is ever read.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bench import cache
from bench.forecast.emulator import Emulator, EmulatorConfig, EmulatorNet
from bench.state import StateSpec

WEIGHTS_FILE = "emulator.pt"


def load_period(world, period: str) -> torch.Tensor:
    """A world's period as one normalised float32 tensor (T, C, H, W), filled chunk by chunk
    (bench/worlds/streaming.fill): the period itself is held, never float64 copies of it.
    Training draws random windows from the whole period every step, so the float32 period is
    what the emulator would need in memory (the built-in world's training year: 0.8 GB), so
    training reads it memory-mapped instead (bench/training_truth.py ``mapped_period``)."""
    from bench.worlds.streaming import fill

    return fill(world.period(period), world.spec)


def increment_std(data: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Per-channel std (C,) float32 of the 6-hour increments data[t+1] − data[t] of ``data``
    (T, C, H, W) over time and grid (ddof 1, as torch.std): the same float32 increments as
    ``(data[1:] − data[:-1]).std(dim=(0, 2, 3))``, reduced chunk by chunk in float64, so no
    (T − 1)-frame array of increments is made."""
    t, c = data.shape[:2]
    count = (t - 1) * data.shape[2] * data.shape[3]

    def increments():
        for start in range(0, t - 1, chunk):
            stop = min(start + chunk, t - 1)
            yield (data[start + 1:stop + 1] - data[start:stop]).double()

    mean = sum(inc.sum(dim=(0, 2, 3)) for inc in increments()) / count
    # two passes: Σ (x − mean)² has no cancellation, Σ x² − n mean² would
    m2 = sum((inc - mean[None, :, None, None]).square().sum(dim=(0, 2, 3))
             for inc in increments())
    return (m2 / (count - 1)).sqrt().float()


def train_emulator(
    data: torch.Tensor, spec: StateSpec, cfg: EmulatorConfig, progress: bool = True
) -> tuple[EmulatorNet, dict]:
    """Fit an EmulatorNet to consecutive 6-hourly frames ``data`` (T, C, H, W), normalised.

    Returns the network (eval mode, CPU) and a log: loss every 50 steps, seconds, parameters.
    """
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    t, c, h, w = data.shape
    need = cfg.history + 1 + (cfg.rollout_weight > 0)
    if t < need + 1:
        raise ValueError(f"training needs at least {need + 1} consecutive frames, got {t}")
    net = EmulatorNet(c, spec.lat, w, cfg, grid=spec.grid)
    net.increment_std.copy_(increment_std(data).clamp_min(1e-4))
    lat_w = torch.as_tensor(spec.latitude_weights(), dtype=torch.float32)[:, None]
    scale = net.increment_std[:, None, None]

    def loss_of(pred, target):
        return (lat_w * ((pred - target) / scale) ** 2).mean()

    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warmup = max(1, cfg.steps // 20)

    def lr_factor(step):  # linear warm-up, then cosine decay to zero
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, cfg.steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    # start index i: inputs frames i-history+1 .. i, targets i+1 (and i+2)
    first, last = cfg.history - 1, t - need + cfg.history - 1
    losses, started = [], time.perf_counter()
    net.train()
    bar = tqdm(range(cfg.steps), desc="train emulator", unit="step", disable=not progress)
    for step in bar:
        idx = torch.randint(first, last + 1, (cfg.batch_size,), generator=generator)
        window = torch.stack([data[i - cfg.history + 1: i + 3] for i in idx.tolist()])
        frames = window[:, : cfg.history]
        pred1 = net(frames)
        loss = loss_of(pred1, window[:, cfg.history])
        if cfg.rollout_weight > 0 and step >= cfg.rollout_start * cfg.steps:
            frames2 = torch.cat([frames[:, 1:], pred1[:, None]], dim=1)
            loss = loss + cfg.rollout_weight * loss_of(net(frames2), window[:, cfg.history + 1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            losses.append((step, loss.item()))
            bar.set_postfix(loss=f"{losses[-1][1]:.4f}")
    net.eval()
    log = {
        "losses": losses,
        "seconds": round(time.perf_counter() - started, 1),
        "parameters": sum(p.numel() for p in net.parameters()),
        "frames": t,
    }
    return net, log


def emulator_entry(world, cfg: EmulatorConfig):
    """The cache entry of an emulator trained on ``world`` with ``cfg``."""
    key = {"config": dataclasses.asdict(cfg), "world": cache.config_hash(world.card)}
    return cache.entry_dir("emulators", world.name, key)


def load_or_train(
    world, cfg: EmulatorConfig | None = None, device: str = "cpu", progress: bool = True,
    retrain: bool = False,
) -> tuple[Emulator, dict]:
    """The cached emulator for (world, cfg), training it first if there is none.

    Returns the ForecastModel and the training log (from the cache marker when reloaded).
    """
    cfg = cfg or EmulatorConfig()
    entry = emulator_entry(world, cfg)
    spec = world.spec

    def build(directory: Path) -> dict:
        from bench.training_truth import mapped_period

        net, log = train_emulator(mapped_period(world, "train"), spec, cfg, progress=progress)
        torch.save(net.state_dict(), directory / WEIGHTS_FILE)
        return {"config": dataclasses.asdict(cfg), "world": world.name, **log}

    def load(directory: Path, marker: dict) -> tuple[Emulator, dict]:
        net = EmulatorNet(len(spec.channels), spec.lat, spec.lon.size, cfg, grid=spec.grid)
        try:
            net.load_state_dict(torch.load(directory / WEIGHTS_FILE, map_location="cpu",
                                           weights_only=True))
        except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is a damaged cache
            raise cache.CacheError(
                f"emulator cache {directory} is damaged ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:120]}); run "
                f"`python -m bench train emulator --retrain` to rebuild it"
            ) from None
        return Emulator(net, spec, device, config=cfg), marker

    return cache.load_or_build(entry, build, load, rebuild=retrain)
