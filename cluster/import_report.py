"""What ``stanchion import-filestore`` prints: damage found, the plan of a
dry run, and the summary of an import."""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from cluster.import_progress import human_bytes, human_rate
from store.filestore_format import Report

if TYPE_CHECKING:
    from cluster.importer import ImportResult, Options, StorePlan


def format_findings(report: Report, out: TextIO, max_notes: int = 20) -> None:
    if report.problems:
        out.write(f"{len(report.problems)} problem(s) (data that cannot be imported):\n")
        for f in report.problems:
            out.write(f"  {f}\n")
    if report.notes:
        out.write(f"{len(report.notes)} note(s) (nothing lost):\n")
        for f in report.notes[:max_notes]:
            out.write(f"  {f}\n")
        if len(report.notes) > max_notes:
            out.write(f"  ... and {len(report.notes) - max_notes} more\n")


def format_plan(plan: StorePlan, out: TextIO) -> None:
    """What the store holds and what an import would do with it."""
    cid = plan.info.cluster_id if plan.info else "?"
    out.write(f"Store {plan.root} (cluster ID {cid!r}), checked in {plan.elapsed:.2f} s\n")
    out.write(f"{'channel':<24} {'msgs':>10} {'first':>10} {'last':>10} {'bytes':>12} subs\n")
    for cp in plan.channels:
        s = cp.summary
        kept = [d for d in cp.decisions if d.keep]
        out.write(
            f"{s.name:<24} {s.msgs:>10} {s.first_seq:>10} {max(s.last_seq, s.highest_seq):>10} "
            f"{s.reference_bytes:>12} {len(kept)}\n"
        )
    out.write(
        f"total: {len(plan.channels)} channel(s), {plan.total_msgs} message(s), "
        f"{len(plan.clients.live)} client(s)\n"
    )
    for cid_ in plan.clients.live:
        out.write(f"  client {cid_} (heartbeat inbox {plan.clients.live[cid_].hb_inbox})\n")
    for cp in plan.channels:
        for d in cp.decisions:
            sub = d.sub
            name = sub.durable_name or sub.qgroup or sub.inbox
            state = "left out" if not d.keep else ("offline" if d.offline else "active")
            why = f": {d.reason}" if d.reason else ""
            out.write(
                f"  subscription {cp.summary.name}/{sub.sub_id} {d.kind} {name!r} "
                f"client {sub.client_id!r}, last sent {sub.last_sent}, "
                f"{len(sub.pending)} pending, {state}{why}\n"
            )


def format_result(plan: StorePlan, result: ImportResult, opts: Options, out: TextIO) -> None:
    out.write(
        f"Imported {plan.root} into cluster {opts.cluster_id!r} at {opts.nats_url} "
        f"in {result.seconds:.2f} s\n"
    )
    out.write(
        f"{'channel':<24} {'msgs':>10} {'first':>10} {'last':>10} {'seconds':>8} "
        f"{'msg/s':>8} subs\n"
    )
    total_read = plan.total_msgs
    for cp, r in zip(plan.channels, result.channels, strict=True):
        rate = human_rate(cp.summary.msgs / r.seconds) if r.seconds > 0 else "-"
        out.write(
            f"{r.name:<24} {r.msgs:>10} {r.first_seq:>10} {r.last_seq:>10} {r.seconds:>8.2f} "
            f"{rate:>8} {r.subs_active} active, {r.subs_offline} offline\n"
        )
        if r.msgs != cp.summary.msgs:
            out.write(f"  {cp.summary.msgs} read, {r.msgs} kept by the target (its limits apply)\n")
    out.write(
        f"clients: {len(result.clients_added)} registered"
        + (f" ({', '.join(result.clients_added)})" if result.clients_added else "")
        + (f", {len(result.clients_kept)} already there" if result.clients_kept else "")
        + "\n"
    )
    for d in result.left_out:
        out.write(
            f"left out: subscription {d.channel}/{d.sub.sub_id} ({d.kind}, client "
            f"{d.sub.client_id!r}): {d.reason}\n"
        )
    for w in result.warnings:
        out.write(f"warning: {w}\n")
    if plan.report.problems:
        out.write(f"skipped (damaged): {len(plan.report.problems)} record(s), listed above\n")
    if result.seconds > 0:
        payload = plan.total_payload
        out.write(
            f"total: {total_read} message(s), {human_bytes(payload)} in {result.seconds:.2f} s "
            f"({human_rate(total_read / result.seconds)} msg/s, "
            f"{human_bytes(payload / result.seconds)}/s)\n"
        )
