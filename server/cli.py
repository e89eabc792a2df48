"""`tandem serve`: the server's own command, added to the `tandem` CLI through the
`tandem.commands` entry point (setup.cfg) wherever the server is installed.

Options left out fall back to `TANDEM_*` variables, then to `server.config.DEFAULTS`,
which the help texts show. Importing this module stays cheap (`tandem --help` lists the
command): the server itself is imported only when the command runs.
"""

from __future__ import annotations

import click

from server import config
from server.config import DEFAULT_DATA_DIR, DEFAULTS, EXECUTORS, GIB


@click.command()
@click.option("--host", help=f"Address to bind (default {DEFAULTS.host}; env TANDEM_HOST).")
@click.option(
    "--grpc-port", type=int, help=f"gRPC port (default {DEFAULTS.grpc_port}; env TANDEM_GRPC_PORT)."
)
@click.option(
    "--http-port",
    type=int,
    help=f"REST gateway port (default {DEFAULTS.http_port}; env TANDEM_HTTP_PORT).",
)
@click.option(
    "--data-dir",
    help=f"Where tasks, logs and models live (default {DEFAULT_DATA_DIR}; env TANDEM_DATA_DIR).",
)
@click.option(
    "--dataset-root",
    "dataset_roots",
    multiple=True,
    help="Folder datasets may be read from; repeatable (default <data-dir>/datasets; "
    "env TANDEM_DATASET_ROOTS, ':'-separated).",
)
@click.option(
    "--prewarm-workers",
    type=int,
    help=f"CPU workers started ahead of time (default {DEFAULTS.prewarm_workers}; "
    "env TANDEM_PREWARM_WORKERS).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    help=f"Server log format (default {DEFAULTS.log_format}; env TANDEM_LOG_FORMAT).",
)
@click.option(
    "--aging-interval",
    type=float,
    help="Seconds of waiting that raise a task's priority by one step "
    f"(default {DEFAULTS.aging_interval_s:g}; env TANDEM_AGING_INTERVAL_S).",
)
@click.option(
    "--gpu-headroom-gb",
    type=float,
    help="GPU memory kept free beyond admitted tasks' estimates "
    f"(default {DEFAULTS.gpu_headroom_bytes / GIB:g}; env TANDEM_GPU_HEADROOM_GB).",
)
@click.option(
    "--max-waiting",
    type=int,
    help="Queued tasks at most; beyond, submits get RESOURCE_EXHAUSTED "
    f"(default {DEFAULTS.max_waiting}; env TANDEM_MAX_WAITING).",
)
@click.option(
    "--preempt-margin",
    type=int,
    help="Priority steps by which a waiting task must be more urgent than running "
    f"training to preempt it (default {DEFAULTS.preempt_margin}; env TANDEM_PREEMPT_MARGIN).",
)
@click.option(
    "--preempt-min-runtime",
    type=float,
    help="Seconds a training runs before it may be preempted "
    f"(default {DEFAULTS.preempt_min_runtime_s:g}; env TANDEM_PREEMPT_MIN_RUNTIME_S).",
)
@click.option(
    "--preempt-grace",
    type=float,
    help="Seconds a preempted training gets to save its state and yield before it is "
    f"stopped (default {DEFAULTS.preempt_grace_s:g}; env TANDEM_PREEMPT_GRACE_S).",
)
@click.option(
    "--auth-token",
    help="Require 'authorization: Bearer <token>' on every call (env TANDEM_AUTH_TOKEN).",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Allow a non-loopback --host without a token (trusted networks only).",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False),
    help="PEM certificate chain: gRPC and REST then speak TLS only (env TANDEM_TLS_CERT).",
)
@click.option(
    "--tls-key", type=click.Path(dir_okay=False), help="PEM private key (env TANDEM_TLS_KEY)."
)
@click.option(
    "--executor",
    type=click.Choice(EXECUTORS),
    help=f"What runs tasks: local worker processes or a Ray cluster "
    f"(default {DEFAULTS.executor}; env TANDEM_EXECUTOR).",
)
@click.option(
    "--ray-address",
    help="With --executor ray: auto (the cluster 'ray start' began here), HOST:PORT, or "
    f"local (a private one-node Ray) (default {DEFAULTS.ray_address}; env TANDEM_RAY_ADDRESS).",
)
def serve(
    host: str | None,
    grpc_port: int | None,
    http_port: int | None,
    data_dir: str | None,
    dataset_roots: tuple[str, ...],
    prewarm_workers: int | None,
    log_format: str | None,
    aging_interval: float | None,
    gpu_headroom_gb: float | None,
    max_waiting: int | None,
    preempt_margin: int | None,
    preempt_min_runtime: float | None,
    preempt_grace: float | None,
    auth_token: str | None,
    insecure: bool,
    tls_cert: str | None,
    tls_key: str | None,
    executor: str | None,
    ray_address: str | None,
) -> None:
    """Run the Tandem service (gRPC with health and reflection, REST, /metrics)."""
    try:
        cfg = config.load(
            host=host,
            grpc_port=grpc_port,
            http_port=http_port,
            data_dir=data_dir,
            dataset_roots=dataset_roots,
            prewarm_workers=prewarm_workers,
            log_format=log_format,
            aging_interval_s=aging_interval,
            gpu_headroom_gb=gpu_headroom_gb,
            max_waiting=max_waiting,
            preempt_margin=preempt_margin,
            preempt_min_runtime_s=preempt_min_runtime,
            preempt_grace_s=preempt_grace,
            auth_token=auth_token,
            insecure=insecure,
            tls_cert=tls_cert,
            tls_key=tls_key,
            executor=executor,
            ray_address=ray_address,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    # Imported here: it brings in grpc, the gateway and the executors.
    from server import main

    main.run(cfg)
