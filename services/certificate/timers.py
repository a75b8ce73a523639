"""A Nameko timer whose interval comes from the service's config (nameko's takes a constant)."""
from __future__ import annotations

from nameko.timer import Timer


class ConfigTimer(Timer):
    """``@config_timer("CERT_RETRY_POLL_SECONDS", default=10)``: fires every that many seconds."""

    def __init__(self, interval_key: str, default: float, eager: bool = False, **kwargs):
        self.interval_key = interval_key
        super().__init__(interval=default, eager=eager, **kwargs)

    def setup(self):
        super().setup()
        self.interval = float(self.container.config.get(self.interval_key) or self.interval)


config_timer = ConfigTimer.decorator
