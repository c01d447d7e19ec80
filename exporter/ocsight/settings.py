"""One settings model for every command: defaults < `config.toml` < `OCSIGHT_*` variables < flags.

The file is `$XDG_CONFIG_HOME/ocsight/config.toml` (or `OCSIGHT_CONFIG`). The model is a
pydantic-settings model built from `FIELDS`; pydantic is only imported when a file or a variable
is there to be read, so a plain run starts as fast as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ocsight.errors import EXIT_USAGE, OcsightError
from ocsight import paths

ENV_PREFIX = "OCSIGHT_"


@dataclass(frozen=True)
class Field:
    name: str
    type: object
    default: object
    help: str


FIELDS = (
    Field("data_dirs", list[str], [], "OpenCode data directories (as --data-dir)"),
    Field("timezone", str | None, None, "IANA time zone for day boundaries; unset: the machine's"),
    Field("cost_mode", Literal["auto", "stored", "calculate"], "auto", "auto, stored or calculate (as --cost-mode)"),
    Field("prices", str | None, None, "price overrides file (as --prices)"),
    Field("cache", bool, True, "keep the index under $XDG_CACHE_HOME/ocsight (false: as --no-cache)"),
    Field("color", bool, True, "colours in terminal output (NO_COLOR or --no-color turn them off)"),
    Field("live_interval", float, 2.0, "seconds between refreshes of `ocsight live`"),
    Field("session_limit", int, 20, "sessions shown by `ocsight session`"),
    Field("budget_daily_usd", float | None, None, "daily budget, sent by `ocsight watch` as a gauge for alerts"),
    Field("budget_monthly_usd", float | None, None, "monthly budget, as above"),
    Field("project_budgets_monthly_usd", dict[str, float], {}, "monthly budgets per project path"),
)
NAMES = tuple(f.name for f in FIELDS)


@dataclass(frozen=True)
class Settings:
    """The effective settings, and where each value came from (default, file, env var, flag)."""

    values: dict
    sources: dict

    def __getattr__(self, name: str):
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def budgets(self) -> tuple[tuple[str, str | None, float], ...]:
        """Every configured budget as (period, project or None for all projects, USD)."""
        overall = tuple((period, None, usd) for period, usd in (("daily", self.budget_daily_usd),
                                                                ("monthly", self.budget_monthly_usd)) if usd is not None)
        return overall + tuple(("monthly", project, usd) for project, usd in self.project_budgets_monthly_usd.items())

    def with_flags(self, **flags) -> Settings:
        """Flags given on the command line (not None) override everything else."""
        given = {k: v for k, v in flags.items() if v is not None and v != ()}
        return Settings({**self.values, **given}, {**self.sources, **{k: "flag" for k in given}})


def config_file() -> Path:
    env = os.environ.get(f"{ENV_PREFIX}CONFIG")
    return Path(env).expanduser() if env else paths.config_home() / "ocsight" / "config.toml"


def _env_names() -> dict[str, str]:
    return {f.name: f"{ENV_PREFIX}{f.name.upper()}" for f in FIELDS}


def load() -> Settings:
    """The settings from the file and the environment, validated; a bad value is a one-line error."""
    env_names = _env_names()
    in_env = {n for n, var in env_names.items() if var in os.environ}
    path = config_file()
    if not in_env and not path.is_file():
        if os.environ.get(f"{ENV_PREFIX}CONFIG"):
            raise OcsightError(f"config file not found: {path}", EXIT_USAGE)
        return Settings({f.name: f.default for f in FIELDS}, {f.name: "default" for f in FIELDS})
    file_values = _read_file(path) if path.is_file() else {}
    model = _model(path)
    try:
        values = model().model_dump()
    except Exception as e:  # pydantic's ValidationError, without importing it up front
        raise OcsightError(_one_line(e, env_names, path), EXIT_USAGE) from None
    sources = {
        n: (f"env {env_names[n]}" if n in in_env else str(path) if n in file_values else "default") for n in NAMES
    }
    return Settings(values, sources)


def _read_file(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
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


def _model(path: Path):
    from pydantic import field_validator
    from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

    class OcsightSettings(BaseSettings):
        model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, toml_file=path, extra="ignore")
        __annotations__ = {f.name: f.type for f in FIELDS}
        locals().update({f.name: f.default for f in FIELDS})

        @field_validator("live_interval")
        @classmethod
        def _positive(cls, v: float) -> float:
            if v <= 0:
                raise ValueError("must be more than 0")
            return v

        @field_validator("session_limit")
        @classmethod
        def _at_least_one(cls, v: int) -> int:
            if v < 1:
                raise ValueError("must be at least 1")
            return v

        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                       file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    return OcsightSettings


def _one_line(e: Exception, env_names: dict, path: Path) -> str:
    errors = getattr(e, "errors", None)
    if not callable(errors):
        return f"bad settings: {e}"
    first = errors()[0]
    name = str(first["loc"][0]) if first.get("loc") else "?"
    where = env_names.get(name, name) if env_names.get(name) in os.environ else f"{name} in {path}"
    return f"bad setting {where}: {first['msg']} (got {first.get('input')!r})"
