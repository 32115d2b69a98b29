"""How long does the built-in emulator's free run stay bounded, with its increments projected
on total wavenumbers l < L (L = 32: its own T31 truncation; smaller L without retraining), and
what does a smaller L cost in 6 h skill?

    python results/emulator/long-free-runs/free_run.py PERIOD DAYS L [L ...]
    (PERIOD: train or valid; the free run starts from truth at the period's first two frames)

Prints, per L, the 6 h error from truth (mean over starts every 36 h) and the free run's error
at a few days; writes free_run_<PERIOD>.json beside this file. Errors: per-channel RMSE in
normalisation units (not latitude-weighted), mean over the 69 channels.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch_harmonics as th

from bench.config import RunConfig
from bench.setup import load_model, open_world

torch.set_num_threads(1)
cfg = RunConfig()
world = open_world(cfg)
model, key = load_model(cfg, world, torch.device("cpu"), False)
spec = world.spec
PERIOD, DAYS = sys.argv[1], int(sys.argv[2])
truth = spec.to_tensor(world.period(PERIOD)).float()  # (T, C, H, W)
net = model.net
base = net.truncate


class Cut(torch.nn.Module):
    def __init__(self, L):
        super().__init__()
        nlat, nlon = spec.shape[1:]
        kw = dict(lmax=nlat, mmax=nlat, grid="legendre-gauss", norm="ortho")
        self.a, self.s = th.RealSHT(nlat, nlon, **kw), th.InverseRealSHT(nlat, nlon, **kw)
        l = torch.arange(nlat)[:, None]
        self.register_buffer("keep", (l < L).to(torch.complex64))

    def forward(self, x):
        return self.s(self.a(x) * self.keep).to(x.dtype)


out = {}
for L in [int(v) for v in sys.argv[3:]]:
    net.truncate = base if L >= 32 else Cut(L)
    with torch.no_grad():
        # free run from truth at the period's start
        frames = truth[0:2][None]
        errs = []
        for k in range(4 * DAYS):
            nxt = model.step(frames)
            frames = torch.cat([frames[:, 1:], nxt[:, None]], 1)
            t = 2 + k
            if t >= truth.shape[0]:
                break
            errs.append(float(((nxt[0] - truth[t]) ** 2).mean((1, 2)).sqrt().mean()))
        # 6 h skill from truth: 19 starts
        six = []
        for i in range(1, truth.shape[0] - 1, 6):
            nxt = model.step(truth[i - 1:i + 1][None])[0]
            six.append(float(((nxt - truth[i + 1]) ** 2).mean((1, 2)).sqrt().mean()))
    out[L] = {"free_run": errs, "six_hour": float(np.mean(six))}
    e = np.array(errs)
    days = [d for d in (5, 10, 15, 20, 25, 30, 45, 60, 75, 90) if 4 * d <= len(e)]
    print(L, "6 h error", round(out[L]["six_hour"], 4), "free run at days", days, ":",
          [round(float(e[4 * d - 1]), 3) for d in days], "max", round(float(np.nanmax(e)), 3),
          flush=True)
(Path(__file__).parent / f"free_run_{PERIOD}.json").write_text(json.dumps(out))
