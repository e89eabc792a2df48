"""The `tandem` command line: submit and follow tasks, see resources; `tandem serve` too
where the server is installed (it adds the command through the `tandem.commands` entry
point group, so this client never imports the server).

Every command that talks to a server takes `--address` (env `TANDEM_ADDRESS`, default
127.0.0.1:50051) and `--token` (env `TANDEM_AUTH_TOKEN`), and prints JSON with `--json`.
Errors print one line to stderr and exit 1; a followed task that does not succeed
exits 1 too.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from tandem import contract
from tandem.client import DEFAULT_ADDRESS, TERMINAL_STATES, Client
from tandem.contract import (
    AUGMENTS,
    DEFAULT_AUGMENT,
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEVICE,
    DEFAULT_EPOCHS,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_INFER_BATCH_SIZE,
    DEFAULT_LABEL_SMOOTHING,
    DEFAULT_LEARNING_RATE,
    DEFAULT_LR_SCHEDULE,
    DEFAULT_OPTIMIZER,
    DEFAULT_PRECISION,
    DEFAULT_PRIORITY,
    DEFAULT_SEED,
    DEFAULT_TOP_K,
    DEFAULT_VAL_SPLIT,
    LR_SCHEDULES,
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_IMAGE_SIZE,
    MAX_LEARNING_RATE,
    MAX_LIMIT,
    MAX_PRIORITY,
    MAX_REQUEST_ID,
    MAX_TOP_K,
    MAX_VAL_SPLIT,
    MIN_IMAGE_SIZE,
    MIN_PRIORITY,
    MIN_VAL_SPLIT,
    OPTIMIZERS,
    PRECISIONS,
)
from tandem.errors import TandemError
from tandem.v1 import model_pb2, resource_service_pb2, task_pb2

STATE_NAMES = [n.removeprefix("TASK_STATE_") for n in task_pb2.TaskState.keys()[1:]]
STATE_VALUES = {_n: task_pb2.TaskState.Value(f"TASK_STATE_{_n}") for _n in STATE_NAMES}
KIND_NAMES = {"training": task_pb2.TASK_KIND_TRAINING, "inference": task_pb2.TASK_KIND_INFERENCE}
# Commands other installed packages add to `tandem` (the server adds `serve`).
COMMANDS_GROUP = "tandem.commands"
PRIORITY_HELP = f"{MIN_PRIORITY} (most urgent) .. {MAX_PRIORITY}; default {DEFAULT_PRIORITY}."
DEVICE_HELP = f"cpu, cuda, cuda:N or auto; default {DEFAULT_DEVICE}."
REFERENCE_HELP = "A model in the registry: NAME (its latest version), NAME/VERSION or NAME@ALIAS."
REQUEST_ID_HELP = (
    f"Idempotency key (at most {MAX_REQUEST_ID} characters): a retry returns the first task."
)


def _dict(message: Message) -> dict[str, Any]:
    # Zeros and empty strings printed too: a script reads `allocated_gb` on an idle GPU
    # or `training` on an idle device without guarding against a missing key.
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _state(value: int) -> str:
    return task_pb2.TaskState.Name(value).removeprefix("TASK_STATE_")


def _kind(value: int) -> str:
    return task_pb2.TaskKind.Name(value).removeprefix("TASK_KIND_").lower()


class Context:
    def __init__(
        self, address: str, token: str | None, as_json: bool, tls: bool, ca_cert: str | None
    ) -> None:
        self.address = address
        self.token = token
        self.as_json = as_json
        self.tls = tls
        self.ca_cert = ca_cert

    def client(self) -> Client:
        return Client(self.address, self.token, tls=self.tls, ca_cert=self.ca_cert)

    def emit(self, data: Any, text: str) -> None:
        click.echo(json.dumps(data, indent=2) if self.as_json else text)


pass_context = click.make_pass_decorator(Context)


def _installed_commands() -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group=COMMANDS_GROUP)}


class TandemGroup(click.Group):
    """Turns client errors into one line and exit status 1, never a traceback; adds the
    commands of the `tandem.commands` entry points, loaded only when listed or run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_installed_commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in (installed := _installed_commands()):
            loaded = installed[cmd_name].load()
            if not isinstance(loaded, click.Command):
                raise TypeError(f"entry point {cmd_name!r} of {COMMANDS_GROUP} is not a command")
            command = loaded
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TandemError as exc:
            code = exc.code.name if exc.code is not None else "ERROR"
            click.echo(f"error: {exc.message} ({code})", err=True)
            sys.exit(1)


