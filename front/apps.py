"""Front room: the Django app of the settings page (views, forms, view models, templates)."""

from django.apps import AppConfig


class FrontConfig(AppConfig):
    name = "front"
    verbose_name = "GPU settings page"
