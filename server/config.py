"""Service configuration: one frozen value built from flags, then `TANDEM_*` variables,
then defaults (in that order of precedence)."""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engines.worker import MAX_FORWARD_PASSES
from tandem.contract import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT

DEFAULT_HOST = "127.0.0.1"
DEFAULT_DATA_DIR = "./data"
GIB = 1024**3


@dataclass(frozen=True)
class ServerConfig:
    """Everything `create_server` needs. Paths are absolute once built by `load`."""

    data_dir: Path
    host: str = DEFAULT_HOST
    # 0 binds a free port (tests); the bound port is returned by `create_server`.
    grpc_port: int = DEFAULT_GRPC_PORT
    http_port: int = DEFAULT_HTTP_PORT
    # Directories datasets must live in; relative dataset paths resolve under the first.
    dataset_roots: tuple[Path, ...] = ()
    # Seconds a running task gets to stop at a batch boundary before its worker is killed.
    cancel_grace_s: float = 10.0
    # Workers started per device at start-up, so the first task does not pay for
    # importing torch.
    prewarm_workers: int = 1
    # Seconds between arbiter re-evaluations (priority aging).
    aging_interval_s: float = 60.0
    max_waiting: int = 10_000
    # Preemption: a waiting task preempts running training less urgent than it by at
    # least `preempt_margin` priority steps, never one that started less than
    # `preempt_min_runtime_s` ago; a victim that has not yielded after
    # `preempt_grace_s` is stopped and resumes from the newest state it saved.
    preempt_margin: int = 2
    preempt_min_runtime_s: float = 60.0
    preempt_grace_s: float = 60.0
    # GPU memory kept free beyond every admitted task's estimate.
    gpu_headroom_bytes: int = 512 * 1024**2
    # Directories model files given by path (Infer, Predict) must live in; the data
    # dir is always one of them, since training writes its models there.
    model_roots: tuple[Path, ...] = ()
    # Online Predict: a served model batches at most this many requests per forward
    # pass, waiting at most predict_max_wait_s for a batch to fill. Requests that
    # arrive while a batch runs form the next one, so batching happens under load
    # even with no wait; the default wait of 0 favours latency.
    predict_max_batch: int = 32
    predict_max_wait_s: float = 0.0
    # A served model runs up to this many batches at once (never more than its threads),
    # each forward pass on a thread of its own with a part of the model's threads:
    # small batches scale better across passes than across intra-op threads
    # (bench/README.md, "Replicas or threads").
    predict_max_streams: int = 4
    # OMP_WAIT_POLICY for worker processes ("passive", "active"; "" leaves OpenMP's
    # default): whether idle OpenMP threads spin, taking cores from the jobs beside them
    # (bench/README.md, "OpenMP's spin-waiting").
    omp_wait_policy: str = ""
    # A served model idle this long gives its inference slot back.
    serve_idle_s: float = 60.0
    # Models held loaded at once (least recently used is unloaded first).
    max_served_models: int = 4
    # Bearer token every gRPC call (and REST request) must carry; None: no auth.
    auth_token: str | None = None
    # Allow binding a non-loopback address without a token (only on trusted networks).
    insecure: bool = False
    # PEM certificate chain and private key: with both, gRPC and REST speak TLS only.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    log_format: str = "text"
    # What runs admitted tasks: "local" (worker processes on this machine) or "ray"
    # (actors on the Ray cluster at `ray_address`: "auto", "HOST:PORT" or "local").
    executor: str = "local"
    ray_address: str = "auto"
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def db_path(self) -> Path:
        return self.data_dir / "tandem.db"

    @property
    def tasks_dir(self) -> Path:
        return self.data_dir / "tasks"

    def task_dir(self, task_id: str) -> Path:
        return self.tasks_dir / task_id


