"""Run a grid's cells on a Dask cluster (``python -m bench run --executor dask``).

Why it is shaped this way:

* A task carries only strings (the config JSON, the run folder), the cell key and an importable
  setup factory (``bench.setup.setup`` in production). Each worker process builds its Setup
  once and keeps it in ``_SETUPS``; the world and the emulator come from the shared cache
  (``$ASSIMBENCH_CACHE``), so no worker retrains and no tensors cross the network.
* Before any cell, one task on one worker builds a Setup and fits every (method, seed), so the
  caches (emulator, samples, fitted methods) are written once, by one process (cache entries
  are written atomically, bench/cache.py, so concurrent writers would only waste work).
* Each cell writes ``cells/<m>__<d>__<s>.nc`` itself, atomically (bench/store.write_dataset),
  into the run folder, which must be on a filesystem the workers share with this process. The
  driver loads those files and merges them exactly as the local executor does.
* Fault tolerance is per cell. A worker that dies mid-cell makes the scheduler run the cell
  again on another worker, from its first cycle: there is no checkpoint within a cell (cycles
  are minutes, a cell's state is the method plus the background, and restarting is exact
  because a cell is deterministic for its seed). The rerun replaces the file atomically; a
  cell whose file exists is never run again, so nothing finished is lost or duplicated.
  ``retries`` additionally reruns a task that raised (a flaky filesystem, say); errors inside a
  method's fit/analyse are results, recorded in the cell as the local executor does.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import cloudpickle
import xarray as xr

from bench import runner
from bench.config import RunConfig
from bench.runner import RunError
from bench.setup import Setup, build_method, fitted_state, initial_ensemble, setup
from bench.timing import device_name

#: seconds to wait for ``--scheduler`` before giving up with a one-line error
CONNECT_TIMEOUT_S = 10.0
#: reruns of a task that raised (a worker that died is rescheduled by dask on its own)
RETRIES = 2

SetupFactory = Callable[[RunConfig], Setup]
CellKey = tuple[str, float, int]

#: this worker process's Setups, keyed by (factory, config JSON): built once per process
_SETUPS: dict[tuple[bytes, str], Setup] = {}


# ----------------------------------------------------------------------------- on a worker
def worker_setup(cfg_json: str, factory: SetupFactory) -> Setup:
    """This process's Setup for the config, built by ``factory`` the first time it is asked."""
    key = (cloudpickle.dumps(factory), cfg_json)
    if key not in _SETUPS:
        _SETUPS[key] = factory(RunConfig.from_dict(json.loads(cfg_json)))
    return _SETUPS[key]


def warm_up(cfg_json: str, factory: SetupFactory) -> dict[str, str]:
    """Build the Setup and fit every (method, density, seed) once, filling the shared caches (fitted
    states, and the samples an initial ensemble is drawn from).

    A method that fails to fit is skipped here: its cells record the error themselves.
    Returns ``runner.describe`` of the Setup (device and model key for metrics.nc).
    """
    cfg = RunConfig.from_dict(json.loads(cfg_json))
    s = worker_setup(cfg_json, factory)
    for name in cfg.methods:
        for density, seed in ((d, i) for d in cfg.densities for i in cfg.seeds):
            method = build_method(cfg, name, seed, density)  # tuned settings: per density
            try:
                fitted_state(s, method, progress=False)
                if method.members:
                    initial_ensemble(s, cfg, seed, method.members, progress=False)
            except Exception:  # noqa: BLE001 - the cell reports it, with its traceback
                pass
    return runner.describe(s)


def cell_task(cfg_json: str, out: str, key: CellKey, factory: SetupFactory) -> str | None:
    """Run one cell on this worker and write its file; the device's name (None: already done)."""
    if runner.cell_path(out, key).exists():
        return None
    s = worker_setup(cfg_json, factory)
    runner.run_cell(RunConfig.from_dict(json.loads(cfg_json)), s, out, key)
    return device_name(s.device)