@click.group(cls=TandemGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--address",
    envvar="TANDEM_ADDRESS",
    default=DEFAULT_ADDRESS,
    show_default=True,
    help="gRPC address of the server (env TANDEM_ADDRESS).",
)
@click.option("--token", envvar="TANDEM_AUTH_TOKEN", help="Bearer token (env TANDEM_AUTH_TOKEN).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--tls", is_flag=True, envvar="TANDEM_TLS", help="Use TLS with the system's CAs.")
@click.option(
    "--ca-cert",
    envvar="TANDEM_CA_CERT",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM file of the CA (or self-signed certificate) to trust; implies --tls "
    "(env TANDEM_CA_CERT).",
)
@click.pass_context
def main(
    ctx: click.Context,
    address: str,
    token: str | None,
    as_json: bool,
    tls: bool,
    ca_cert: str | None,
) -> None:
    """Tandem: train and serve PyTorch image classifiers on shared devices."""
    ctx.obj = Context(address, token, as_json, tls, ca_cert)


# -- submit ---------------------------------------------------------------------------


def _options(**values: Any) -> dict[str, Any]:
    """Only the options the user gave: the server fills in the rest."""
    return {k: v for k, v in values.items() if v is not None}


@main.command()
@click.argument("model")
@click.argument("dataset")
@click.option("--epochs", type=int, help=f"1..{MAX_EPOCHS}; default {DEFAULT_EPOCHS}.")
@click.option("--batch-size", type=int, help=f"1..{MAX_BATCH_SIZE}; default {DEFAULT_BATCH_SIZE}.")
@click.option(
    "--learning-rate",
    type=float,
    help=f"Above 0, at most {MAX_LEARNING_RATE:g}; default {DEFAULT_LEARNING_RATE:g}.",
)
@click.option(
    "--optimizer",
    type=click.Choice(OPTIMIZERS, case_sensitive=False),
    help=f"Default {DEFAULT_OPTIMIZER}.",
)
@click.option(
    "--image-size",
    type=int,
    help=f"Side in pixels, {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}; default {DEFAULT_IMAGE_SIZE}.",
)
@click.option("--device", help=DEVICE_HELP)
@click.option("--priority", type=click.IntRange(MIN_PRIORITY, MAX_PRIORITY), help=PRIORITY_HELP)
@click.option("--seed", type=int, help=f"Default {DEFAULT_SEED}.")
@click.option(
    "--val-split",
    type=float,
    help=f"Fraction held out, {MIN_VAL_SPLIT:g}..{MAX_VAL_SPLIT:g}; default {DEFAULT_VAL_SPLIT:g}.",
)
@click.option("--request-id", help=REQUEST_ID_HELP)
@click.option(
    "--preemptible/--not-preemptible",
    default=None,
    help="Whether a more urgent task may preempt it (it then resumes where it stopped); "
    "default preemptible.",
)
@click.option(
    "--init-from",
    help="Start from an earlier model: a registry reference (NAME, NAME/VERSION, "
    "NAME@ALIAS), a SUCCEEDED training task's id or a model file (the head is replaced "
    "when the classes differ).",
)
@click.option(
    "--pretrained",
    help="torchvision weights by name (DEFAULT, IMAGENET1K_V1, ...) from the server's "
    "local torch hub cache; never downloaded.",
)
@click.option("--weights-path", help="A plain state dict in torchvision's layout (model roots).")
@click.option("--freeze-epochs", type=int, help="Epochs that train only the head; default 0.")
@click.option(
    "--augment",
    type=click.Choice(AUGMENTS, case_sensitive=False),
    help=f"Default {DEFAULT_AUGMENT}.",
)
@click.option("--weight-decay", type=float, help="Default: the optimizer's own.")
@click.option(
    "--label-smoothing", type=float, help=f"0 up to 1; default {DEFAULT_LABEL_SMOOTHING:g}."
)
@click.option(
    "--lr-schedule",
    type=click.Choice(LR_SCHEDULES, case_sensitive=False),
    help=f"Default {DEFAULT_LR_SCHEDULE}.",
)
@click.option("--warmup-epochs", type=int, help="Epochs of linear warm-up; default 0.")
@click.option(
    "--early-stopping-patience",
    type=int,
    help="Stop after this many epochs without a better validation loss; default 0 (never).",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS, case_sensitive=False),
    help=f"Default {DEFAULT_PRECISION} (bf16 or fp16 on a GPU, fp32 on the CPU).",
)
@click.option(
    "--model-name",
    help="Publish the model, when the task succeeds, as the next version of this name "
    "in the model registry (lower-case letters, digits, - _ .).",
)
@click.option("-f", "--follow", is_flag=True, help="Show live progress until the task ends.")
@pass_context
def train(ctx: Context, /, model: str, dataset: str, follow: bool, **params: Any) -> None:
    """Submit a training task: MODEL (a torchvision name; with --init-from, '' takes that
    model's) on DATASET (a folder or synthetic)."""
    with ctx.client() as client:
        task = client.train(model, dataset, **_options(**params))
        _submitted(ctx, client, task, follow)


