"""``speculate models``: a table of the embedded models and a progress bar for pulls."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from speculate.backends import models


def list_models() -> int:
    table = Table(title=f"embedded models ({models.models_dir()})")
    for column in ("name", "state", "size", "file", "about"):
        table.add_column(column)
    for model in models.EMBEDDED.values():
        state = "ready" if models.is_present(model.name) else "not pulled"
        size = f"{model.size / 1e6:.0f} MB"
        table.add_row(model.name, state, size, model.filename, model.summary)
    Console().print(table)
    print(
        "Pull with `speculate models pull [NAME...]`; any local .gguf path works too, and "
        "hf:OWNER/REPO/FILE.gguf[@REVISION] pulls from Hugging Face (HF_ENDPOINT applies)."
    )
    return 0


def pull_models(names: list[str], *, force: bool = False) -> int:
    console = Console(stderr=True)
    for name in names or list(models.EMBEDDED):
        if models.hub_reference(name) is not None:  # huggingface_hub draws its own bar
            path = models.pull(name, force=force)
            console.print(f"[green]✓[/] {name}: {path}")
            continue
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task(
                name, total=models.EMBEDDED[name].size if name in models.EMBEDDED else None
            )

            def report(label: str, done: int, total: int, task: object = task) -> None:
                progress.update(task, description=label, completed=done, total=total)  # type: ignore[arg-type]

            path = models.pull(name, force=force, progress=report)
            progress.update(task, description=f"{name} ready", completed=path.stat().st_size)
        console.print(f"[green]✓[/] {name}: {path}")
    return 0
