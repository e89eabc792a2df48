"""The job an engine runs for a task: its stored parameters, as the engines take them."""

from __future__ import annotations

from engines.jobs import InferenceJob, InitialWeights, TrainingJob
from server.records import TaskKind, TaskRecord


def job_for(
    task: TaskRecord, *, output_dir: str, num_threads: int, resume_from: str = ""
) -> TrainingJob | InferenceJob:
    """The job for an admitted task (its `assigned_device` set). `resume_from` is a
    training checkpoint to carry on from ("" to start afresh)."""
    p = task.params
    if task.kind is TaskKind.INFERENCE:
        return InferenceJob(
            task_id=task.task_id,
            model_path=p["model_path"],
            dataset=p["dataset"],
            batch_size=p["batch_size"],
            top_k=p["top_k"],
            device=task.assigned_device,
            output_dir=output_dir,
            num_threads=num_threads,
        )
    p = task.training_params
    weights = p.get("initial_weights")
    return TrainingJob(
        task_id=task.task_id,
        model=p["model"],
        dataset=p["dataset"],
        epochs=p["epochs"],
        batch_size=p["batch_size"],
        learning_rate=p["learning_rate"],
        optimizer=p["optimizer"],
        image_size=p["image_size"],
        seed=p["seed"],
        val_split=p["val_split"],
        device=task.assigned_device,
        output_dir=output_dir,
        num_threads=num_threads,
        resume_from=resume_from,
        initial_weights=InitialWeights(**weights) if weights else None,
        freeze_epochs=p["freeze_epochs"],
        augment=p["augment"],
        weight_decay=p["weight_decay"],
        label_smoothing=p["label_smoothing"],
        lr_schedule=p["lr_schedule"],
        warmup_epochs=p["warmup_epochs"],
        early_stopping_patience=p["early_stopping_patience"],
        precision=p["precision"],
    )