@main.command()
@click.argument("dataset")
@click.option("--task-id", help="A SUCCEEDED training task whose model to use.")
@click.option("--model-path", help="A model file (under the data dir or a model root).")
@click.option("--model-name", help=REFERENCE_HELP)
@click.option(
    "--batch-size", type=int, help=f"1..{MAX_BATCH_SIZE}; default {DEFAULT_INFER_BATCH_SIZE}."
)
@click.option("--top-k", type=int, help=f"1..{MAX_TOP_K}; default {DEFAULT_TOP_K}.")
@click.option("--device", help=DEVICE_HELP)
@click.option("--priority", type=click.IntRange(MIN_PRIORITY, MAX_PRIORITY), help=PRIORITY_HELP)
@click.option("--request-id", help=REQUEST_ID_HELP)
@click.option("-f", "--follow", is_flag=True, help="Show live progress until the task ends.")
@pass_context
def infer(ctx: Context, /, dataset: str, follow: bool, **params: Any) -> None:
    """Submit a batch inference over DATASET (a folder of images or synthetic)."""
    with ctx.client() as client:
        task = client.infer(dataset, **_options(**params))
        _submitted(ctx, client, task, follow)


def _submitted(ctx: Context, client: Client, task: task_pb2.Task, follow: bool) -> None:
    if not follow:
        ctx.emit(_dict(task), f"{task.task_id} {_state(task.state)}")
        return
    if not ctx.as_json:
        click.echo(f"{task.task_id} submitted ({_kind(task.kind)}, priority {task.priority})")
    final = _follow(ctx, client, task.task_id)
    if final != task_pb2.TASK_STATE_SUCCEEDED:
        sys.exit(1)


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--task-id", help="A SUCCEEDED training task whose model to use.")
@click.option("--model-path", help="A model file (under the data dir or a model root).")
@click.option("--model-name", help=REFERENCE_HELP)
@click.option("--top-k", type=int, help=f"1..{MAX_TOP_K}; default {DEFAULT_TOP_K}.")
@click.option("--device", help=DEVICE_HELP)
@click.option("--priority", type=click.IntRange(MIN_PRIORITY, MAX_PRIORITY), help=PRIORITY_HELP)
@click.option("--timeout", type=float, help="Seconds to wait for the answer.")
@pass_context
def predict(ctx: Context, /, image: str, timeout: float | None, **params: Any) -> None:
    """Classify one PNG or JPEG IMAGE with a trained model."""
    with ctx.client() as client:
        answer = client.predict(image, timeout=timeout, **_options(**params))
    lines = [f"{p.label:<24} {p.score:.4f}" for p in answer.predictions]
    if answer.model_name:
        lines.append(f"(model {answer.model_name})")
    ctx.emit(_dict(answer), "\n".join(lines))