# What `load` falls back to, and what `tandem serve --help` shows.
DEFAULTS = ServerConfig(data_dir=Path(DEFAULT_DATA_DIR))


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def load(
    *,
    host: str | None = None,
    grpc_port: int | None = None,
    http_port: int | None = None,
    data_dir: str | None = None,
    dataset_roots: tuple[str, ...] = (),
    prewarm_workers: int | None = None,
    log_format: str | None = None,
    aging_interval_s: float | None = None,
    gpu_headroom_gb: float | None = None,
    max_waiting: int | None = None,
    preempt_margin: int | None = None,
    preempt_min_runtime_s: float | None = None,
    preempt_grace_s: float | None = None,
    auth_token: str | None = None,
    insecure: bool = False,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    executor: str | None = None,
    ray_address: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ServerConfig:
    """Builds the config: explicit arguments (flags) win over `TANDEM_*` variables."""
    env = os.environ if env is None else env
    data = Path(data_dir or env.get("TANDEM_DATA_DIR") or DEFAULT_DATA_DIR).expanduser().resolve()
    roots = dataset_roots or tuple(
        r for r in env.get("TANDEM_DATASET_ROOTS", "").split(os.pathsep) if r
    )
    resolved_roots = tuple(Path(r).expanduser().resolve() for r in roots) or (data / "datasets",)
    model_roots = (
        data,
        *(
            Path(r).expanduser().resolve()
            for r in env.get("TANDEM_MODEL_ROOTS", "").split(os.pathsep)
            if r
        ),
    )
    cert, key = _tls_pair(
        tls_cert or env.get("TANDEM_TLS_CERT") or None,
        tls_key or env.get("TANDEM_TLS_KEY") or None,
    )
    return ServerConfig(
        auth_token=auth_token or env.get("TANDEM_AUTH_TOKEN") or None,
        insecure=insecure,
        tls_cert=cert,
        tls_key=key,
        data_dir=data,
        model_roots=model_roots,
        predict_max_batch=int(
            _positive(
                "predict max batch",
                _env_int(env, "TANDEM_PREDICT_MAX_BATCH", DEFAULTS.predict_max_batch),
            )
        ),
        predict_max_wait_s=_env_float(
            env, "TANDEM_PREDICT_MAX_WAIT_MS", DEFAULTS.predict_max_wait_s * 1000
        )
        / 1000,
        predict_max_streams=_streams(
            _env_int(env, "TANDEM_PREDICT_MAX_STREAMS", DEFAULTS.predict_max_streams)
        ),
        omp_wait_policy=_omp_wait_policy(
            env.get("TANDEM_OMP_WAIT_POLICY", DEFAULTS.omp_wait_policy)
        ),
        serve_idle_s=_positive(
            "serve idle", _env_float(env, "TANDEM_SERVE_IDLE_S", DEFAULTS.serve_idle_s)
        ),
        max_served_models=int(
            _positive(
                "max served models",
                _env_int(env, "TANDEM_MAX_SERVED_MODELS", DEFAULTS.max_served_models),
            )
        ),
        host=host or env.get("TANDEM_HOST") or DEFAULT_HOST,
        grpc_port=grpc_port
        if grpc_port is not None
        else _env_int(env, "TANDEM_GRPC_PORT", DEFAULT_GRPC_PORT),
        http_port=http_port
        if http_port is not None
        else _env_int(env, "TANDEM_HTTP_PORT", DEFAULT_HTTP_PORT),
        dataset_roots=resolved_roots,
        prewarm_workers=prewarm_workers
        if prewarm_workers is not None
        else _env_int(env, "TANDEM_PREWARM_WORKERS", DEFAULTS.prewarm_workers),
        log_format=log_format or env.get("TANDEM_LOG_FORMAT") or DEFAULTS.log_format,
        executor=_executor(executor or env.get("TANDEM_EXECUTOR") or DEFAULTS.executor),
        ray_address=ray_address or env.get("TANDEM_RAY_ADDRESS") or DEFAULTS.ray_address,
        aging_interval_s=_positive(
            "aging interval",
            aging_interval_s
            if aging_interval_s is not None
            else _env_float(env, "TANDEM_AGING_INTERVAL_S", DEFAULTS.aging_interval_s),
        ),
        gpu_headroom_bytes=int(
            (
                gpu_headroom_gb
                if gpu_headroom_gb is not None
                else _env_float(env, "TANDEM_GPU_HEADROOM_GB", DEFAULTS.gpu_headroom_bytes / GIB)
            )
            * GIB
        ),
        max_waiting=int(
            _positive(
                "max waiting",
                max_waiting
                if max_waiting is not None
                else _env_int(env, "TANDEM_MAX_WAITING", DEFAULTS.max_waiting),
            )
        ),
        preempt_margin=_preempt_margin(
            preempt_margin
            if preempt_margin is not None
            else _env_int(env, "TANDEM_PREEMPT_MARGIN", DEFAULTS.preempt_margin)
        ),
        preempt_min_runtime_s=_not_negative(
            "preempt min runtime",
            preempt_min_runtime_s
            if preempt_min_runtime_s is not None
            else _env_float(env, "TANDEM_PREEMPT_MIN_RUNTIME_S", DEFAULTS.preempt_min_runtime_s),
        ),
        preempt_grace_s=_positive(
            "preempt grace",
            preempt_grace_s
            if preempt_grace_s is not None
            else _env_float(env, "TANDEM_PREEMPT_GRACE_S", DEFAULTS.preempt_grace_s),
        ),
    )


def _preempt_margin(value: int) -> int:
    # 1..10: a margin of 0 would let equals preempt each other; past 10 nothing could.
    if not 1 <= value <= 10:
        raise ValueError(f"the preempt margin must be 1 to 10 priority steps, got {value}")
    return value


def _not_negative(name: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be 0 or more seconds, got {value}")
    return value


def _tls_pair(cert: str | None, key: str | None) -> tuple[Path | None, Path | None]:
    if (cert is None) != (key is None):
        missing = "--tls-key (TANDEM_TLS_KEY)" if key is None else "--tls-cert (TANDEM_TLS_CERT)"
        raise ValueError(f"TLS needs both a certificate and a key; {missing} is missing")
    if cert is None or key is None:
        return None, None
    return Path(cert).expanduser().resolve(), Path(key).expanduser().resolve()


EXECUTORS = ("local", "ray")


OMP_WAIT_POLICIES = ("", "passive", "active")


def _streams(value: int) -> int:
    if not 1 <= value <= MAX_FORWARD_PASSES:
        raise ValueError(
            f"TANDEM_PREDICT_MAX_STREAMS must be 1 to {MAX_FORWARD_PASSES}, got {value}"
        )
    return value


def _executor(name: str) -> str:
    if name.strip().lower() not in EXECUTORS:
        raise ValueError(f"the executor must be local or ray, got {name!r}")
    return name.strip().lower()


def _omp_wait_policy(value: str) -> str:
    policy = value.strip().lower()
    if policy not in OMP_WAIT_POLICIES:
        raise ValueError(f"TANDEM_OMP_WAIT_POLICY must be passive, active or empty, got {value!r}")
    return policy


def _positive(what: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{what} must be greater than 0, got {value}")
    return value


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(config: ServerConfig) -> None:
    """Refuses to serve an open API beyond this machine (see Ray's CVE-2023-48022)."""
    if not is_loopback(config.host) and not config.auth_token and not config.insecure:
        raise ValueError(
            f"refusing to listen on {config.host} without a token: anyone who can reach it "
            "could run code on this machine's GPUs. Set --auth-token (TANDEM_AUTH_TOKEN), "
            "or pass --insecure on a trusted network"
        )
