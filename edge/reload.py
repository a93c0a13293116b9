"""What a SIGHUP can change in a running daemon, and what only a restart can.

A reload re-reads the config file and applies it at once: models, detection,
matching, liveness, decision rules, snapshots, privacy, storage, voice texts.
Some settings belong to things the daemon opened once at start and keeps
open — the camera, the GPIO pins, the gallery file and its key, the backup
schedule, the status file, the speech engine. Changing those under a running
door would be half-done (a new pin number in the config, the old pin still
driven), so a reload keeps their old values, says "restart needed" naming
them, and the daemon keeps running as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import Config

#: Sections and keys a reload does not apply: the daemon opened them at start.
RESTART_ONLY = frozenset({
    "camera",
    "door",
    "gallery",
    "security",
    "console",
    "backup",
    "daemon.status_file",
    "voice.enabled",
    "voice.voice",
    "voice.rate",
    "voice.volume",
})


@dataclass(frozen=True)
class ReloadPlan:
    """The config a reload puts in force, and the restart-only changes it held back."""

    config: Config
    #: ``"door.pin 17 -> 18"`` for each restart-only key that changed, in config order.
    held_back: tuple[str, ...]


def plan_reload(running: Config, new: Config) -> ReloadPlan:
    """``new`` with every restart-only key set back to its value in ``running``."""
    held: list[str] = []
    sections: dict[str, Any] = {}
    for name in Config.model_fields:
        if name == "base_dir":
            continue
        old_section, new_section = getattr(running, name), getattr(new, name)
        kept: dict[str, Any] = {}
        for key in type(old_section).model_fields:
            before, after = getattr(old_section, key), getattr(new_section, key)
            if before != after and (name in RESTART_ONLY or f"{name}.{key}" in RESTART_ONLY):
                kept[key] = before
                held.append(f"{name}.{key} {before} -> {after}")
        if kept:
            sections[name] = new_section.model_copy(update=kept)
    return ReloadPlan(new.model_copy(update=sections) if sections else new, tuple(held))


__all__ = ["RESTART_ONLY", "ReloadPlan", "plan_reload"]