# -- read and cancel ------------------------------------------------------------------


def _table(rows: Iterable[Iterable[str]], header: list[str]) -> str:
    body = [list(r) for r in rows]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *body, strict=False)]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
        for row in [header, *body]
    )


def _task_row(task: task_pb2.Task) -> list[str]:
    params = task.training if task.HasField("training") else task.inference
    progress = task.metrics.get("progress")
    return [
        task.task_id,
        _kind(task.kind),
        _state(task.state),
        str(task.priority),
        task.assigned_device or task.device,
        params.model,
        f"{progress:.0%}" if progress is not None else "",
        task.waiting_reason or task.error,
    ]


@main.command()
@click.option("--state", "states", multiple=True, type=click.Choice(STATE_NAMES, False))
@click.option("--kind", type=click.Choice(list(KIND_NAMES)))
@click.option("--limit", type=int, default=50, show_default=True)
@pass_context
def tasks(ctx: Context, states: tuple[str, ...], kind: str | None, limit: int) -> None:
    """List tasks, newest first."""
    with ctx.client() as client:
        found = []
        for task in client.list_tasks(
            states=[STATE_VALUES[s.upper()] for s in states],
            kind=KIND_NAMES[kind] if kind else task_pb2.TASK_KIND_UNSPECIFIED,
        ):
            found.append(task)
            if len(found) >= limit:
                break
    header = ["TASK", "KIND", "STATE", "PRI", "DEVICE", "MODEL", "PROGRESS", "NOTE"]
    ctx.emit([_dict(t) for t in found], _table((_task_row(t) for t in found), header))


@main.command()
@click.argument("task_id")
@pass_context
def task(ctx: Context, task_id: str) -> None:
    """Show one task."""
    with ctx.client() as client:
        found = client.get_task(task_id)
    # The text view lists what is set; --json has every field.
    shown = MessageToDict(found, preserving_proto_field_name=True)
    ctx.emit(_dict(found), "\n".join(f"{k}: {v}" for k, v in shown.items()))


@main.command()
@click.argument("task_id")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming until the task ends.")
@click.option("--from-seq", type=int, default=0, help="First event to show.")
@pass_context
def logs(ctx: Context, task_id: str, follow: bool, from_seq: int) -> None:
    """Print a task's log (history; live with -f)."""
    with ctx.client() as client:
        for event in client.logs(task_id, follow=follow, from_seq=from_seq):
            _print_event(ctx, event)


@main.command()
@click.argument("task_id")
@pass_context
def cancel(ctx: Context, task_id: str) -> None:
    """Cancel a task (a running one stops at its next batch)."""
    with ctx.client() as client:
        found = client.cancel(task_id)
    ctx.emit(_dict(found), f"{found.task_id} {_state(found.state)}")


# -- models ---------------------------------------------------------------------------

# A model named on the command line is a file when it has a folder or a model file's
# ending (`TrainRequest.init_from` reads it the same way); else a training task's id.
MODEL_FILE_SUFFIXES = (".pt", ".pth")


@main.command("export")
@click.argument("model", required=False)
@click.option("--model-name", help=f"{REFERENCE_HELP} Instead of MODEL.")
@click.option(
    "--format",
    "format_",
    type=click.Choice(contract.EXPORT_FORMATS, case_sensitive=False),
    default=contract.EXPORT_FORMATS[0],
    show_default=True,
    help="onnx (input `images`, output `logits`, any batch size) or torchscript.",
)
@pass_context
def export(ctx: Context, model: str | None, model_name: str | None, format_: str) -> None:
    """Export MODEL (a training task's id, or a model file path: anything with a / or
    ending in .pt or .pth), or the registry's --model-name, to ONNX or TorchScript;
    prints the checked file's path."""
    if (model is None) == (model_name is None):
        raise click.UsageError("give MODEL or --model-name, not both and not neither")
    reference = (model or "").strip()
    is_file = "/" in reference or reference.endswith(MODEL_FILE_SUFFIXES)
    with ctx.client() as client:
        answer = client.export_model(
            task_id="" if is_file else reference,
            model_path=reference if is_file else "",
            model_name=model_name or "",
            format=format_,
        )
    opset = f", opset {answer.opset}" if answer.opset else ""
    ctx.emit(
        _dict(answer),
        f"{answer.path}  ({format_.lower()}, {answer.size_bytes / 1e6:.1f} MB{opset}, "
        f"max |diff| {answer.max_abs_diff:.1e})",
    )


