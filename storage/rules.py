"""Keyword rules: add, list, remove, and the active set the pipeline compiles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from storage.engine import session_scope
from storage.models import Rule
from tasks.errors import InvalidInput, NotFound

DIGEST_MODES = ("immediate", "hourly", "daily")


@dataclass(frozen=True, slots=True)
class ActiveRule:
    """What the matcher needs of a rule."""

    id: int
    query: str
    topics: frozenset[str]


def rule_record(rule: Rule) -> dict[str, Any]:
    """The JSON-ready view of a rule (channel URLs are shown as given)."""
    return {
        "id": rule.id,
        "name": rule.name,
        "query": rule.query,
        "topics": rule.topics,
        "channels": rule.channels,
        "digest": rule.digest,
        "active": rule.active,
        "created_at": rule.created_at,
    }


def add_rule(
    engine: Engine,
    *,
    name: str,
    query: str,
    topics: list[str],
    channels: list[str],
    digest: str = "immediate",
    secret: str | None = None,
) -> dict[str, Any]:
    """Store a rule (its query was validated by the caller). Names are unique."""
    if digest not in DIGEST_MODES:
        raise InvalidInput(f"digest must be one of {', '.join(DIGEST_MODES)}, not {digest!r}")
    try:
        with session_scope(engine) as session:
            rule = Rule(
                name=name,
                query=query,
                topics=topics,
                channels=channels,
                digest=digest,
                secret=secret,
            )
            session.add(rule)
            session.flush()
            return rule_record(rule)
    except IntegrityError as exc:
        raise InvalidInput(f"a rule named {name!r} already exists") from exc


def list_rules(engine: Engine) -> list[dict[str, Any]]:
    """All rules, oldest first."""
    with session_scope(engine) as session:
        return [rule_record(r) for r in session.scalars(select(Rule).order_by(col(Rule.id)))]


def _lookup(session: Any, name_or_id: str) -> Rule:
    rule = session.scalars(select(Rule).where(col(Rule.name) == name_or_id)).first()
    if rule is None and name_or_id.isdigit():
        rule = session.get(Rule, int(name_or_id))
    if rule is None:
        raise NotFound(f"no rule named {name_or_id!r}")
    return rule


def remove_rule(engine: Engine, name_or_id: str) -> dict[str, Any]:
    """Delete a rule and its alerts."""
    with session_scope(engine) as session:
        rule = _lookup(session, name_or_id)
        record = rule_record(rule)
        session.delete(rule)
        return record


def active_rules(engine: Engine) -> list[ActiveRule]:
    """The rules the matcher must evaluate."""
    with session_scope(engine) as session:
        rows = session.scalars(select(Rule).where(col(Rule.active)).order_by(col(Rule.id)))
        return [ActiveRule(r.id or 0, r.query, frozenset(r.topics)) for r in rows]


def rules_version(engine: Engine) -> tuple[int, int]:
    """A cheap token that changes when rules are added or removed (cache key)."""
    with session_scope(engine) as session:
        row = session.execute(select(func.count(), func.coalesce(func.max(col(Rule.id)), 0))).one()
        return int(row[0]), int(row[1] or 0)
