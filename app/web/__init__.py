"""The web layer shared by every router: pages (Jinja2 templates, static files), error responses
(one handler per error family, JSON or HTML by route) and request-body limits."""
