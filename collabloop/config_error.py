"""The error of a config value or key that cannot be used: a module of its own, so that the config classes
(which raise it) need not import the parser (which reads them)."""


class ConfigError(ValueError):
    """A config value or key that cannot be used."""


def at_least(config: object, minimum: float, *names: str) -> None:
    """Refuse the first of the fields `names` of `config` whose value is below `minimum`."""
    for name in names:
        value = getattr(config, name)
        if value < minimum:
            raise ConfigError(f"{name} must be >= {minimum}, got {value}")
