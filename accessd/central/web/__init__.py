"""The central office in a browser: `accessd central web` (docs/central.md).

Starlette + Jinja2, server-rendered pages, two small scripts; every asset is in the package.
`app.create_app` builds the application; `core` holds what every page shares (log-in, roles,
CSRF, the store pool); one module per part of the site.
"""
