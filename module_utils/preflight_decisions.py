# module_utils/preflight_decisions.py
"""What the preflight decides from its first read of a host, in plain functions with no imports: the host side
(riskmgr_preflight the module) and the controller side (the action of the same name) both judge by these."""
from __future__ import annotations


def is_pending(facts: dict) -> bool:
    """An upgrade whose database is done but which was never accepted (its watch did not pass or never ran)."""
    pending = facts.get("pending_upgrade")
    return isinstance(pending, dict) and pending.get("to_version") == facts.get("version")


def needs_change(action: str, facts: dict, to: int) -> bool:
    """Whether the host needs the change this run makes; a migrate also finishes an upgrade whose database is done
    (never accepted, or its link still on the earlier release)."""
    if action == "migrate":
        return bool(facts.get("migration_needed") or is_pending(facts)
                    or (facts.get("release") or {}).get("switch_needed"))
    return facts.get("state") != f"v{to}"


def needs_more_checks(facts: dict, change: bool) -> bool:
    """Whether the host needs more than the first read: anything but a database needing nothing, open by its
    running daemon, with no lock left behind and its link where it belongs."""
    return bool(change or not facts.get("open_by") or facts.get("lock_present")
                or (facts.get("release") or {}).get("switch_needed"))


def version_after_read(action: str, facts: dict, to: int, any_version: bool, target_given: bool) -> int:
    """The version the run takes the host to once its first read is known: migrate.yml and rollback.yml without
    -e riskmgr_target_version go to the newest version (migrate) or the one below the host's own (rollback)."""
    if any_version and isinstance(facts.get("newest_version"), int) and not target_given:
        return facts["newest_version"] if action == "migrate" else max(int(facts.get("version") or 1) - 1, 1)
    return to
