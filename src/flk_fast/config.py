"""One configuration system for the long-running commands (``flk serve``,
``flk agent``).

Precedence: command-line flags > environment (``<PREFIX><NAME>``) > a TOML file
(``--config``; the command's ``[section]`` table, or the top level) > defaults. This
module owns the :class:`Option` record, that precedence, the one boolean parser, the
"did you mean" check of misspelt environment variables and TOML keys, secret handling
(a secret is never a flag; :func:`public` masks it, URL passwords go through
:func:`flk_fast.storage.redact`) and the options table of the docs.

A command declares its options either as a table of :class:`Option` (the server,
``server/config.py``) or as argparse actions (the agent, :func:`options_of_parser`);
both resolve through :class:`Schema`.
"""

from __future__ import annotations

import argparse
import difflib
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flk_fast.errors import ConfigError
from flk_fast.storage import redact

__all__ = [
    "Option",
    "Schema",
    "UNSET",
    "apply_to_namespace",
    "closest",
    "options_of_parser",
    "parse_bool",
]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class _Unset:
    """The default of a flag that defers to the environment, TOML and the real
    default."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def parse_bool(value: object) -> bool:
    """The one boolean parser: true/false, yes/no, on/off, 1/0 (any case); an empty
    string is false. Raises ValueError for anything else.

    Examples
    --------
    >>> parse_bool("Yes"), parse_bool("0"), parse_bool(True)
    (True, False, True)
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{value!r} is not a boolean (true/false, yes/no, on/off, 1/0)")


def closest(name: str, names: Iterable[str]) -> str:
    """``"; did you mean X?"`` for the closest of ``names``, or ``""``."""
    match = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return f"; did you mean {match[0]}?" if match else ""


