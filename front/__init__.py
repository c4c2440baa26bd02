"""Front room: the GPU Configuration page (server-rendered, HTMX). Views by panel (``views``,
``rules_views``, ``compose_views``; routes in ``page_urls``), its forms, its view models by
panel (``panels/``), its template tags and templates (``templates/settings/``).
"""
