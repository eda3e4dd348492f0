"""``alma-mcp ipr ...``: the human's path to review, approve, deploy and roll back IPRs.

A person in a terminal is ``user:<login>`` (or ``--as NAME``) with ``ALMA_CLI_ROLES``; that is how
an approval comes from outside the model's session.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

from alma_mcp.ipr.deploy import DeployOutcome
from alma_mcp.ipr.principals import Principal, parse_roles
from alma_mcp.ipr.service import IPRView
from alma_mcp.services import Services, open_services
from alma_mcp.settings import Settings

EXIT_OK = 0


def person(settings: Settings, as_user: str | None) -> Principal:
    name = as_user or getpass.getuser()
    return Principal(id=f"user:{name}", roles=parse_roles(settings.cli_roles))


def run_ipr(settings: Settings, args: argparse.Namespace) -> int:
    """Run one ``ipr`` action; ``AlmaError`` propagates to the CLI, which prints it and exits 1."""
    with open_services(settings, "cli") as services:
        who = person(settings, args.as_user)
        command = args.ipr_command
        if command == "list":
            page = services.iprs.list_iprs(who, args.state, args.limit, None)
            for rec in page.iprs:
                print(f"#{rec.id:<5} {rec.state.value:18} {rec.blueprint_name:24} {rec.proposer:16} {rec.title}")
            if not page.iprs:
                print("no IPRs")
            return EXIT_OK
        if command == "show":
            print(render(services.iprs.get(who, args.ipr_id)))
            return EXIT_OK
        if command in ("approve", "request-changes", "reject"):
            view = services.iprs.review(
                who, args.ipr_id, command.replace("-", "_"), args.comment, getattr(args, "override", None)
            )
            print(
                f"IPR #{view.ipr.id} is now {view.ipr.state.value} ({len(view.approvals)}/"
                f"{view.required_approvals} approvals)"
            )
            return EXIT_OK
        if command == "close":
            view = services.iprs.close(who, args.ipr_id, args.comment)
            print(f"IPR #{view.ipr.id} is now {view.ipr.state.value}")
            return EXIT_OK
        outcome = asyncio.run(_deploy(services, who, command, args))
        print(render_outcome(outcome))
        return EXIT_OK if outcome.state in ("succeeded", "planned") else 1


async def _deploy(services: Services, who: Principal, command: str, args: argparse.Namespace) -> DeployOutcome:
    async def progress(done: int, total: int, message: str) -> None:
        print(f"  [{done}/{total}] {message}", file=sys.stderr, flush=True)

    if command == "deploy":
        return await services.orchestrator.deploy(who, args.ipr_id, dry_run=args.dry_run, progress=progress)
    return await services.orchestrator.rollback(who, args.ipr_id, progress=progress)


def render(view: IPRView) -> str:
    """An IPR for a person: what, its checks and plan, who approved, and what happened when."""
    rec, rev = view.ipr, view.revision
    lines = [
        f"IPR #{rec.id}: {rec.title}",
        f"  state:      {rec.state.value}   (allowed: {', '.join(view.allowed_actions) or 'none'})",
        f"  blueprint:  {rec.blueprint_name}, revision {rev.number} ({rev.content_hash[:19]}), "
        f"{len(rev.blueprint.get('resources', []))} resources",
        f"  proposer:   {rec.proposer}",
        f"  approvals:  {len(view.approvals)}/{view.required_approvals} {', '.join(view.approvals)}",
        f"  deployed:   {'revision ' + str(rec.deployed_revision) if rec.deployed_revision else 'no'}",
    ]
    if rec.description:
        lines += ["", "  " + rec.description.replace("\n", "\n  ")]
    lines += ["", "Checks:"]
    for check in rev.checks:
        mark = {"pass": "ok  ", "warn": "warn", "fail": "FAIL"}.get(check.status, check.status)
        lines.append(f"  [{mark}] {check.name}: {check.summary}")
        details: dict[str, Any] = check.details
        for issue in details.get("errors", [])[:10]:
            lines.append(f"         error {issue['code']} at {issue['path'] or '/'}: {issue['message']}")
        for issue in details.get("warnings", [])[:10]:
            lines.append(f"         warning {issue['code']} at {issue['path'] or '/'}: {issue['message']}")
        for change in details.get("changes", [])[:30]:
            lines.append(f"       {change}")
    if view.comments:
        lines += ["", "Comments:"]
        lines += [f"  {c.at[:19]} {c.author} ({c.verdict}): {c.body}" for c in view.comments]
    if view.deployments:
        lines += ["", "Deployments:"]
        lines += [
            f"  #{d.id} {d.kind} {d.state} by {d.actor} at {d.started_at[:19]}: {d.summary}" for d in view.deployments
        ]
    lines += ["", "History:"]
    for event in view.events:
        moved = f"{event.from_state} -> {event.to_state}" if event.from_state else f"-> {event.to_state}"
        lines.append(f"  {event.at[:19]}  {event.actor:22} {event.action:16} {moved}")
    return "\n".join(lines)


def render_outcome(outcome: DeployOutcome) -> str:
    lines = [f"IPR #{outcome.ipr_id}: {outcome.summary} (IPR is {outcome.ipr_state})"]
    symbols = {"create": "+", "update": "~", "replace": "-/+", "delete": "-", "noop": " "}
    lines.extend(
        f"  {symbols.get(c.action, '?')} {c.resource} [{c.engine}] {c.reason}"
        for c in outcome.changes
        if c.action != "noop"
    )
    lines.extend(
        f"  ! {s.resource} attempt {s.attempt}: {s.status} {s.message}"
        for s in outcome.steps
        if s.status in ("failed", "skipped")
    )
    return "\n".join(lines)
