"""Config sections as pydantic models: an executor's section (and the
control plane's settings) is validated once, by a `Section` subclass, and
a mistake is reported with its key path, `hosts.0.port: Input should be
greater than 0`, so the user can find it in their file.

Strict: a YAML `"4"` is not a number and `true` is not 1, as a user who
wrote them most likely meant something else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Self

import pydantic
from pydantic import BeforeValidator, ConfigDict, Field, StringConstraints

# Finite amounts: seconds, CPUs, custom resources.
PositiveNumber = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Amount = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Resources = dict[str, Amount]
# A name a POSIX shell accepts in an assignment.
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN)]
# Environment variables a POSIX shell accepts: checked names, string values.
EnvVars = dict[EnvName, str]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]


def _device_id(value: Any) -> Any:
    # `gpu_ids: [0, 1]` in YAML means devices "0" and "1".
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


# GPU device ids, as strings or integers.
GpuIds = list[Annotated[str, BeforeValidator(_device_id)]]


class SettingsError(ValueError):
    """A config section is wrong; each line names a key path and what is
    wrong there."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = (f"{path}: {message}" if path else message for path, message in problems)
        super().__init__("; ".join(lines))

    def under(self, prefix: str) -> SettingsError:
        """The same problems, with key paths inside the section `prefix`."""
        return SettingsError([(_join(prefix, path), message) for path, message in self.problems])

    @classmethod
    def of(cls, error: pydantic.ValidationError) -> SettingsError:
        problems = []
        for line in error.errors(include_url=False):
            path = _path(line["loc"])
            raised = line.get("ctx", {}).get("error")
            if isinstance(raised, SettingsError):
                # A nested Section's own constructor already named its keys.
                problems += raised.under(path).problems
            else:
                problems.append((path, _message(line)))
        return cls(problems)


class Section(pydantic.BaseModel):
    """A frozen, strictly validated config section that refuses unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    def __init__(self, **values: Any) -> None:
        """Raises `SettingsError` (a `ValueError`) naming every key that is wrong."""
        try:
            super().__init__(**values)
        except pydantic.ValidationError as error:
            raise SettingsError.of(error) from None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """Raises `SettingsError` (a `ValueError`) naming every key that is wrong."""
        try:
            return cls.model_validate(config)
        except pydantic.ValidationError as error:
            raise SettingsError.of(error) from None


def _path(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location)


def _join(prefix: str, path: str) -> str:
    return ".".join(part for part in (prefix, path) if part)


def _message(error: Any) -> str:
    # A validator's own ValueError says what to do; pydantic's wrapper
    # ("Value error, ...") adds nothing.
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    return error["msg"]
