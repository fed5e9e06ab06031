"""Admin authentication: password login, signed session cookie, CSRF tokens, route guards."""
