"""The HTTP API: one router per resource, bearer API keys, errors a user can act on."""
