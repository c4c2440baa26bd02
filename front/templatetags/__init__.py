"""Front room: the settings page's template tags."""
