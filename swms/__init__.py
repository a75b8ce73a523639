"""SWMS shared contracts and plumbing, imported by every service.

Kept deliberately small: contracts (pydantic models), typed errors, the resident-ID validator,
config loading, and the four pieces of plumbing every service needs (database session,
object storage, event outbox, token verification).
"""

import warnings

# eventlet 0.41 warns at import that it is in maintenance mode; nameko 2.x has no other hub.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
