"""Models shared by the tests."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

import rxstate


class Agent(rxstate.Model):
    __version__ = 2
    name: str
    status: Literal["idle", "busy", "failed"] = "idle"
    load: int = Field(0, ge=0, le=100)
    skills: list[str] = []
    team: str = "core"
    notes: str = ""
    api_key: rxstate.Secret[str] | None = None

    @rxstate.upcaster(1)
    def _from_v1(data: dict) -> dict:
        data["name"] = data.pop("title", "unnamed")
        return data


class Task(rxstate.Model):
    title: str
    owner: str | None = None
    done: bool = False
    priority: int = 0
