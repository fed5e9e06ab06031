"""Keys derived from `VIDARENA_SECRET_KEY`, one per purpose: HMAC-SHA256 of a fixed label under
the secret. A key made for one purpose verifies nothing else, and knowing one derived key (or
every admin session cookie) tells nothing about the secret or the other keys.

Evaluator links and tokens (app/rating/tokens.py) derive their own keys from the secret the same
way, each with a salt or label of its own, as they always have: existing links keep working.
"""

from __future__ import annotations

import hashlib
import hmac

ADMIN_SESSION = "vidarena.admin-session.v1"  # signs the admin session cookie
# Fingerprints the password a session began under (a label, not a credential).
ADMIN_PASSWORD = "vidarena.admin-password.v1"  # noqa: S105


def derive(secret: str, label: str) -> str:
    return hmac.new(secret.encode(), label.encode(), hashlib.sha256).hexdigest()