@main.group()
def models() -> None:
    """The model registry: names, their versions, aliases."""


def _version_row(version: model_pb2.ModelVersion) -> list[str]:
    accuracy = version.metrics.get("val_accuracy", version.metrics.get("accuracy"))
    return [
        str(version.version),
        version.task_id,
        version.architecture,
        str(version.image_size),
        str(len(version.classes)),
        f"{accuracy:.3f}" if accuracy is not None else "",
        f"{version.size_bytes / 1e6:.1f}",
        version.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
        ",".join(version.aliases),
    ]


def _aliases(model: model_pb2.Model) -> str:
    return ", ".join(f"{a}->{v}" for a, v in sorted(model.aliases.items()))


@models.command("list")
@pass_context
def models_list(ctx: Context) -> None:
    """List the names, each with its newest version."""
    with ctx.client() as client:
        found = client.list_models()
    rows = [
        [m.name, str(m.latest_version), str(m.version_count), m.latest.architecture, _aliases(m)]
        for m in found
    ]
    header = ["NAME", "LATEST", "VERSIONS", "ARCHITECTURE", "ALIASES"]
    ctx.emit([_dict(m) for m in found], _table(rows, header))


@models.command("show")
@click.argument("name")
@pass_context
def models_show(ctx: Context, name: str) -> None:
    """Show NAME with every version and its aliases."""
    with ctx.client() as client:
        found = client.get_model(name)
    header = ["VERSION", "TASK", "ARCHITECTURE", "SIZE", "CLASSES", "ACCURACY", "MB"]
    table = _table((_version_row(v) for v in found.versions), [*header, "CREATED", "ALIASES"])
    text = f"{found.name}: latest {found.latest_version}; aliases {_aliases(found) or 'none'}"
    ctx.emit(_dict(found), f"{text}\n{table}")


@models.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", type=click.IntRange(1, contract.MAX_VERSION))
@pass_context
def models_alias(ctx: Context, name: str, alias: str, version: int) -> None:
    """Point NAME@ALIAS at VERSION (creating or moving the alias)."""
    with ctx.client() as client:
        answer = client.set_model_alias(name, alias, version)
    was = f" (was {answer.previous_version})" if answer.previous_version else " (new)"
    ctx.emit(_dict(answer), f"{name}@{alias} -> {answer.version.version}{was}")


@models.command("unalias")
@click.argument("name")
@click.argument("alias")
@pass_context
def models_unalias(ctx: Context, name: str, alias: str) -> None:
    """Remove NAME@ALIAS (its version stays)."""
    with ctx.client() as client:
        version = client.delete_model_alias(name, alias)
    data = {"name": name, "alias": alias, "version": version}
    ctx.emit(data, f"removed {name}@{alias} (it pointed at {version})")


@models.command("delete")
@click.argument("name")
@click.argument("version", type=click.IntRange(1, contract.MAX_VERSION))
@pass_context
def models_delete(ctx: Context, name: str, version: int) -> None:
    """Delete VERSION of NAME from the registry (refused while aliased or served); its
    task's model file stays."""
    with ctx.client() as client:
        gone = client.delete_model_version(name, version)
    ctx.emit(_dict(gone), f"deleted {name}/{version}; the model file stays at {gone.model_path}")


# -- resources ------------------------------------------------------------------------


