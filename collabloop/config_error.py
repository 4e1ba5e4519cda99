"""The error of a config value or key that cannot be used: a module of its own, so that the config classes
(which raise it) need not import the parser (which reads them)."""


class ConfigError(ValueError):
    """A config value or key that cannot be used."""
