"""What views reach through the app: the tracker and settings of this app."""

from __future__ import annotations

from flask import current_app

from ..config import Settings
from ..tracker import UsageTracker


def tracker() -> UsageTracker:
    return current_app.extensions["carnil.tracker"]


def settings() -> Settings:
    return tracker().settings