# ----------------------------------------------------------------------------- the driver
class DaskExecutor:
    """Hands a run's cells to a dask.distributed Client (see ``connect``).

    Args:
        client: a connected ``distributed.Client``.
        factory: importable ``cfg -> Setup`` that workers call once per process.
        retries: reruns of a task that raised.
        cluster: a cluster this executor started and must close (LocalCluster), or None.
    """

    def __init__(self, client, factory: SetupFactory = setup, retries: int = RETRIES,
                 cluster=None):
        self.client, self.factory, self.retries, self.cluster = client, factory, retries, cluster

    @staticmethod
    def resources(cfg: RunConfig) -> dict[str, int] | None:
        """A cell on ``--device cuda`` needs a worker started with ``--resources GPU=1``."""
        return {"GPU": 1} if cfg.device == "cuda" else None

    def _submit(self, fn, name: str, cfg: RunConfig, *args):
        return self.client.submit(fn, cfg.to_json(), *args, self.factory,
                                  key=f"{name}-{uuid.uuid4().hex[:8]}", pure=False,
                                  resources=self.resources(cfg), retries=self.retries)

    def start(self, cfg: RunConfig, progress: bool) -> dict[str, str]:
        """Warm the caches on one worker; ``runner.describe`` of its Setup."""
        if progress:
            print(f"dask: preparing world, model and methods on one worker of "
                  f"{self.client.scheduler.address}")
        return self._submit(warm_up, "assimbench-prepare", cfg).result()

    def run_cells(self, cfg: RunConfig, out: Path, keys: list[CellKey], progress: bool):
        """Run ``keys`` on the cluster; (cells loaded from their files, device names).

        Every cell is awaited even when some fail, so a rerun with --resume redoes only those.
        """
        from distributed import as_completed

        futures = {self._submit(cell_task, f"assimbench-{runner.cell_name(*key)}", cfg,
                                str(out), key): key for key in keys}
        cells: dict[CellKey, xr.Dataset] = {}
        devices: set[str] = set()
        failed: list[str] = []
        for i, future in enumerate(as_completed(futures), 1):
            key = futures[future]
            name = runner.cell_name(*key)
            try:
                device = future.result()
            except Exception as err:  # noqa: BLE001 - reported together after the others end
                failed.append(f"{name}: {type(err).__name__}: {err}")
                continue
            if device:
                devices.add(device)
            cells[key] = xr.load_dataset(runner.cell_path(out, key))
            if progress:
                print(f"dask: cell {name} done ({i}/{len(keys)})")
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(keys)} cells failed on the cluster "
                               f"(first: {failed[0]}); the finished cells are kept, rerun "
                               f"with --resume")
        return cells, devices

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_flags(scheduler: str | None, workers: int | None) -> None:
    """RunError unless exactly one of --scheduler and --dask-workers (>= 1) is given."""
    if (scheduler is None) == (workers is None):
        raise RunError("--executor dask needs one of --scheduler ADDRESS (a running dask "
                       "scheduler, e.g. tcp://host:8786) or --dask-workers N (N processes here)")
    if workers is not None and workers < 1:
        raise RunError(f"--dask-workers {workers} must be >= 1")


def connect(scheduler: str | None = None, workers: int | None = None, device: str = "auto",
            timeout: float | None = None) -> DaskExecutor:
    """A DaskExecutor on an existing scheduler or on a LocalCluster of ``workers`` processes.

    Raises RunError (one line, exit code 2 in the CLI) when neither or both are given, or when
    the scheduler does not answer within ``timeout`` seconds (default CONNECT_TIMEOUT_S).
    """
    from distributed import Client, LocalCluster

    check_flags(scheduler, workers)
    if workers is not None:
        # --device cuda: every local worker offers one GPU (they share the visible device);
        # one worker per GPU needs one `dask worker` per GPU, see the README.
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None,
                               resources={"GPU": 1} if device == "cuda" else None)
        return DaskExecutor(Client(cluster), cluster=cluster)
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    try:
        client = Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as err:
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise RunError(f"cannot reach the dask scheduler at --scheduler {scheduler} "
                       f"({reason}); start it first or check the address") from None
    if device == "cuda" and not any(
            w.get("resources", {}).get("GPU") for w in client.scheduler_info()["workers"].values()):
        print(f"dask: no worker of {scheduler} offers the GPU resource yet; cells wait for one "
              f"started with `--resources GPU=1`", file=sys.stderr)
    return DaskExecutor(client)
