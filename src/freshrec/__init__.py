"""freshrec: semantic-ID generative recommendation that stays fresh as the catalog changes."""

__version__ = "0.1.0"
