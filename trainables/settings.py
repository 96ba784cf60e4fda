"""The one strict base of every typed setting (adaptation, components, evaluation, sweep files). Torch-free.

Unknown fields are errors: a typo in a sweep file must not be silently ignored. Assignments are validated
too, so a sweep axis set after construction is checked like one given at construction.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base of every settings class: `extra="forbid"`, `validate_assignment=True`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
