"""One settings model for every command: defaults < `config.toml` < `OCSIGHT_*` variables < flags.

The file is `$XDG_CONFIG_HOME/ocsight/config.toml` (or `OCSIGHT_CONFIG`). Values are validated by
a pydantic-settings model (`_model`), imported only when a file or a variable is there to be read,
so a plain run does not pay for pydantic; the result is a typed, frozen `Settings`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocsight import paths
from ocsight.errors import EXIT_USAGE, OcsightError

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

ENV_PREFIX = "OCSIGHT_"
Budget = tuple[str, "str | None", float]  # (period, project or None for all projects, USD)


@dataclass(frozen=True)
class Settings:
    """The effective settings, and where each value came from (default, file, env var, flag)."""

    data_dirs: tuple[str, ...] = ()
    timezone: str | None = None
    cost_mode: str = "auto"
    prices: str | None = None
    cache: bool = True
    color: bool = True
    live_interval: float = 2.0
    session_limit: int = 20
    budget_daily_usd: float | None = None
    budget_monthly_usd: float | None = None
    project_budgets_monthly_usd: dict[str, float] = field(default_factory=dict)
    abandon_after_seconds: float = 600.0
    include_fork_copies: bool = False
    user_name: str | None = None
    host_name: str | None = None
    instance_id: str | None = None
    sources: dict[str, str] = field(default_factory=dict, compare=False)  # setting -> where its value came from

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in NAMES}

    def source(self, name: str) -> str:
        return self.sources.get(name, "default")

    def budgets(self) -> tuple[Budget, ...]:
        """Every configured budget as (period, project or None for all projects, USD)."""
        overall = tuple((period, None, usd) for period, usd in (("daily", self.budget_daily_usd),
                                                                ("monthly", self.budget_monthly_usd)) if usd is not None)
        return overall + tuple(("monthly", project, usd) for project, usd in self.project_budgets_monthly_usd.items())

    def with_flags(self, **flags: Any) -> Settings:
        """Flags given on the command line (not None) override everything else."""
        given: dict[str, Any] = {k: tuple(v) if k == "data_dirs" else v for k, v in flags.items()
                                 if v is not None and v != ()}
        return dataclasses.replace(self, **given, sources={**self.sources, **{k: "flag" for k in given}})


HELP = {
    "data_dirs": "OpenCode data directories (as --data-dir)",
    "timezone": "IANA time zone for day boundaries; unset: the machine's",
    "cost_mode": "auto, stored or calculate (as --cost-mode)",
    "prices": "price overrides file (as --prices)",
    "cache": "keep the index under $XDG_CACHE_HOME/ocsight (false: as --no-cache)",
    "color": "colours in terminal output (NO_COLOR or --no-color turn them off)",
    "live_interval": "seconds between refreshes of `ocsight live`",
    "session_limit": "sessions shown by `ocsight session`",
    "budget_daily_usd": "daily budget, sent by `ocsight watch` as a gauge for alerts",
    "budget_monthly_usd": "monthly budget, as above",
    "project_budgets_monthly_usd": "monthly budgets per project path",
    "abandon_after_seconds": "`ocsight watch`: an answer unchanged this long, never completed, was interrupted",
    "include_fork_copies": "count the messages a fork copied again, as OpenCode does (as --include-fork-copies)",
    "user_name": "user.name `ocsight watch` reports; unset: the OS user (OTEL_RESOURCE_ATTRIBUTES overrides)",
    "host_name": "host.name `ocsight watch` reports; unset: the machine's host name (as above)",
    "instance_id": "service.instance.id of `ocsight watch`; unset: a hash of user, host and data directories",
}
NAMES = tuple(HELP)


def env_name(name: str) -> str:
    return f"{ENV_PREFIX}{name.upper()}"


def config_file() -> Path:
    env = os.environ.get(f"{ENV_PREFIX}CONFIG")
    return Path(env).expanduser() if env else paths.config_home() / "ocsight" / "config.toml"


def load() -> Settings:
    """The settings from the file and the environment, validated; a bad value is a one-line error."""
    in_env = {n for n in NAMES if env_name(n) in os.environ}
    path = config_file()
    if not in_env and not path.is_file():
        if os.environ.get(f"{ENV_PREFIX}CONFIG"):
            raise OcsightError(f"config file not found: {path}", EXIT_USAGE)
        return Settings()
    file_values = _read_file(path) if path.is_file() else {}
    try:
        values = _model(path)().model_dump()
    except OcsightError:
        raise
    except Exception as e:  # pydantic's ValidationError, without importing it up front
        raise OcsightError(_one_line(e, path), EXIT_USAGE) from None
    sources = {n: f"env {env_name(n)}" if n in in_env else str(path) for n in NAMES
               if n in in_env or n in file_values}
    return Settings(**{**values, "data_dirs": tuple(values["data_dirs"])}, sources=sources)


def _read_file(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise OcsightError(f"cannot read config file {path}: {e}", EXIT_USAGE) from None
    except tomllib.TOMLDecodeError as e:
        raise OcsightError(f"bad config file {path}: {e}", EXIT_USAGE) from None
    unknown = sorted(set(data) - set(NAMES))
    if unknown:
        raise OcsightError(f"config file {path}: unknown setting {unknown[0]!r} (known: {', '.join(NAMES)})",
                           EXIT_USAGE)
    return data


def _model(path: Path) -> type[BaseSettings]:
    """The pydantic-settings model reading the file at `path` and the `OCSIGHT_*` variables."""
    from typing import Annotated, Literal

    from pydantic import Field
    from pydantic.fields import FieldInfo
    from pydantic_settings import (
        BaseSettings,
        EnvSettingsSource,
        PydanticBaseSettingsSource,
        SettingsConfigDict,
        TomlConfigSettingsSource,
    )

    class OcsightSettings(BaseSettings):
        model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, toml_file=path, extra="ignore")

        data_dirs: list[str] = []
        timezone: str | None = None
        cost_mode: Literal["auto", "stored", "calculate"] = "auto"
        prices: str | None = None
        cache: bool = True
        color: bool = True
        live_interval: float = Field(2.0, gt=0)
        session_limit: int = Field(20, ge=1)
        budget_daily_usd: float | None = Field(None, gt=0)  # a budget of nothing (or less) alerts at once
        budget_monthly_usd: float | None = Field(None, gt=0)
        project_budgets_monthly_usd: dict[str, Annotated[float, Field(gt=0)]] = {}
        abandon_after_seconds: float = Field(600.0, gt=0)
        include_fork_copies: bool = False
        user_name: str | None = Field(None, min_length=1)
        host_name: str | None = Field(None, min_length=1)
        instance_id: str | None = Field(None, min_length=1)

        @classmethod
        def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, _Env(settings_cls), TomlConfigSettingsSource(settings_cls))

    class _Env(EnvSettingsSource):
        """The `OCSIGHT_*` variables; OCSIGHT_DATA_DIRS also as a list like $PATH (or with commas)."""

        def prepare_field_value(self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool) -> Any:
            if field_name == "data_dirs" and isinstance(value, str):
                return split_dirs(value, env_name(field_name))
            return super().prepare_field_value(field_name, field, value, value_is_complex)

    return OcsightSettings


def split_dirs(text: str, where: str) -> list[str]:
    """Directories written as a JSON list, or separated by the OS path separator (`:`) or commas."""
    import json

    if text.lstrip().startswith("["):
        try:
            dirs = json.loads(text)
        except ValueError:
            dirs = None
        if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
            raise OcsightError(f"{where}: expected directories separated by '{os.pathsep}' or ',' "
                               f"(or a JSON list of strings), got {text!r}", EXIT_USAGE)
        return dirs
    return [d.strip() for chunk in text.split(os.pathsep) for d in chunk.split(",") if d.strip()]


def _one_line(e: Exception, path: Path) -> str:
    errors = getattr(e, "errors", None)
    if not callable(errors):
        # pydantic-settings' SettingsError: a variable holding a list or table that is not JSON
        named = re.search(r'field "(\w+)"', str(e))
        if named and env_name(named.group(1)) in os.environ:
            return f"bad setting {env_name(named.group(1))}: expected JSON ({e.__cause__ or e})"
        return f"bad settings: {e}"
    first = errors()[0]
    loc = [str(part) for part in first.get("loc") or ("?",)]
    name = loc[0]
    where = env_name(name) if env_name(name) in os.environ else f"{name} in {path}"
    key = f", entry {loc[1]!r}" if len(loc) > 1 else ""  # a table's entry: the project of a project budget
    return f"bad setting {where}{key}: {first['msg']} (got {first.get('input')!r})"
