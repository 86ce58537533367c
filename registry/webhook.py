"""MLflow registry webhooks: register the receiver, and guard `champion` when an alias is set.

MLflow (SQL backend store) POSTs an HMAC-signed `model_version_alias.created` event to the receiver
(`energy-loop webhook serve`) whenever an alias is set, from the UI or from any client. The receiver
calls `guard_alias`, which re-reads the registry (never trusting the payload beyond the names), decides
with `thresholds.promotion.guard_champion`, records what happened on the version and the registered
model, and, under `enforce`, moves the alias back under the registry's champion lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlflow.exceptions import MlflowException

from registry import keys
from registry.core import (
    champion_lock,
    champion_version,
    client,
    record_gated_champion,
    version_gate_problems,
)
from thresholds.promotion import CHAMPION, Guard, forced_recently, guard_champion, promotion_mode, superseded

ALIAS_EVENT = "model_version_alias.created"


@dataclass
class GuardRecord:
    """What the receiver did for one event (the Prefect event's payload)."""

    model_name: str
    version: str
    guard: Guard
    mode: str = "warn"
    problems: list[str] = field(default_factory=list)
    at: str = ""


def register_webhook(url: str, secret: str, name: str) -> tuple[str, bool]:
    """Create the alias webhook, or update the one with this name (URL, secret, events, ACTIVE). (id, created)."""
    mc = client()
    token = None
    while True:
        page = mc.list_webhooks(max_results=100, page_token=token)
        for hook in page:
            if hook.name == name:
                mc.update_webhook(hook.webhook_id, url=url, events=[ALIAS_EVENT], secret=secret, status="ACTIVE")
                return str(hook.webhook_id), False
        token = page.token
        if not token:
            break
    description = (
        "energy-loop: guards the champion alias (tags ungated promotions; moves champion back under promotion: enforce)"
    )
    hook = mc.create_webhook(name=name, url=url, events=[ALIAS_EVENT], description=description, secret=secret)
    return str(hook.webhook_id), True


def test_webhook(webhook_id: str) -> tuple[bool, str]:
    """Ask the MLflow server to send a signed example event to the receiver: (delivered, detail)."""
    result = client().test_webhook(webhook_id, ALIAS_EVENT)
    detail = result.error_message or f"HTTP {result.response_status}: {(result.response_body or '')[:200]}"
    return bool(result.success), detail


def _epoch_s(iso: str | None) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else None
    except ValueError:
        return None


def guard_alias(model_name: str, alias: str, version: str, owner: str = "webhook receiver") -> GuardRecord:
    """Judge `alias` just set on `version` of `model_name` and act on it (see the module docstring).

    Every MLflow request costs (a password check per request on a server with basic auth): read what
    the decision needs, move the alias under the champion lock, then write the record once.
    """
    if alias != CHAMPION:
        return GuardRecord(model_name, version, guard_champion(alias, version, [], "warn", None, False))
    mc = client()
    mv = mc.get_model_version(model_name, version)
    tags = dict(mv.tags)
    problems = version_gate_problems(mc, mv)
    last_gated = mc.get_registered_model(model_name).tags.get(keys.LAST_GATED_CHAMPION)
    if not problems:
        record = GuardRecord(model_name, version, guard_champion(alias, version, [], "warn", last_gated, False))
        if last_gated != version:  # set by hand (the loop and `promote` record their own); re-checked under the lock
            with champion_lock(mc, model_name, owner=owner):
                current = champion_version(mc, model_name)
                if current is not None and str(current.version) == version:
                    record_gated_champion(mc, model_name, version)
        return record
    last_tags: dict[str, str] = {}
    if last_gated and last_gated != version:
        try:
            last_tags = dict(mc.get_model_version(model_name, last_gated).tags)
        except MlflowException:  # deleted since: nothing to move back to
            last_gated = None
    mode = promotion_mode(tags, last_tags)
    forced = forced_recently(tags, time.time(), _epoch_s(tags.get(keys.PROMOTED_AT)))
    guard = guard_champion(alias, version, problems, mode, last_gated, forced)
    record = GuardRecord(model_name, version, guard, mode, problems, datetime.now(UTC).isoformat(timespec="seconds"))
    if guard.action in ("revert", "remove"):
        with champion_lock(mc, model_name, owner=owner):
            current = champion_version(mc, model_name)
            if current is None or str(current.version) != version:
                record.guard = superseded(version, problems, None if current is None else str(current.version))
            elif guard.action == "revert":
                mc.set_registered_model_alias(model_name, CHAMPION, guard.restore_version)
            else:
                mc.delete_registered_model_alias(model_name, CHAMPION)
    _record(mc, record)
    return record


def _record(mc: Any, record: GuardRecord) -> None:
    """Tags on the version and on the registered model: when, what was wrong, what the receiver did, why."""
    record_tags = {
        keys.UNGATED_CHAMPION_AT: record.at,
        keys.UNGATED_CHAMPION_ACTION: record.guard.action,
        keys.UNGATED_CHAMPION_REASON: record.guard.reason[:4000],
        keys.UNGATED_CHAMPION_PROMOTION_MODE: record.mode,
    }
    for key, value in record_tags.items():
        mc.set_model_version_tag(record.model_name, record.version, key, value)
    for key, value in {**record_tags, keys.UNGATED_CHAMPION_VERSION: record.version}.items():
        mc.set_registered_model_tag(record.model_name, key, value)
