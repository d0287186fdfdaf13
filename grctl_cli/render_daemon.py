"""What the CLI prints of the daemon and of a worker: ``daemon status``, start lines, the banner.

Part of the printing layer (``render`` holds the consoles and the shared formatters).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.text import Text

from grctl_cli.render import (
    _grid,
    _table,
    console,
    err_console,
    note,
    span,
    status_text,
    when,
)

# -- daemon and worker ------------------------------------------------------------------------


def listen_text(listen: dict[str, Any] | None) -> str:
    """The TCP listener of a daemon status: ``0.0.0.0:7777 (TLS, token)``, or ``off``."""
    if not listen:
        return "off (Unix socket only)"
    return f"{listen['address']} ({'TLS' if listen.get('tls') else 'plain TCP, no TLS'}, token)"


def served_text(status: dict[str, Any]) -> str:
    """Where a started daemon answers: ``pid 17394, socket …[, listening on …]``."""
    text = f"pid {status['pid']}, socket {status['socket']}"
    if status.get("listen"):
        text += f", listening on {listen_text(status['listen'])}"
    return text


def daemon_status(data: dict[str, Any]) -> None:
    """``grctl daemon status``: socket, TCP listener, database, uptime, workers, runs by status."""
    grid = _grid()
    grid.add_row("pid", Text(str(data["pid"])))
    grid.add_row("socket", Text(data["socket"]))
    grid.add_row("listen", Text(listen_text(data.get("listen"))))
    size = data.get("database_bytes")
    sync = data.get("synchronous") or ""
    settings = ", ".join(x for x in (_size(size) if size is not None else "", sync) if x)
    if sync and not sync.startswith("synchronous"):
        settings = settings.replace(sync, f"synchronous={sync}")
    grid.add_row("database", Text(f"{data['database']} ({settings})"))
    storage = data.get("storage") or {}
    if storage and not storage.get("writable", True):
        since = datetime.fromtimestamp(storage["since_ms"] / 1000, tz=UTC)
        grid.add_row(
            "storage",
            Text.assemble(
                ("NOT WRITABLE", "bold red"),
                f" since {when(since)}: {storage['error']}; "
                f"{storage['waiting_units']} commit(s) wait, new starts and events are refused. "
                "Free space on the database's disk: the daemon resumes by itself",
            ),
        )
    grid.add_row("uptime", Text(span(data["uptime_s"])))
    retention = data.get("retention")
    if retention is not None:
        kept = retention["retention_ms"]
        text = f"ended runs deleted after {span(kept / 1000)}" if kept else "keeps every run"
        if retention.get("runs"):
            text += f" ({int(retention['runs'])} deleted since start)"
        grid.add_row("retention", Text(text))
    runs = data.get("runs") or {}
    line = Text()
    for i, (status, count) in enumerate(sorted(runs.items())):
        line.append(", " if i else "")
        line.append_text(status_text(status))
        line.append(f" {count}")
    grid.add_row("runs", line if runs else Text("none"))
    workers = data.get("workers") or []
    grid.add_row("workers", Text(str(len(workers)) if workers else "none connected"))
    for w in workers:
        grid.add_row(
            "",
            Text(
                f"{w['name']}: {', '.join(w['workflow_types']) or '-'} "
                f"({w['inflight']}/{w['concurrency']} steps in flight)"
            ),
        )
    cluster = data.get("cluster")
    if cluster:
        grid.add_row("cluster", Text(f"{len(cluster['members'])} member(s) on this database"))
    console.print(grid)
    if cluster:
        cluster_table(cluster)


def cluster_table(cluster: dict[str, Any]) -> None:
    """The members of a cluster: where each answers, its partitions, lease and workers."""
    table = _table("member", "host", "address", "partitions", "lease left", "workers")
    for m in cluster["members"]:
        left = m["lease_left_ms"]
        lease = (
            Text(f"{left / 1000:.1f}s")
            if left > 0
            else Text("expired: being taken over", style="bold red")
        )
        name = Text(m["name"], style="bold" if m["self"] else "")
        if m["self"]:
            name.append(" (this one)", style="dim")
        table.add_row(
            name,
            Text(m["host"]),
            Text(m["address"] or "socket only"),
            Text(f"{m['partitions']}/{cluster['partitions']}"),
            lease,
            Text("-" if m["workers"] is None else str(m["workers"])),
        )
    console.print(table)


def _size(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"


def worker_banner(name: str, socket: str, concurrency: int, workflows: list[Any]) -> None:
    """What a starting worker serves: each workflow type with its steps, events and queries."""
    note(f"grctl worker {name} on {socket} (at most {concurrency} steps at once) serves:")
    table = _table("workflow type", "start", "steps", "events", "queries", wrap=True)
    for wf in workflows:
        table.add_row(
            Text(wf.workflow_type, style="bold"),
            Text(wf.start_def.name if wf.start_def else "-"),
            Text(", ".join(wf.steps) or "-"),
            Text(", ".join(wf.events) or "-"),
            Text(", ".join(wf.queries) or "-"),
        )
    err_console.print(table)
