"""Numeric settings inside a Nameko service: checked when its container is created, before any
extension starts (:class:`CheckedNumbers`), and a timer whose interval is one of them.

Kept apart from swms.config (the :class:`~swms.config.Numbers` themselves), which CLIs and tools
import before eventlet patches the standard library: nameko's extensions import ssl.
"""
from __future__ import annotations

import logging

from nameko.extensions import DependencyProvider
from nameko.timer import Timer

from swms.config import ConfigError, Numbers

log = logging.getLogger(__name__)


class CheckedNumbers(DependencyProvider):
    """``numbers = CheckedNumbers(NUMBERS)`` in a service class: every numeric setting is checked
    when the container is created (before any extension starts), and a bad one stops the service
    with one log line naming the variable. The dependency is the dict of checked values."""

    def __init__(self, numbers: Numbers):
        self.numbers = numbers

    def bind(self, container, attr_name):
        instance = super().bind(container, attr_name)
        try:
            instance.values = self.numbers.check(container.config)
        except ConfigError as exc:
            log.error("%s refuses to start: %s", self.numbers.service, exc)
            raise
        return instance

    def get_dependency(self, worker_ctx):
        return self.values


class ConfigTimer(Timer):
    """``@config_timer(NUMBERS, "CERT_RETRY_POLL_SECONDS")``: fires every that many seconds (nameko's
    own timer takes a constant)."""

    def __init__(self, numbers: Numbers, interval_key: str, eager: bool = False, **kwargs):
        self.numbers, self.interval_key = numbers, interval_key
        super().__init__(interval=numbers.specs[interval_key].default, eager=eager, **kwargs)

    def setup(self):
        super().setup()
        self.interval = float(self.numbers.get(self.container.config, self.interval_key))


config_timer = ConfigTimer.decorator
