"""The `tandem` command line."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Tandem: train and serve PyTorch image classifiers on shared devices."""


@main.command()
@click.option("--host", help="Address to bind (default 127.0.0.1; env TANDEM_HOST).")
@click.option("--grpc-port", type=int, help="gRPC port (default 50051; env TANDEM_GRPC_PORT).")
@click.option(
    "--http-port", type=int, help="REST gateway port (default 8000; env TANDEM_HTTP_PORT)."
)
@click.option("--data-dir", help="Where tasks, logs and models live (default ./data).")
@click.option(
    "--dataset-root",
    "dataset_roots",
    multiple=True,
    help="Folder datasets may be read from; repeatable (default <data-dir>/datasets; "
    "env TANDEM_DATASET_ROOTS, ':'-separated).",
)
@click.option("--prewarm-workers", type=int, help="CPU workers started ahead of time (default 1).")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Server log format.")
@click.option(
    "--aging-interval",
    type=float,
    help="Seconds of waiting that raise a task's priority by one step (default 60; "
    "env TANDEM_AGING_INTERVAL_S).",
)
@click.option(
    "--gpu-headroom-gb",
    type=float,
    help="GPU memory kept free beyond admitted tasks' estimates (default 0.5; "
    "env TANDEM_GPU_HEADROOM_GB).",
)
@click.option(
    "--max-waiting",
    type=int,
    help="Queued tasks at most; beyond, submits get RESOURCE_EXHAUSTED (default 10000; "
    "env TANDEM_MAX_WAITING).",
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
) -> None:
    """Run the Tandem service (gRPC, with health and reflection)."""
    from server import config
    from server import main as server_main

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
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    server_main.run(cfg)
