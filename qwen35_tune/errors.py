"""Error types that carry user-facing messages; the CLI turns them into exit code 2 with no traceback."""

from __future__ import annotations

from dataclasses import dataclass


class UserError(Exception):
    """A problem the user can fix (bad recipe, bad data, missing file); printed without a traceback."""


@dataclass(frozen=True)
class Problem:
    """One problem in a YAML file: where it is, which key, and what is wrong."""

    file: str | None
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.file and self.line else (self.file or "<overrides>")
        return f"{where} {self.key}: {self.message}" if self.key else f"{where} {self.message}"


class RecipeError(UserError):
    """All problems found in a recipe (and the data cards it names), reported together."""

    def __init__(self, problems: list[Problem], what: str = "recipe"):
        self.problems = list(problems)
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in the {what}:"
        super().__init__("\n".join([head, *(f"  {p}" for p in self.problems)]))