@main.command()
@pass_context
def resources(ctx: Context) -> None:
    """Devices: running and queued tasks, limits, GPU memory."""
    with ctx.client() as client:
        reply = client.resources()
    rows = []
    for device in sorted(reply.device_usage):
        usage = reply.device_usage[device]
        limits = reply.max_concurrent.get(device)
        rows.append(
            [
                device,
                f"{usage.training}/{limits.training if limits else '-'}",
                f"{usage.inference}/{limits.inference if limits else '-'}",
                str(usage.queued_training),
                str(usage.queued_inference),
            ]
        )
    text = _table(rows, ["DEVICE", "TRAINING", "INFERENCE", "QUEUED-T", "QUEUED-I"])
    if reply.gpu_memory_info:
        text += "\n\n" + gpu_memory_table(reply)
    ctx.emit(_dict(reply), text)


def gpu_memory_table(reply: resource_service_pb2.GetResourcesResponse) -> str:
    """A row per GPU: its memory as the driver reads it (USED, FREE) and what admission
    counts as taken on it (ADMITTED: the estimates of the tasks and served models
    admitted there, allocated yet or not)."""
    rows = [
        [
            name,
            info.device,
            f"{info.total_gb:.1f}",
            f"{info.allocated_gb:.1f}",
            f"{info.free_gb:.1f}",
            f"{info.estimated_gb:.1f}",
        ]
        for name, info in sorted(reply.gpu_memory_info.items())
    ]
    return _table(rows, ["GPU", "DEVICE", "TOTAL-GB", "USED-GB", "FREE-GB", "ADMITTED-GB"])


@main.group()
def limits() -> None:
    """Concurrency limits per device."""


@limits.command("set")
@click.argument("device")
@click.argument("kind", type=click.Choice(["training", "inference"]))
@click.argument("value", type=click.IntRange(0, MAX_LIMIT))
@pass_context
def limits_set(ctx: Context, device: str, kind: str, value: int) -> None:
    """Set DEVICE's (cpu, cuda, cuda:N) KIND limit to VALUE, at once."""
    with ctx.client() as client:
        current = client.update_limits({device: {kind: value}})
    lines = [
        f"{d}: training {v['training']}, inference {v['inference']}" for d, v in current.items()
    ]
    ctx.emit({"max_concurrent": current}, "\n".join(sorted(lines)))


# -- following ------------------------------------------------------------------------


def _print_event(ctx: Context, event: task_pb2.TaskEvent) -> None:
    if ctx.as_json:
        click.echo(json.dumps(_dict(event)))
        return
    level = task_pb2.LogLevel.Name(event.level).removeprefix("LOG_LEVEL_")
    click.echo(f"[{event.seq:>4}] {level:<7} {event.message}")


def _progress_line(metrics: dict[str, float]) -> str:
    progress = metrics.get("progress", 0.0)
    filled = int(progress * 24)
    parts = [f"[{'#' * filled}{'.' * (24 - filled)}] {progress:>4.0%}"]
    if "epoch" in metrics:
        parts.append(f"epoch {int(metrics['epoch'])}")
    if "batch" in metrics and "batches" in metrics:
        parts.append(f"batch {int(metrics['batch'])}/{int(metrics['batches'])}")
    for key in ("loss", "accuracy", "val_accuracy"):
        if key in metrics:
            parts.append(f"{key} {metrics[key]:.3f}")
    if "images_per_sec" in metrics:
        parts.append(f"{metrics['images_per_sec']:.0f} img/s")
    return "  ".join(parts)


def _follow(ctx: Context, client: Client, task_id: str) -> int:
    """Shows the task's progress until it ends; returns its terminal state."""
    interactive = sys.stdout.isatty() and not ctx.as_json
    final = task_pb2.TASK_STATE_UNSPECIFIED
    on_bar = False
    for event in client.logs(task_id, follow=True):
        if interactive and event.type == task_pb2.EVENT_TYPE_METRICS:
            click.echo("\r" + _progress_line(dict(event.metrics)), nl=False)
            on_bar = True
            continue
        if on_bar:
            click.echo()
            on_bar = False
        _print_event(ctx, event)
        if event.state in TERMINAL_STATES:
            final = event.state
    return final
