"""The HTTP gateway: HTTPS + JSON in front of the six Nameko services (asyncio, no Nameko import)."""