@dataclass(frozen=True)
class Option:
    """One option. ``type`` is ``bool``, ``int``, ``float``, ``str`` or any callable
    that turns a string into the value (an argparse ``type``). ``cli=False`` keeps a
    secret off the command line (flags are visible to every user through ``ps``)."""

    name: str
    type: Callable[[Any], Any]
    default: Any
    help: str
    choices: tuple[Any, ...] = ()
    cli: bool = True
    secret: bool = False
    #: The flag when it is not ``--<name>`` (the agent's ``--in`` sets ``input``).
    flag_text: str = ""

    @property
    def flag(self) -> str:
        return self.flag_text or "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Schema:
    """The options of one command and where else they may come from."""

    options: tuple[Option, ...]
    env_prefix: str  # "FLK_" (serve), "FLK_AGENT_" (agent)
    section: str  # the TOML table, e.g. "serve"
    #: Whether an unknown ``<PREFIX>*`` variable is an error. Not for the server: other
    #: FLK_* names (FLK_HMAC_KEY, the test switches) share its prefix.
    strict_env: bool = False

    @property
    def by_name(self) -> dict[str, Option]:
        return {o.name: o for o in self.options}

    def env_name(self, opt: Option) -> str:
        return self.env_prefix + opt.name.upper()

    def coerce(self, opt: Option, value: Any, source: str) -> Any:
        """``value`` (a string from the environment, or a TOML value) as
        ``opt.type``."""
        out: Any
        try:
            if opt.type is bool:
                out = parse_bool(value)
            elif opt.type in (int, float) and isinstance(value, bool):
                raise ValueError(value)
            elif opt.type is int and isinstance(value, float):
                raise ValueError(value)
            elif opt.type is str:
                out = str(value)
            else:
                out = opt.type(value if opt.type in (int, float) else str(value))
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            kind = getattr(opt.type, "__name__", "value")
            raise ConfigError(
                f"{opt.name} (from {source}): {value!r} is not a valid {kind}"
                + (f" ({exc})" if isinstance(exc, argparse.ArgumentTypeError) else "")
            ) from None
        if opt.choices and out not in opt.choices:
            raise ConfigError(
                f"{opt.flag} (from {source}): {out!r} is not one of "
                + ", ".join(map(str, opt.choices))
            )
        return out

    def check_env(self, env: Mapping[str, str]) -> None:
        """A ``<PREFIX>*`` variable that names no option is an error naming it and the
        closest valid name (a typo would otherwise be ignored without a word)."""
        if not self.strict_env:
            return
        known = {self.env_name(o) for o in self.options} | {self.env_prefix + "CONFIG"}
        for key in sorted(env):
            if key.startswith(self.env_prefix) and key not in known:
                raise ConfigError(
                    f"unknown environment variable {key}{closest(key, known)}"
                )

    def read_toml(self, path: str) -> dict[str, Any]:
        """The options of ``[section]`` (or the top level) of TOML file ``path``."""
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"--config: cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--config: {path} is not valid TOML: {exc}") from None
        table = data.get(self.section, data)
        if not isinstance(table, dict):
            raise ConfigError(f"--config: [{self.section}] in {path} is not a table")
        names = [n for n in self.by_name if n != "config"]
        out = {}
        for key, value in table.items():
            name = key.replace("-", "_")
            if name not in names:
                raise ConfigError(
                    f"--config: unknown option {key!r} in {path}{closest(name, names)}"
                )
            out[name] = value
        return out

    def resolve(self, cli: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
        """Values from flags (``cli``: name -> value, None or UNSET = not given), the
        environment and the TOML file; options given nowhere are left out."""
        by_name = self.by_name
        given = {
            k: v for k, v in cli.items() if v is not None and v is not UNSET
            and k in by_name
        }  # fmt: skip
        self.check_env(env)
        values: dict[str, Any] = {}
        path_flag = cli.get("config")
        config_path = (
            path_flag if path_flag not in (None, UNSET, "") else None
        ) or env.get(self.env_prefix + "CONFIG", "")
        if config_path:
            for name, value in self.read_toml(config_path).items():
                values[name] = self.coerce(by_name[name], value, config_path)
            values["config"] = config_path
        for opt in self.options:
            key = self.env_name(opt)
            if key in env and opt.name != "config":
                values[opt.name] = self.coerce(opt, env[key], key)
        for name, value in given.items():
            opt = by_name[name]
            if not opt.cli:
                raise ConfigError(
                    f"{name} is not accepted on the command line; use "
                    f"{self.env_name(opt)}"
                )
            values[name] = value if opt.type is not str else str(value)
        return values

    def public(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` safe to log: secrets as ``<set>``/``""``, URL passwords masked."""
        out: dict[str, Any] = {}
        for opt in self.options:
            value = values.get(opt.name, opt.default)
            if opt.secret:
                out[opt.name] = "<set>" if value else ""
            else:
                out[opt.name] = redact(value) if isinstance(value, str) else value
        return out

    def docs_table(self) -> str:
        """The markdown table of the docs: flag, environment variable, default, help."""
        rows = ["| flag | environment | default | what |", "|---|---|---|---|"]
        for o in self.options:
            flag = f"`{o.flag}`" if o.cli else "(no flag: a secret)"
            default = "" if o.default in (None, "", UNSET) else f"`{o.default!r}`"
            rows.append(f"| {flag} | `{self.env_name(o)}` | {default} | {o.help} |")
        return "\n".join(rows) + "\n"


# ------------------------------------------------------------------ argparse commands
def options_of_parser(
    parser: argparse.ArgumentParser, *, skip: Iterable[str] = ("help", "config")
) -> tuple[Option, ...]:
    """The options of an argparse parser, one per action, and every action's default
    replaced by :data:`UNSET` so that :func:`apply_to_namespace` can tell a flag that
    was given from one that was not. Required actions become optional here (the value
    may come from the environment or the file); ``apply_to_namespace`` checks them."""
    out = []
    skipped = set(skip)
    for group in parser._mutually_exclusive_groups:  # noqa: SLF001
        group.required = False  # the caller checks the group after resolving
    for a in parser._actions:  # noqa: SLF001 - argparse has no public list
        if a.dest in skipped or not a.option_strings:
            continue
        if isinstance(a, argparse._StoreTrueAction | argparse._StoreFalseAction):  # noqa: SLF001
            kind: Callable[[Any], Any] = bool
        else:
            kind = a.type if callable(a.type) else str
        out.append(
            Option(
                a.dest,
                kind,
                a.default,
                a.help or "",
                tuple(a.choices) if a.choices else (),
                flag_text=a.option_strings[-1],
            )
        )
        a.default = UNSET
        a.required = False
    return tuple(out)


def apply_to_namespace(
    args: argparse.Namespace,
    schema: Schema,
    env: Mapping[str, str],
    *,
    required: Iterable[str] = (),
) -> argparse.Namespace:
    """Fill ``args`` (parsed with :func:`options_of_parser`'s UNSET defaults) from the
    environment, the TOML file and the defaults, in that order of precedence."""
    values = schema.resolve(vars(args), env)
    for opt in schema.options:
        if getattr(args, opt.name, UNSET) is UNSET:
            setattr(args, opt.name, values.get(opt.name, opt.default))
    for name in required:
        if getattr(args, name) in (None, ""):
            opt = schema.by_name[name]
            raise ConfigError(
                f"{opt.flag} is required (or {schema.env_name(opt)}, or {name} in "
                f"[{schema.section}] of --config)"
            )
    return args
