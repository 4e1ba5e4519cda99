"""The error of a config value or key that cannot be used, and the field with a help text every config field is:
a module of its own, so that the config classes (which use them) need not import the parser (which reads them)."""

from dataclasses import field


class ConfigError(ValueError):
    """A config value or key that cannot be used."""


def at_least(config: object, minimum: float, *names: str) -> None:
    """Refuse the first of the fields `names` of `config` whose value is below `minimum`."""
    for name in names:
        value = getattr(config, name)
        if value < minimum:
            raise ConfigError(f"{name} must be >= {minimum}, got {value}")


def _help(text: str, **kw):
    """A dataclass field with its help text (what `--help` and the saved configs show)."""
    return field(metadata={"help": text}, **kw)
